"""Everything one run is made of, built once before training: :func:`set_up` → :class:`RunSetup`.

The data and its batches, the training rule (learning rate, MBN's λ(t) and
the optimizer, :func:`train.steps.training_rule`), the model, the devices
(:mod:`train.parallel`, compiled), the checkpoint manager and the initial
state; :func:`start` places that state on the devices for a run that has
no checkpoint (from scratch, or from ``config.init_from``'s network).
Every member of :class:`RunSetup` is built, not derived: what follows from
them (steps per epoch, ``run_info``, what the norm logs) is a property.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import numpy as np

from mbn_jax import norms
from train import checkpoints as ckpt_lib
from train import checks, init_from, input_pipeline, steps
from train.epoch import Progress
from train.layout import RunLayout
from train.models import build_model
from train.parallel import Parallel, make_parallel, norm_options
from train.validation import Config, config_json
from train.writer import MetricWriter, save_json

__all__ = ["RunSetup", "set_up", "start", "stacked"]


@dataclasses.dataclass
class RunSetup:
  """One run's fixed parts (see the module docstring)."""

  config: Config
  layout: RunLayout
  workdir: str
  data: Any
  batches: input_pipeline.TrainBatches
  rule: steps.TrainingRule  # lr(t), λ(t) and the optimizer, built once
  model: Any
  initial: steps.TrainState  # on the host: the state a fresh run starts from (before init_from)
  parallel: Parallel
  manager: ckpt_lib.CheckpointManager
  t_start: float
  source: init_from.SourceRun | None = None  # config.init_from's run, for a fresh start
  writer: MetricWriter | None = None  # opened once the resume step is known

  @property
  def spe(self) -> int:
    """(Micro-)batches per epoch: what the loop iterates."""
    return self.batches.steps_per_epoch

  @property
  def opt_spe(self) -> int:
    """Optimizer steps per epoch: what λ(t) and the learning rate count."""
    return self.spe // self.k

  @property
  def k(self) -> int:
    """Micro-batches per optimizer step (gradient accumulation)."""
    return self.layout.grad_accum_steps

  @property
  def is_main(self) -> bool:
    return self.layout.is_main

  @functools.cached_property
  def _caps(self):
    return norms.capabilities_of(norms.norm_class(self.config.norm))

  @property
  def logs_lambda(self) -> bool:
    """The norm follows a momentum schedule (its class says so): λ is logged."""
    return self._caps.momentum_schedule

  @property
  def precise_stats_on(self) -> bool:
    """Precise statistics were asked for and the norm keeps statistics that can be re-estimated."""
    return bool(self.config.precise_stats_batches) and self._caps.precise_statistics

  @property
  def run_info(self) -> dict:
    """What a checkpoint must match to be resumed: devices, processes, batches, steps."""
    return run_info(self.layout, self.spe, self.opt_spe, len(self.data.train))

  def opt_step(self, step: int) -> int:
    """The optimizer step of (micro-)batch ``step``."""
    return steps.optimizer_step(step, self.k)


def set_up(config, workdir: str, layout: RunLayout) -> RunSetup:
  """Loads the data and builds the training rule, the model, its compiled steps and its state."""
  t_start = time.time()
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  m, k = layout.per_device_batch_size, layout.grad_accum_steps
  data = input_pipeline.load_dataset(config.dataset)
  batches = input_pipeline.TrainBatches(
    data,
    per_device_batch_size=m,
    local_devices=layout.local_devices,
    process_index=layout.process_index,
    process_count=layout.process_count,
    seed=config.seed,
    augment=config.dataset.augment,
    pad=config.dataset.crop_padding,
    micro_batches_per_step=k,
  )
  checks.check_precise_stats_batch(config, data, layout)  # before a first epoch is trained
  opt_spe = batches.steps_per_epoch // k
  rule = steps.training_rule(config, layout, opt_spe)
  model = build_model(
    config,
    num_classes=data.num_classes,
    steps_per_epoch=opt_spe,
    per_device_batch=m,
    momentum_schedule=rule.momentum,
    sync=norm_options(config.parallelism, layout),
  )
  manager = ckpt_lib.CheckpointManager(
    os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
  )
  source = None  # a run with checkpoints of its own resumes from them, never from the source
  if config.init_from and not manager.all_steps():
    source = init_from.check_source(config, model, data.image_shape, data.num_classes)
  probes = steps.backward_probe_shapes(model, data.image_shape)  # {} unless a norm has them
  parallel = make_parallel(
    config.parallelism, layout, model, rule.learning_rate, rule.momentum, k, probes
  )
  initial = jax.device_get(
    steps.create_train_state(
      model, rule.optimizer, data.image_shape, batch_size=m, seed=config.seed
    )
  )
  return RunSetup(
    config=config,
    layout=layout,
    workdir=workdir,
    data=data,
    batches=batches,
    rule=rule,
    model=model,
    initial=initial,
    parallel=parallel,
    manager=manager,
    source=source,
    t_start=t_start,
  )


def run_info(layout: RunLayout, spe: int, opt_spe: int, train_examples: int) -> dict:
  """What a checkpoint must match to be resumed: devices, processes, batches, steps, and the
  number of training images (an epoch's order is a permutation of it: an image removed or
  added would silently reorder the rest of the epoch)."""
  info = {
    "devices": layout.devices,
    "processes": layout.process_count,
    "steps_per_epoch": spe,
    "per_device_batch_size": layout.per_device_batch_size,
    "global_batch_size": layout.global_batch_size,
    "train_examples": train_examples,
  }
  if layout.grad_accum_steps > 1:  # only then: runs without accumulation keep their run_info
    info.update(
      grad_accum_steps=layout.grad_accum_steps,
      optimizer_steps_per_epoch=opt_spe,
      optimizer_batch_size=layout.optimizer_batch_size,
    )
  return info


def stacked(tree, n: int):
  """``n`` copies of every leaf, stacked: ``[n, ...]``."""
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)).copy(), tree)


def start(s: RunSetup) -> Progress:
  """A run without checkpoints: its initial state on the devices, and its ``config.json``.

  From scratch, or (``config.init_from``) with the source's network converted
  to this run's norm; ``config.json`` records the config, ``run_info``, the
  layout and what was carried over from the source.
  """
  config, layout, host = s.config, s.layout, s.initial
  start_record = None
  if s.source is not None:  # config.init_from: the source's network, converted to this norm
    params, stats, start_record = init_from.initial_variables(
      config, s.source, host.params, host.batch_stats, s.data.num_classes
    )
    host = host.replace(params=params, batch_stats=stats)
  if s.is_main:
    record = {"config": config_json(config), "run_info": s.run_info, "layout": layout.to_record()}
    if start_record is not None:
      record["init_from"] = start_record
      print(
        f"Starting from {start_record['workdir']} (step {start_record['step']}, "
        f"{start_record['norm']}, {start_record['statistics']} statistics): "
        f"{start_record['copied']} leaves copied, {start_record['derived']} derived"
        + (", head re-initialized" if start_record["head_reinitialized"] else ""),
        flush=True,
      )
    save_json(os.path.join(s.workdir, "config.json"), record)
  state = s.parallel.place(host, stacked(host.batch_stats, layout.local_devices))
  step = int(s.parallel.first(state.step))
  return Progress(state=state, step=step, start_step=step)
