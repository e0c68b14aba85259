"""Evaluation through the seam: validation sums and population ("precise") statistics."""

from __future__ import annotations

from train import input_pipeline

__all__ = ["PRECISE_STATS_SEED_OFFSET", "evaluate", "evaluate_epoch", "precise_stats_stream"]

# The precise-statistics batches are drawn from their own stream (never the
# training order): seed + this offset.
PRECISE_STATS_SEED_OFFSET = 7919


def evaluate(s, params, batch_stats) -> dict:
  """``eval_loss`` and ``eval_accuracy`` over the whole validation set (every device).

  ``params`` and ``batch_stats`` are laid out on the devices as the seam
  (:mod:`train.parallel`) keeps them.
  """
  sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
  layout = s.layout
  for batch in input_pipeline.eval_batches(
    s.data,
    per_device_batch_size=s.config.eval_per_device_batch_size,
    local_devices=layout.local_devices,
    process_index=layout.process_index,
    process_count=layout.process_count,
  ):
    out = s.parallel.eval_sums(
      {"params": params, "batch_stats": batch_stats}, s.parallel.shard(batch)
    )
    for k in sums:
      sums[k] += out[k]
  return {
    "eval_loss": sums["loss"] / sums["count"],
    "eval_accuracy": sums["correct"] / sums["count"],
  }


def evaluate_epoch(s, p, record: dict, last_epoch: bool):
  """Evaluates with the device-averaged moving statistics (and, if configured, precise ones).

  Adds ``eval_*`` (and ``eval_*_precise``) to ``record``; returns ``(mean_stats,
  precise_stats)`` for the checkpoint.
  """
  config = s.config
  mean_stats = s.parallel.mean_stats(p.state.batch_stats)
  record.update(evaluate(s, p.state.params, mean_stats))
  precise = None
  if s.precise_stats_on and (last_epoch or config.precise_stats_every_eval):
    batches = precise_stats_stream(config, s.data, s.layout, record["epoch"] - 1)
    precise = s.parallel.precise_stats(p.state.params, mean_stats, batches)
    record.update({f"{k}_precise": v for k, v in evaluate(s, p.state.params, precise).items()})
  return mean_stats, precise


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
    raise input_pipeline.DataConfigError(
      f"config.precise_stats_batch_size={config.precise_stats_batch_size} per "
      f"device: {e} Use a smaller precise_stats_batch_size."
    ) from None
  passes = -(-config.precise_stats_batches // stream.steps_per_epoch)
  pairs = []
  for i in range(config.precise_stats_batches):
    rep, index = divmod(i, stream.steps_per_epoch)
    pairs.append((epoch * passes + rep, index))
  for batch in stream.batches_at(pairs):  # prepared ahead by Grain threads
    yield {"image": batch["image"]}
