"""What a run says: its first line, one line per epoch, ``summary.json`` and its last line."""

from __future__ import annotations

import json
import math
import os
import time

from tqdm import tqdm

from mbn_jax import norms
from train import devices, divergence, init_from
from train.epoch import Progress
from train.setup import RunSetup
from train.validation import config_json
from train.writer import MetricWriter, precise_statistics_note, save_json

__all__ = ["announce", "report_epoch", "summarize"]


def announce(s: RunSetup) -> None:
  """The run's first line (process 0): data, devices, batches, schedule."""
  if not s.is_main:
    return
  config, lay = s.config, s.layout
  accumulation = (
    f"; gradient accumulation over {s.k} micro-batches ({config.grad_accum_stats} statistics):"
    f" optimizer batch {lay.optimizer_batch_size}, {s.opt_spe} optimizer steps/epoch"
    if s.k > 1
    else ""
  )
  print(
    f"{config.model}/{config.norm}: {s.data.description}; {lay.devices} device(s) "
    f"on {lay.process_count} process(es), per-device batch "
    f"m={lay.per_device_batch_size}, global batch {lay.global_batch_size}, {s.spe} "
    f"steps/epoch, {config.num_epochs} epochs, seed {config.seed}" + accumulation,
    flush=True,
  )
  if config.precise_stats_batches and not s.precise_stats_on:
    print(
      f"{config.model}/{config.norm}: precise statistics skipped (precise_stats_batches="
      f"{config.precise_stats_batches}): {_why_not_precise(config.norm)}",
      flush=True,
    )


def _why_not_precise(norm: str) -> str:
  """Why a norm's statistics are not re-estimated, from its capabilities."""
  caps = norms.capabilities_of(norms.norm_class(norm))
  if not caps.running_statistics:
    return "the model keeps no batch statistics, so its evaluation does not depend on any."
  if caps.normalizer == "frozen":
    return "its statistics are frozen (they are the network's, not estimated)."
  return (
    "its inference statistics are not a mean and a variance that population statistics "
    "could re-estimate (capabilities: precise_statistics=False)."
  )


def report_epoch(s: RunSetup, record: dict) -> None:
  """One line per epoch: the JSON record without a progress bar, a sentence with one."""
  if not s.is_main:
    return
  if not s.config.progress_bar:
    print(json.dumps(MetricWriter.strict(record)), flush=True)
  elif "eval_accuracy" in record:
    precise_note = (
      f" (precise statistics: {record['eval_accuracy_precise']:.4f})"
      if "eval_accuracy_precise" in record
      else ""
    )
    loss = record["train_loss"]
    tqdm.write(
      f"epoch {record['epoch']}: train loss "
      f"{'n/a' if loss is None else f'{loss:.4f}'} acc "
      f"{record['train_accuracy'] or 0.0:.4f}, eval loss {record['eval_loss']:.4f} acc "
      f"{record['eval_accuracy']:.4f}{precise_note}"
    )


