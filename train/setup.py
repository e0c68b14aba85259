"""Everything one run is made of, built once before training: :func:`set_up` → :class:`RunSetup`.

The data and its batches, the step counts, the schedules (learning rate and
MBN's λ(t), each built once), the model, the devices (:mod:`train.parallel`,
compiled), the checkpoint manager and ``run_info`` (the layout a checkpoint
must match to be resumed).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from mbn_jax import norms
from train import checkpoints as ckpt_lib
from train import checks, init_from, input_pipeline, steps
from train.layout import RunLayout
from train.models import build_model, momentum_schedule_of
from train.parallel import Parallel, make_parallel, norm_options
from train.validation import Config
from train.writer import MetricWriter

__all__ = ["RunSetup", "set_up"]


@dataclasses.dataclass
class RunSetup:
  """One run's fixed parts (see the module docstring)."""

  config: Config
  layout: RunLayout
  workdir: str
  data: Any
  batches: input_pipeline.TrainBatches
  spe: int  # (micro-)batches per epoch: what the loop iterates
  opt_spe: int  # optimizer steps per epoch: what λ(t) and the learning rate count
  lr_fn: Callable
  lam_fn: Callable  # MBN's λ(t), the object the norms use
  model: Any
  parallel: Parallel
  manager: ckpt_lib.CheckpointManager
  run_info: dict
  logs_lambda: bool  # the norm follows a momentum schedule (its class says so)
  precise_stats_on: bool  # the norm keeps statistics that can be re-estimated
  t_start: float
  source: init_from.SourceRun | None = None  # config.init_from's run, for a fresh start
  writer: MetricWriter | None = None  # opened once the resume step is known

  @property
  def k(self) -> int:
    """Micro-batches per optimizer step (gradient accumulation)."""
    return self.layout.grad_accum_steps

  @property
  def is_main(self) -> bool:
    return self.layout.is_main

  def opt_step(self, step: int) -> int:
    """The optimizer step of (micro-)batch ``step``."""
    return steps.optimizer_step(step, self.k)


def set_up(config, workdir: str, layout: RunLayout) -> RunSetup:
  """Loads the data and builds the schedules, the model and its compiled steps."""
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
  spe = batches.steps_per_epoch
  opt_spe = spe // k
  lam_fn = momentum_schedule_of(config, layout.statistics_batch_size, opt_spe)
  model = build_model(
    config,
    num_classes=data.num_classes,
    steps_per_epoch=opt_spe,
    per_device_batch=m,
    momentum_schedule=lam_fn,
    sync=norm_options(config.parallelism, layout),
  )
  lr_fn = steps.learning_rate_fn(config, m * k, layout.global_batch_size * k, opt_spe)
  manager = ckpt_lib.CheckpointManager(
    os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
  )
  source = None  # a run with checkpoints of its own resumes from them, never from the source
  if config.init_from and not manager.all_steps():
    source = init_from.check_source(config, model, data.image_shape, data.num_classes)
  probes = steps.backward_probe_shapes(model, data.image_shape)  # {} unless a norm has them
  parallel = make_parallel(config.parallelism, layout, model, lr_fn, lam_fn, k, probes)
  caps = norms.capabilities_of(norms.norm_class(config.norm))
  return RunSetup(
    config=config,
    layout=layout,
    workdir=workdir,
    data=data,
    batches=batches,
    spe=spe,
    opt_spe=opt_spe,
    lr_fn=lr_fn,
    lam_fn=lam_fn,
    model=model,
    parallel=parallel,
    manager=manager,
    source=source,
    run_info=run_info(layout, spe, opt_spe),
    logs_lambda=caps.momentum_schedule,
    precise_stats_on=bool(config.precise_stats_batches) and caps.precise_statistics,
    t_start=t_start,
  )


def run_info(layout: RunLayout, spe: int, opt_spe: int) -> dict:
  """What a checkpoint must match to be resumed: devices, processes, batches, steps."""
  info = {
    "devices": layout.devices,
    "processes": layout.process_count,
    "steps_per_epoch": spe,
    "per_device_batch_size": layout.per_device_batch_size,
    "global_batch_size": layout.global_batch_size,
  }
  if layout.grad_accum_steps > 1:  # only then: runs without accumulation keep their run_info
    info.update(
      grad_accum_steps=layout.grad_accum_steps,
      optimizer_steps_per_epoch=opt_spe,
      optimizer_batch_size=layout.optimizer_batch_size,
    )
  return info
