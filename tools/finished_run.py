"""Load a finished ``python -m train`` run for analysis (one way, shared by every tool).

    run = load_run("workdirs/faithful/mbn-m2-s0")
    run.accuracy(run.batch_stats)                         # as trained
    run.accuracy(run.precise_stats(batch=250, num_batches=20))  # population statistics

:mod:`tools.eval_stats` and :mod:`tools.noise_probe` use it. Run tools from the
directory the training ran in (dataset paths in the saved config may be
relative).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

import mbn_jax
from mbn_jax import norms, schedules
from train import checkpoints as ckpt_lib
from train import input_pipeline
from train import train as train_lib
from train.layout import RunLayout, layout_of_record
from train.validation import Config, load_saved_config

__all__ = ["FinishedRun", "load_run"]


@dataclasses.dataclass
class FinishedRun:
  """A trained network, its config and data, on one device."""

  workdir: str
  config: Config
  data: Any
  model: Any
  params: Any
  batch_stats: Any  # device-averaged, as saved
  step: int  # optimizer steps taken (micro-batches // k under gradient accumulation)
  steps_per_epoch: int  # the run's optimizer steps per epoch (what λ(t) counts)
  layout: RunLayout
  momentum_schedule: schedules.MomentumSchedule  # the run's λ(t), Eq. 11

  @property
  def capabilities(self) -> norms.Capabilities:
    return norms.capabilities_of(norms.norm_class(self.config.norm))

  @property
  def replay_batch_size(self) -> int:
    """m·G: a one-device batch with the statistics the run's norms saw (λ and τ use it)."""
    return self.layout.statistics_batch_size

  @property
  def final_step(self) -> int:
    """The 0-based optimizer step of the run's last update."""
    return self.step - 1

  @property
  def final_lambda(self) -> float:
    """λ of the last step (Eq. 11) for a norm with a momentum schedule (MBN); else 0."""
    if not self.capabilities.momentum_schedule:
      return 0.0
    return float(self.momentum_schedule(self.final_step))

  def train_batches(self, batch_size: int, seed: int) -> input_pipeline.TrainBatches:
    """One-device training batches of ``batch_size`` with the run's augmentation."""
    return input_pipeline.TrainBatches(
      self.data,
      per_device_batch_size=batch_size,
      local_devices=1,
      process_index=0,
      process_count=1,
      seed=seed,
      augment=self.config.dataset.augment,
      pad=self.config.dataset.crop_padding,
    )

  def train_images(self, batch_size: int, seed: int, num_batches: int):
    """The images of the first ``num_batches`` batches of epoch 0 of that stream."""
    stream = self.train_batches(batch_size, seed)
    order = stream.order(0)
    for i in range(min(num_batches, stream.steps_per_epoch)):
      yield jnp.asarray(stream.batch(0, i, order)["image"][0])

  def precise_stats(self, *, batch: int, num_batches: int, seed: int | None = None):
    """Population statistics (:func:`mbn_jax.precise_batch_stats`) at the frozen weights."""
    images = self.train_images(batch, self.config.seed if seed is None else seed, num_batches)
    return mbn_jax.precise_batch_stats(
      self._estimation_fn, {"params": self.params, "batch_stats": self.batch_stats}, images
    )

  def _estimation_fn(self, variables, images):
    return self.model.apply(variables, images, train=True, step=0, mutable=["batch_stats"])

  def accuracy(self, batch_stats, batch: int = 250) -> float:
    """Validation accuracy with ``batch_stats`` as the inference statistics."""
    hits = n = 0
    for b in input_pipeline.eval_batches(
      self.data, per_device_batch_size=batch, local_devices=1, process_index=0, process_count=1
    ):
      hits += float(
        _correct(self.model, self.params, batch_stats, b["image"][0], b["label"][0], b["mask"][0])
      )
      n += int(b["mask"].sum())
    return hits / n


@jax.jit(static_argnums=0)
def _correct(model, params, batch_stats, images, labels, mask):
  logits = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
  return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)


def load_run(workdir: str) -> FinishedRun:
  """The newest checkpoint of ``workdir`` with its config, layout, data and model.

  The model is the run's network with per-device statistics (no device axis:
  one device, batches of :attr:`FinishedRun.replay_batch_size`) and the run's
  own λ(t).
  """
  saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  config = load_saved_config(saved["config"])
  layout = layout_of_record(saved)
  info = saved["run_info"]
  # λ(t) and the learning rate count optimizer steps (micro-batches // k).
  opt_spe = info.get("optimizer_steps_per_epoch", info["steps_per_epoch"])
  schedule = train_lib.momentum_schedule_of(config, layout.statistics_batch_size, opt_spe)
  data = input_pipeline.load_dataset(config.dataset)
  # No device axis: one device holds the whole statistics batch m·G.
  model = train_lib.build_model(
    config,
    num_classes=data.num_classes,
    steps_per_epoch=opt_spe,
    per_device_batch=layout.statistics_batch_size,
    momentum_schedule=schedule,
  )
  restored = ckpt_lib.restore_latest(workdir)
  return FinishedRun(
    workdir=str(workdir),
    config=config,
    data=data,
    model=model,
    params=jax.tree.map(jnp.asarray, restored["params"]),
    batch_stats=jax.tree.map(jnp.asarray, restored["batch_stats"]),
    step=int(restored["step"]) // layout.grad_accum_steps,
    steps_per_epoch=opt_spe,
    layout=layout,
    momentum_schedule=schedule,
  )