def summarize(s: RunSetup, p: Progress, history: list[dict], outcome, last_eval: dict) -> dict:
  """Writes ``summary.json`` (the whole run, resumed parts included) and prints the result."""
  from train import evaluation

  # Every process takes the same branches here: an evaluation is a collective.
  if outcome is None and not last_eval:
    last_eval = evaluation.evaluate(s, p.state.params, s.parallel.mean_stats(p.state.batch_stats))
  assert s.writer is not None
  records = list(history)
  if s.is_main and os.path.exists(s.writer.path):
    with open(s.writer.path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  summary = _summary(s, p, records, outcome, last_eval)
  if s.is_main:
    save_json(
      os.path.join(s.workdir, "summary.json"),
      MetricWriter.strict({**summary, "config": config_json(s.config)}),
    )
    print(_final_line(s, p, summary), flush=True)
    if note := precise_statistics_note(summary):
      print(note, flush=True)
  else:
    acc = summary["final_eval_accuracy"]
    print(
      f"process {s.layout.process_index}/{s.layout.process_count} {summary['status']} at "
      f"step {p.step}: final eval accuracy {'n/a' if acc is None else f'{acc:.6f}'}",
      flush=True,
    )
  s.manager.close()
  s.writer.close()  # the TensorBoard file, now: at interpreter exit Python >= 3.12 may refuse
  return summary


def _summary(s: RunSetup, p: Progress, records: list[dict], outcome, last_eval: dict) -> dict:
  config = s.config
  evals = [r["eval_accuracy"] for r in records if r.get("eval_accuracy") is not None]
  if last_eval and (not evals or evals[-1] != last_eval["eval_accuracy"]):
    evals.append(last_eval["eval_accuracy"])
  final = records[-1] if records else {}
  summary = {
    "status": {None: "completed", "interrupted": "interrupted", "diverged": "diverged"}[outcome],
    "step": p.step,
    "epochs_completed": p.step // s.spe,
    "num_epochs": config.num_epochs,
    "final_eval_accuracy": last_eval.get("eval_accuracy", evals[-1] if evals else None),
    "best_eval_accuracy": max(evals) if evals else None,
    "final_eval_loss": last_eval.get("eval_loss", final.get("eval_loss")),
    "final_eval_accuracy_precise": last_eval.get("eval_accuracy_precise"),
    "final_train_accuracy": final.get("train_accuracy"),
    "final_train_loss": final.get("train_loss"),
    "seed": config.seed,
    "data_order_seed": config.seed,
    "init_seed": config.seed,
    "model": config.model,
    "norm": config.norm,
    "dataset": s.data.description,
    "parallelism": s.parallel.name,
    "train_step_traces": s.parallel.train_traces,
    "wall_time_s": time.time() - s.t_start,
    "software_and_machine": devices.software_and_machine(),
    "init_from": init_from.record_of(s.workdir),  # the source run and what it carried, or None
    **s.run_info,
    # Summary-only (run_info, which resume compares, keeps its keys): under gradient
    # accumulation an epoch is micro_batches_per_epoch = k · optimizer_steps_per_epoch.
    "micro_batches_per_epoch": s.spe,
    "optimizer_steps_per_epoch": s.opt_spe,
    # The statistics layout: how many devices share one set of batch statistics and
    # the batch m they are computed over (what λ and τ use).
    "norm_sync_devices": s.layout.norm_sync_devices,
    "statistics_batch_size": s.layout.statistics_batch_size,
    "lr_batch_size": config.lr_batch_size,
    "layout": s.layout.to_record(),
  }
  if outcome == "interrupted":
    summary["resume_hint"] = "Rerun the same command with the same --workdir to resume."
  if outcome == "diverged":
    summary["diverged_at_step"] = p.last_nonfinite_step
    summary["error"] = divergence_message(s, p)
  return summary


def divergence_message(s: RunSetup, p: Progress) -> str:
  last = s.manager.latest_step()
  return divergence.divergence_message(
    s.config,
    consecutive=p.consecutive_nonfinite,
    last_step=p.last_nonfinite_step,
    lr_at_last_step=float(s.rule.learning_rate(s.opt_step(p.step - 1))),
    nonfinite_kind=p.last_nonfinite_kind,
    has_checkpoint=last is not None,
    checkpoint_step=last,
  )


def _final_line(s: RunSetup, p: Progress, summary: dict) -> str:
  config = s.config
  if summary["status"] == "diverged":
    return f"{config.model}/{config.norm}: {summary['error']}"
  verb = (
    f"Interrupted (signal); checkpoint saved at step {p.step}. Rerun the same command to resume."
    if summary["status"] == "interrupted"
    else "Done."
  )
  acc, best = summary["final_eval_accuracy"], summary["best_eval_accuracy"]
  fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
  return (
    f"{verb} {config.model}/{config.norm}: final eval accuracy {fmt(acc)} (best "
    f"{fmt(best)}) after {summary['epochs_completed']} epochs; summary in "
    f"{s.workdir}/summary.json"
  )
