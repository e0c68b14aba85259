"""Evaluation of the pmapped model: validation sums and population ("precise") statistics."""

from __future__ import annotations

import functools

import mbn_jax
from train import devices, input_pipeline

__all__ = ["PRECISE_STATS_SEED_OFFSET", "evaluate", "precise_stats", "precise_stats_stream"]

# The precise-statistics batches are drawn from their own stream (never the
# training order): seed + this offset.
PRECISE_STATS_SEED_OFFSET = 7919


def evaluate(p_eval, variables, data, *, batch_size: int, layout: dict) -> dict:
  """``eval_loss`` and ``eval_accuracy`` over the whole validation set (every device).

  ``p_eval`` is the pmapped :func:`train.steps.eval_step`; ``variables``
  carry the leading local-device axis.
  """
  sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
  for batch in input_pipeline.eval_batches(
    data,
    per_device_batch_size=batch_size,
    local_devices=layout.local_devices,
    process_index=layout.process_index,
    process_count=layout.process_count,
  ):
    out = devices.first(p_eval(variables, batch))
    for k in sums:
      sums[k] += float(out[k])
  return {
    "eval_loss": sums["loss"] / sums["count"],
    "eval_accuracy": sums["correct"] / sums["count"],
  }


def precise_stats_stream(config, data, layout, epoch: int):
  """The training batches the precise statistics are estimated from, for ``epoch``.

  ``config.precise_stats_batches`` batches of ``precise_stats_batch_size``
  images per device, with the training augmentation, from their own seed
  stream (``seed + PRECISE_STATS_SEED_OFFSET``; the training data order is
  untouched), fresh for every ``epoch``; more batches than one pass over the
  training set continue into further passes.
  """
  try:
    stream = input_pipeline.TrainBatches(
      data,
      per_device_batch_size=config.precise_stats_batch_size,
      local_devices=layout.local_devices,
      process_index=layout.process_index,
      process_count=layout.process_count,
      seed=config.seed + PRECISE_STATS_SEED_OFFSET,
      augment=config.dataset.augment,
      pad=config.dataset.crop_padding,
    )
  except ValueError as e:
    raise ValueError(
      f"config.precise_stats_batch_size={config.precise_stats_batch_size} per "
      f"device: {e} Use a smaller precise_stats_batch_size."
    ) from None
  passes = -(-config.precise_stats_batches // stream.steps_per_epoch)
  for i in range(config.precise_stats_batches):
    rep, index = divmod(i, stream.steps_per_epoch)
    yield {"image": stream.batch(epoch * passes + rep, index)["image"]}


@functools.lru_cache(maxsize=8)
def _estimation_fn(model):
  """``train_fn`` of :func:`mbn_jax.precise_batch_stats` for ``model`` (cached: one compilation)."""

  def run(variables, batch):
    return model.apply(variables, batch["image"], train=True, step=0, mutable=["batch_stats"])

  return run


def precise_stats(model, params, mean_stats, batches, *, axis_name: str):
  """Population statistics (:func:`mbn_jax.precise_batch_stats`) pooled over every device.

  Returns the device-averaged ``mean_stats`` with every BN/MBN/BReN layer's
  ``mean``/``var`` replaced by its population statistics: the complete
  ``batch_stats`` to evaluate or deploy with (replicated on every device).
  One estimation function per model, so repeated estimations compile once.
  """
  return mbn_jax.precise_batch_stats(
    _estimation_fn(model),
    {"params": params, "batch_stats": mean_stats},
    batches,
    axis_name=axis_name,
  )
