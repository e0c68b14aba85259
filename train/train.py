"""Data-parallel training of the Sec. 5 experiments: ``train_and_evaluate``, the loop.

The loop reads top down (:func:`run`): restore or start; for each epoch:
train, evaluate, checkpoint, report; summarize. The devices are behind one
seam, :mod:`train.parallel` (``config.parallelism``: ``pmap`` or ``mesh``):

* each device normalizes with the statistics of its own ``m`` images (the
  paper's per-GPU batch), or of a group of ``norm_sync_devices`` G devices
  (all of them: SyncBN);
* gradients are averaged over every device, SGD + momentum + weight decay (optax);
* the global step is ``state.step``, a traced value: λ(t) (Eq. 11) changes per
  epoch without recompiling; ``train_step_traces`` in ``summary.json`` counts
  the compilations of the step (1 per run);
* before every evaluation and checkpoint the ``batch_stats`` are averaged over
  devices (training itself keeps its per-device statistics, and checkpoints
  keep those too, so a resumed run continues bit-for-bit);
* a step with a non-finite loss or gradient is skipped (nothing but the step
  counter changes) and counted; ``max_nonfinite_steps`` consecutive skips stop
  the run as ``"diverged"``.

The rooms: :mod:`train.setup` (data, schedules, model, devices),
:mod:`train.resume` (state ↔ checkpoints), :mod:`train.epoch` (one epoch),
:mod:`train.evaluation`, :mod:`train.summary` (what the run prints and
writes), :mod:`train.steps` (the pure steps), :mod:`train.validation`
(config checks, resume guard). Files in the workdir: ``config.json``,
``checkpoints/``, ``metrics.jsonl`` (one JSON line per epoch),
``tensorboard/``, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from train import checkpoints as ckpt_lib
from train import evaluation, resume, summary
from train.data_errors import DataConfigError
from train.epoch import EpochSums, epoch_record, train_epoch
from train.evaluation import precise_stats_stream
from train.layout import RunLayout
from train.models import build_model, conv_function, momentum_schedule_of
from train.setup import set_up, start
from train.steps import TrainState, learning_rate_fn
from train.validation import (
  RESUME_MAY_CHANGE,
  ConfigMismatchError,
  check_resume_compatible,
  config_json,
  validate_config,
)
from train.writer import MetricWriter, comparison_table, save_json

__all__ = [
  "RESUME_MAY_CHANGE",
  "ConfigMismatchError",
  "TrainState",
  "build_model",
  "check_resume_compatible",
  "config_json",
  "conv_function",
  "learning_rate_fn",
  "momentum_schedule_of",
  "precise_stats_stream",
  "run",
  "train_and_evaluate",
  "validate_config",
]


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, layout: RunLayout | None = None
) -> dict:
  """Trains and evaluates ``config`` in ``workdir``; returns the summary dict.

  ``layout``: what :func:`validate_config` returned for this config and
  workdir (the command line validates first); None validates here. A config
  is validated once per command. With ``config.norms='bn,mbn'`` trains one
  run per norm into ``workdir/<norm>`` and prints their accuracies side by side.
  """
  if layout is None:
    layout = validate_config(config, workdir)
  if len(layout.norms) > 1 or config.norms:
    return _compare(config, workdir, layout)
  return run(config, workdir, layout)


def run(config, workdir: str, layout: RunLayout) -> dict:
  """One run: restore or start; per epoch train, evaluate, checkpoint, report; summarize."""
  config_checked = resume.check_saved_config(config, workdir)
  s = set_up(config, workdir, layout)
  p = resume.restore(s, config_checked=config_checked) or start(s)
  s.writer = MetricWriter(s.workdir, s.is_main, config.tensorboard, p.start_step)
  summary.announce(s)
  stop = ckpt_lib.StopSignal()
  history, outcome, last_eval = [], None, {}
  try:
    for epoch in range(p.step // s.spe, config.num_epochs):
      try:
        outcome = train_epoch(s, p, epoch, stop)
      except DataConfigError as error:
        raise _keep_partial_epoch(s, p, error) from None
      if outcome == "diverged":
        break
      if p.step % s.spe != 0:  # stopped mid-epoch: checkpoint the partial epoch
        resume.save_checkpoint(s, p, s.parallel.mean_stats(p.state.batch_stats))
        break
      record = epoch_record(s, p, epoch)
      last_epoch = epoch + 1 == config.num_epochs
      mean_stats = precise = None
      if (epoch + 1) % config.eval_every_epochs == 0 or last_epoch or outcome:
        mean_stats, precise = evaluation.evaluate_epoch(s, p, record, last_epoch and not outcome)
        last_eval = {k: v for k, v in record.items() if k.startswith("eval_")}
      s.writer.write(record)
      history.append(record)
      summary.report_epoch(s, record)
      p.sums = EpochSums()
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or last_epoch or outcome:
        if mean_stats is None:
          mean_stats = s.parallel.mean_stats(p.state.batch_stats)
        resume.save_checkpoint(s, p, mean_stats, precise)
      if outcome:
        break
  finally:
    stop.close()
  return summary.summarize(s, p, history, outcome, last_eval)


def _keep_partial_epoch(s, p, error: DataConfigError) -> DataConfigError:
  """A bad image met mid-epoch: checkpoint the steps before it (one process), so that the same
  command resumes at the batch that failed once the file is replaced; the error to raise."""
  if p.step % s.spe == 0 or p.step == p.start_step or s.layout.process_count > 1:
    return error  # nothing new in this epoch (or several processes: they cannot all save)
  resume.save_checkpoint(s, p, s.parallel.mean_stats(p.state.batch_stats))
  return DataConfigError(
    f"{error} A checkpoint of step {p.step} (the steps before that batch) was saved in "
    f"{s.workdir}: the same command resumes there."
  )


def _compare(config, workdir, layout: RunLayout):
  """One run per norm into ``workdir/<norm>``, then :func:`train.writer.comparison_table`."""
  os.makedirs(workdir, exist_ok=True)
  results = {}
  for norm in layout.norms:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.norm = norm
    sub.norms = ""
    # validate_config checked every norm of the comparison (and each one's workdir) already.
    sub_layout = dataclasses.replace(layout, norms=(norm,))
    results[norm] = run(sub, os.path.join(workdir, norm), sub_layout)
    if results[norm]["status"] != "completed":  # Preempted or diverged: stop; rerun resumes.
      return {
        "per_device_batch_size": config.per_device_batch_size,
        "runs": results,
        "status": results[norm]["status"],
      }
  table = comparison_table(results)
  m = config.per_device_batch_size
  header = (
    f"{config.model} on {config.dataset.source}:{config.dataset.name}, "
    f"per-device batch {m}, {jax.device_count()} device(s):"
  )
  comparison = {"per_device_batch_size": m, "runs": results, "table": table, "status": "completed"}
  if jax.process_index() == 0:
    print("\n" + header + "\n" + table, flush=True)
    save_json(os.path.join(workdir, "comparison.json"), comparison)
  return comparison
