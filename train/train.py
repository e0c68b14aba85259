"""Data-parallel training of the Sec. 5 experiments: ``train_and_evaluate``.

One ``jax.pmap`` (axis ``'batch'``) over every device of every process:

* each device normalizes with the statistics of its own ``m`` images (the
  paper's per-GPU batch), or of all devices with ``sync_batch_stats``;
* gradients are ``pmean``-ed, SGD + momentum + weight decay (optax);
* the global step is ``state.step``, a traced value: λ(t) (Eq. 11) changes per
  epoch without recompiling; ``train_step_traces`` in ``summary.json`` counts
  the compilations of the step (1 per run);
* before every evaluation and checkpoint the ``batch_stats`` are averaged over
  devices (training itself keeps its per-device statistics, and checkpoints
  keep those too, so a resumed run continues bit-for-bit);
* a step with a non-finite loss or gradient is skipped (nothing but the step
  counter changes) and counted; ``max_nonfinite_steps`` consecutive skips stop
  the run as ``"diverged"``.

The pieces: :mod:`train.steps` (state and steps), :mod:`train.validation`
(config checks, resume guard), :mod:`train.evaluation`, :mod:`train.writer`
(metrics), :mod:`train.checkpoints`, :mod:`train.devices`; this module holds
the loop. Files in the workdir: ``config.json``, ``checkpoints/``,
``metrics.jsonl`` (one JSON line per epoch), ``tensorboard/``, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from mbn_jax import norms, schedules
from train import checkpoints as ckpt_lib
from train import cpu_conv, devices, evaluation, input_pipeline, models, steps
from train.evaluation import precise_stats_stream
from train.layout import RunLayout
from train.steps import AXIS, TrainState, learning_rate_fn
from train.validation import (
  CONVS,
  DTYPES,
  RESUME_MAY_CHANGE,
  ConfigMismatchError,
  check_resume_compatible,
  config_json,
  validate_config,
)
from train.writer import MetricWriter, comparison_table, precise_statistics_note, save_json

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
  "train_and_evaluate",
  "validate_config",
]


# ----------------------------------------------------------------------------
# The model.


def conv_function(conv: str, per_device_batch: int):
  """``config.conv`` → the convolution of every conv layer (None: XLA's).

  ``'auto'``: :func:`train.cpu_conv.auto_conv` — the fast path on CPU
  (chunked weight gradients, matmul convs for tiny layers), XLA's conv on
  GPU/TPU; ``'xla'``: always XLA's; ``'fast'``: the fast path on any backend.
  """
  if conv == "xla":
    return None
  if conv == "fast":
    return cpu_conv.conv_general_dilated
  if conv == "auto":
    return cpu_conv.auto_conv(per_device_batch)
  raise ValueError(f"config.conv must be one of {CONVS}, got {conv!r}.")


def accumulation_steps_of(config) -> int:
  """The norms' ``accumulation_steps``: k with deferred statistics, else 1 (sequential)."""
  k = config.grad_accum_steps
  return k if config.grad_accum_stats == "deferred" else 1


def momentum_schedule_of(config, layout: RunLayout, steps_per_epoch: int):
  """MBN's λ(t) (Eq. 11) for this run: the statistics batch m·G of ``layout``, T =
  ``mbn_total_epochs``, optimizer ``steps_per_epoch``, m0 = ``ideal_batch_size``.

  Built once per run and shared by the norms (``make_norm(momentum_schedule=...)``),
  the logged λ and :mod:`tools.finished_run`.
  """
  return schedules.momentum_schedule(
    batch_size=layout.statistics_batch_size,
    total_epochs=config.mbn_total_epochs,
    steps_per_epoch=steps_per_epoch,
    ideal_batch_size=config.ideal_batch_size,
  )


def build_model(
  config,
  *,
  num_classes: int,
  steps_per_epoch: int,
  per_device_batch: int | None = None,
  momentum_schedule=None,
):
  """The configured network, its norms built from the config's norm options.

  ``steps_per_epoch`` counts optimizer steps (what the norms' ``step`` counts);
  ``momentum_schedule`` (:func:`momentum_schedule_of`) is MBN's λ(t).

  ``axis_name='batch'`` (the pmap axis) when ``sync_batch_stats``; the
  model's dtype reaches its norms through ``create_model(dtype=...)``; its
  convolutions are ``config.conv``'s (:func:`conv_function` for
  ``per_device_batch``, default ``config.per_device_batch_size``; runs saved
  before that field existed used XLA's).
  """
  norm_options = dict(
    accumulation_steps=accumulation_steps_of(config),
    axis_name=AXIS if config.sync_batch_stats else None,
    total_epochs=config.mbn_total_epochs,
    steps_per_epoch=steps_per_epoch,
    ideal_batch_size=config.ideal_batch_size,
    tau0=config.tau0,
    r_max=config.r_max,
    d_max=config.d_max,
    warmup_steps=config.brn_warmup_steps,
    bn_momentum=config.bn_momentum,
    momentum_schedule=momentum_schedule,
  )
  conv = conv_function(config.conv, per_device_batch or config.per_device_batch_size)
  return models.create_model(
    config.model,
    num_classes=num_classes,
    norm=config.norm,
    input_variant=config.input_variant,
    dtype=DTYPES[config.dtype],
    conv_general_dilated=conv,
    **norm_options,
  )


class PmappedSteps:
  """:func:`train.steps.train_step` / :func:`~train.steps.eval_step` pmapped over ``'batch'``.

  ``train_traces`` counts how often the train step is traced (1 per run).
  """

  def __init__(self, model, lr_fn, lam_fn, grad_accum_steps: int = 1):
    self.model = model
    self.train_traces = 0
    self.p_train = jax.pmap(self._counted_train_step, axis_name=AXIS, donate_argnums=(0,))
    self.p_eval = jax.pmap(functools.partial(steps.eval_step, apply_fn=model.apply), axis_name=AXIS)
    self._p_mean = jax.pmap(lambda t: jax.lax.pmean(t, AXIS), axis_name=AXIS)
    self._step = functools.partial(
      steps.train_step,
      learning_rate_fn=lr_fn,
      momentum_fn=lam_fn,
      grad_accum_steps=grad_accum_steps,
    )

  def _counted_train_step(self, state, batch, stop):
    self.train_traces += 1  # Python side effect: runs once per trace.
    return self._step(state, batch, stop)

  def p_mean(self, tree):
    """Averages the (per-device) batch_stats over all devices; {} stays {}."""
    return self._p_mean(tree) if jax.tree.leaves(tree) else tree


# ----------------------------------------------------------------------------
# Entry points.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates ``config`` in ``workdir``; returns the summary dict.

  With ``config.norms='bn,mbn'`` trains one run per norm into
  ``workdir/<norm>`` and prints their accuracies side by side.
  """
  layout = validate_config(config, workdir)
  if len(layout.norms) > 1 or config.norms:
    return _compare(config, workdir, layout.norms)
  return TrainingRun(config, workdir, layout).run()


def _compare(config, workdir, norms):
  """One run per norm into ``workdir/<norm>``, then :func:`train.writer.comparison_table`."""
  os.makedirs(workdir, exist_ok=True)
  results = {}
  for norm in norms:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.norm = norm
    sub.norms = ""
    results[norm] = TrainingRun(
      sub, os.path.join(workdir, norm), validate_config(sub, workdir)
    ).run()
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


# ----------------------------------------------------------------------------
# One run.


@dataclasses.dataclass
class EpochSums:
  """Running sums of the current epoch's training metrics (saved in checkpoints)."""

  loss: float = 0.0
  accuracy: float = 0.0
  count: int = 0  # finite steps
  nonfinite: int = 0  # skipped steps

  def record(self) -> dict:
    n = max(self.count, 1)
    return {
      "train_loss": self.loss / n if self.count else None,
      "train_accuracy": self.accuracy / n if self.count else None,
      "nonfinite_steps": self.nonfinite,
    }


class TrainingRun:
  """One run of ``python -m train``: set up (or resume), train epoch by epoch, summarize."""

  def __init__(self, config, workdir: str, layout: RunLayout):
    self.t_start = time.time()
    self.config = config
    self.layout = layout
    self.is_main = layout.process_index == 0
    self.workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(self.workdir, exist_ok=True)
    config_path = os.path.join(self.workdir, "config.json")
    if os.path.exists(config_path):  # refuse to resume a run that differs in what matters
      with open(config_path) as f:
        check_resume_compatible(json.load(f)["config"], config)

    m = layout.per_device_batch_size
    self.k = k = layout.grad_accum_steps  # micro-batches per optimizer step
    self.data = input_pipeline.load_dataset(config.dataset)
    self.batches = input_pipeline.TrainBatches(
      self.data,
      per_device_batch_size=m,
      local_devices=layout.local_devices,
      process_index=layout.process_index,
      process_count=layout.process_count,
      seed=config.seed,
      augment=config.dataset.augment,
      pad=config.dataset.crop_padding,
      micro_batches_per_step=k,
    )
    # spe: (micro-)batches per epoch, what the loop iterates; opt_spe: optimizer
    # steps per epoch, what λ(t) and the learning-rate schedule count.
    self.spe = spe = self.batches.steps_per_epoch
    self.opt_spe = opt_spe = spe // k
    # λ(t), built once: the norms use it and the loop logs it.
    self.lam_fn = momentum_schedule_of(config, layout, opt_spe)
    self.model = build_model(
      config,
      num_classes=self.data.num_classes,
      steps_per_epoch=opt_spe,
      per_device_batch=m,
      momentum_schedule=self.lam_fn,
    )
    self.logs_lambda = norms.norm_class(config.norm).capabilities.momentum_schedule
    self.lr_fn = learning_rate_fn(config, m * k, layout.global_batch_size * k, opt_spe)
    self.run_info = {
      "devices": layout.devices,
      "processes": layout.process_count,
      "steps_per_epoch": spe,
      "per_device_batch_size": m,
      "global_batch_size": layout.global_batch_size,
    }
    if k > 1:  # only then: runs without accumulation keep their run_info (and resume)
      self.run_info.update(
        grad_accum_steps=k,
        optimizer_steps_per_epoch=opt_spe,
        optimizer_batch_size=layout.global_batch_size * k,
      )
    self.manager = ckpt_lib.CheckpointManager(
      os.path.join(self.workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
    )
    self.steps = PmappedSteps(self.model, self.lr_fn, self.lam_fn, grad_accum_steps=k)
    self.sums = EpochSums()
    self.lam = 0.0  # λ of the last consumed step (progress bar)
    self.consecutive_nonfinite = 0
    self.last_nonfinite_step = None
    self.epoch_time = self.images_per_sec = 0.0
    self.rstate = self._restore_or_start(config_path)
    self.start_step = self.step = int(devices.first(self.rstate.step))
    # Precise statistics re-estimate BatchNorm-family layers; a model without any (gn,
    # ln, in, none: no batch_stats) has no inference statistics to re-estimate.
    self.precise_stats_on = bool(config.precise_stats_batches) and bool(
      jax.tree.leaves(self.rstate.batch_stats)
    )
    if config.precise_stats_batches and not self.precise_stats_on and self.is_main:
      print(
        f"{config.model}/{config.norm}: precise statistics skipped (precise_stats_batches="
        f"{config.precise_stats_batches}): the model keeps no batch statistics, so its "
        "evaluation does not depend on any.",
        flush=True,
      )
    self.writer = MetricWriter(self.workdir, self.is_main, config.tensorboard, self.start_step)

  def opt_step(self, step: int) -> int:
    """The optimizer step of (micro-)batch ``step``."""
    return steps.optimizer_step(step, self.k)

  # -- state -----------------------------------------------------------------

  def _restore_or_start(self, config_path: str):
    """The replicated state on the devices: from the latest checkpoint, or fresh."""
    config, layout = self.config, self.layout
    tx = steps.make_optimizer(config, self.lr_fn)
    state = steps.create_train_state(
      self.model,
      tx,
      self.data.image_shape,
      batch_size=layout.per_device_batch_size,
      seed=config.seed,
    )
    host = jax.device_get(state)
    per_device_stats = None
    target = {
      "step": np.asarray(host.step),
      "params": host.params,
      "opt_state": host.opt_state,
      "batch_stats": host.batch_stats,
      "batch_stats_per_device": devices.replicate(host.batch_stats, layout.devices),
    }
    had_checkpoints = bool(self.manager.all_steps())
    found = self.manager.restore_newest_good(target, check_meta=self._check_checkpoint_meta)
    if found is not None:
      latest, restored, meta = found
      host = host.replace(
        step=restored["step"],
        params=restored["params"],
        opt_state=restored["opt_state"],
        batch_stats=restored["batch_stats"],
      )
      lo = layout.process_index * layout.local_devices
      rows = slice(lo, lo + layout.local_devices)
      per_device_stats = jax.tree.map(
        lambda x: np.asarray(x)[rows], restored["batch_stats_per_device"]
      )
      self.sums = EpochSums(**meta["accum"])
      if self.is_main:
        print(
          f"Resuming from step {latest} (epoch {latest // self.spe + 1}) in {self.workdir}",
          flush=True,
        )
    elif had_checkpoints:
      raise ckpt_lib.CheckpointError(
        f"every checkpoint in {self.manager.directory} is damaged (each was moved to "
        f"{self.manager.directory}_damaged/); nothing to resume from. Start over with a new "
        "--workdir (or move the damaged ones back to inspect them)."
      )
    if found is None and self.is_main:
      save_json(
        config_path,
        {
          "config": config_json(config),
          "run_info": self.run_info,
          "layout": layout.to_record(),
        },
      )
    rstate = devices.replicate(host, layout.local_devices)
    if per_device_stats is not None:
      rstate = rstate.replace(batch_stats=per_device_stats)
    # Onto the devices, laid out as the train step's outputs are, so the first
    # step does not trace twice (NumPy inputs and device outputs differ).
    return jax.pmap(lambda t: t, axis_name=AXIS)(rstate)

  def _check_checkpoint_meta(self, meta: dict) -> None:
    """Refuses a readable checkpoint of a different layout or config (not damage)."""
    if meta["run_info"] != self.run_info:
      raise ConfigMismatchError(
        f"Refusing to resume: the checkpoint was written with {meta['run_info']}, this run "
        f"has {self.run_info} (a different device count changes the global batch and the "
        "data order)."
      )
    if "config" in meta:  # config.json may be gone: the checkpoint's own copy decides
      check_resume_compatible(meta["config"], self.config)

  def checkpoint(self, mean_stats, precise_stats=None):
    """Saves the state at ``self.step`` (device-averaged and per-device statistics)."""
    host = jax.device_get(
      devices.first({"params": self.rstate.params, "opt_state": self.rstate.opt_state})
    )
    item = {
      "step": np.asarray(self.step, np.int32),  # the dtype of TrainState.step
      **host,
      "batch_stats": devices.first(mean_stats),
      "batch_stats_per_device": devices.all_rows(self.rstate.batch_stats),
    }
    extra = None
    if precise_stats is not None:  # the deployable alternative to item["batch_stats"]
      extra = {ckpt_lib.PRECISE_STATS: jax.device_get(devices.first(precise_stats))}
    self.manager.save(
      self.step,
      item,
      {
        "accum": dataclasses.asdict(self.sums),
        "run_info": self.run_info,
        "epoch": self.step // self.spe,
        "config": config_json(self.config),
      },
      extra=extra,
    )

  # -- evaluation --------------------------------------------------------------

  def evaluate(self, batch_stats) -> dict:
    return evaluation.evaluate(
      self.steps.p_eval,
      {"params": self.rstate.params, "batch_stats": batch_stats},
      self.data,
      batch_size=self.config.eval_per_device_batch_size,
      layout=self.layout,
    )

  def evaluate_epoch(self, record: dict, last_epoch: bool):
    """Evaluates (moving and, if configured, precise statistics) into ``record``.

    Returns ``(mean_stats, precise_stats)`` for the checkpoint.
    """
    config = self.config
    mean_stats = self.steps.p_mean(self.rstate.batch_stats)
    record.update(self.evaluate(mean_stats))
    precise = None
    if self.precise_stats_on and (last_epoch or config.precise_stats_every_eval):
      precise = evaluation.precise_stats(
        self.model,
        self.rstate.params,
        mean_stats,
        precise_stats_stream(config, self.data, self.layout, record["epoch"] - 1),
        axis_name=AXIS,
      )
      record.update({f"{k}_precise": v for k, v in self.evaluate(precise).items()})
    return mean_stats, precise

  # -- training ----------------------------------------------------------------

  def train_epoch(self, epoch: int, stop: ckpt_lib.StopSignal) -> str | None:
    """Trains ``epoch`` from the current step; returns None, ``'interrupted'`` or ``'diverged'``."""
    config, spe = self.config, self.spe
    first = self.step - epoch * spe
    bar = tqdm(
      total=spe,
      initial=first,
      desc=f"epoch {epoch + 1}/{config.num_epochs}",
      disable=not (config.progress_bar and self.is_main),
      dynamic_ncols=True,
      leave=True,
    )
    stop_flag = np.zeros((self.layout.local_devices,), np.int32)
    t_epoch, done_here, pending, outcome = time.time(), 0, [], None
    for batch in self.batches.epoch(epoch, first):
      stop_flag[:] = int(stop.requested)
      self.rstate, metrics = self.steps.p_train(self.rstate, batch, stop_flag)
      self.step += 1
      done_here += 1
      if self.step == config.simulate_preemption_at_step:  # Tests: a real SIGTERM to ourselves.
        os.kill(os.getpid(), signal.SIGTERM)
      pending.append(metrics)  # read one step late: the host never waits for the device
      if len(pending) > 1:
        outcome = self._consume(pending.pop(0))
      bar.update(1)
      if done_here % config.log_every_steps == 0 or self.step % spe == 0:
        self._progress(bar, done_here, t_epoch)
      if outcome:
        break
    for metrics in pending:
      outcome = self._consume(metrics) or outcome
    bar.close()
    self.epoch_time = time.time() - t_epoch
    self.images_per_sec = done_here * self.layout.global_batch_size / max(self.epoch_time, 1e-9)
    if outcome is None and self.step % spe != 0:  # stopped mid-epoch by the data running out
      outcome = "interrupted"
    return outcome

  def _consume(self, metrics) -> str | None:
    """Adds one step's metrics to the epoch sums; says whether to stop and why."""
    mh = devices.first(metrics)
    self.lam = float(mh["lambda"])
    if int(mh["nonfinite"]):
      self.sums.nonfinite += 1
      self.consecutive_nonfinite += 1
      self.last_nonfinite_step = int(self.step)
    else:
      self.consecutive_nonfinite = 0
      self.sums.loss += float(mh["loss"])
      self.sums.accuracy += float(mh["accuracy"])
      self.sums.count += 1
    if int(mh["stop"]) > 0:
      return "interrupted"
    if self.consecutive_nonfinite >= self.config.max_nonfinite_steps:
      return "diverged"
    return None

  def _progress(self, bar, done_here: int, t_epoch: float):
    n = max(self.sums.count, 1)
    post = {
      "loss": f"{self.sums.loss / n:.4f}",
      "acc": f"{self.sums.accuracy / n:.4f}",
      "img/s": f"{done_here * self.layout.global_batch_size / (time.time() - t_epoch):.0f}",
    }
    if self.sums.nonfinite:
      post["skipped"] = self.sums.nonfinite
    if self.logs_lambda:
      post["λ"] = f"{self.lam:.4f}"
    bar.set_postfix(post)

  def run(self) -> dict:
    """Trains to ``config.num_epochs`` (or a stop), evaluates and checkpoints; the summary."""
    config, spe = self.config, self.spe
    stop = ckpt_lib.StopSignal()
    history, outcome, last_eval = [], None, {}
    if self.is_main:
      lay = self.layout
      print(
        f"{config.model}/{config.norm}: {self.data.description}; {lay.devices} device(s) "
        f"on {lay.process_count} process(es), per-device batch "
        f"m={lay.per_device_batch_size}, global batch {lay.global_batch_size}, {spe} "
        f"steps/epoch, {config.num_epochs} epochs, seed {config.seed}"
        + (
          f"; gradient accumulation over {self.k} micro-batches ("
          f"{config.grad_accum_stats} statistics): optimizer batch "
          f"{lay.global_batch_size * self.k}, {self.opt_spe} optimizer steps/epoch"
          if self.k > 1
          else ""
        ),
        flush=True,
      )
    try:
      for epoch in range(self.step // spe, config.num_epochs):
        outcome = self.train_epoch(epoch, stop)
        if outcome == "diverged":
          break
        if self.step % spe != 0:  # stopped mid-epoch: checkpoint the partial epoch
          self.checkpoint(self.steps.p_mean(self.rstate.batch_stats))
          break
        record = {
          "step": self.step,
          "epoch": epoch + 1,
          **self.sums.record(),
          "learning_rate": float(self.lr_fn(self.opt_step(self.step - 1))),
          "lambda": (
            float(self.lam_fn(self.opt_step(self.step - 1))) if self.logs_lambda else None
          ),
          "images_per_sec": self.images_per_sec,
        }
        last_epoch = epoch + 1 == config.num_epochs
        mean_stats = precise = None
        if (epoch + 1) % config.eval_every_epochs == 0 or last_epoch or outcome:
          mean_stats, precise = self.evaluate_epoch(record, last_epoch and not outcome)
          last_eval = {k: v for k, v in record.items() if k.startswith("eval_")}
        self.writer.write(record)
        history.append(record)
        self._report_epoch(record)
        self.sums = EpochSums()
        if (epoch + 1) % config.checkpoint_every_epochs == 0 or last_epoch or outcome:
          self.checkpoint(
            mean_stats if mean_stats is not None else self.steps.p_mean(self.rstate.batch_stats),
            precise,
          )
        if outcome:
          break
    finally:
      stop.close()
    return self.summarize(history, outcome, last_eval)

  def _report_epoch(self, record: dict):
    if not self.is_main:
      return
    if not self.config.progress_bar:
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

  def summarize(self, history: list[dict], outcome: str | None, last_eval: dict) -> dict:
    """Writes ``summary.json`` (the whole run, resumed parts included) and prints the result."""
    config = self.config
    # Every process takes the same branches here: an evaluation is a collective.
    if outcome is None and not last_eval:
      last_eval = self.evaluate(self.steps.p_mean(self.rstate.batch_stats))
    all_records = list(history)
    if self.is_main and os.path.exists(self.writer.path):
      with open(self.writer.path) as f:
        all_records = [json.loads(line) for line in f if line.strip()]
    evals = [r["eval_accuracy"] for r in all_records if r.get("eval_accuracy") is not None]
    if last_eval and (not evals or evals[-1] != last_eval["eval_accuracy"]):
      evals.append(last_eval["eval_accuracy"])
    final = all_records[-1] if all_records else {}
    status = {None: "completed", "interrupted": "interrupted", "diverged": "diverged"}[outcome]
    summary = {
      "status": status,
      "step": self.step,
      "epochs_completed": self.step // self.spe,
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
      "dataset": self.data.description,
      "train_step_traces": self.steps.train_traces,
      "wall_time_s": time.time() - self.t_start,
      "software_and_machine": devices.software_and_machine(),
      **self.run_info,
      # Summary-only (run_info, which resume compares, keeps its keys): under gradient
      # accumulation an epoch is micro_batches_per_epoch = k · optimizer_steps_per_epoch.
      "micro_batches_per_epoch": self.spe,
      "optimizer_steps_per_epoch": self.opt_spe,
      # The statistics layout: how many devices share one set of batch statistics and
      # the batch m they are computed over (what λ and τ use).
      "norm_sync_devices": self.layout.norm_sync_devices,
      "statistics_batch_size": self.layout.statistics_batch_size,
      "lr_batch_size": config.lr_batch_size,
      "layout": self.layout.to_record(),
    }
    if outcome == "interrupted":
      summary["resume_hint"] = "Rerun the same command with the same --workdir to resume."
    if outcome == "diverged":
      summary["diverged_at_step"] = self.last_nonfinite_step
      summary["error"] = self.divergence_message()
    if self.is_main:
      save_json(
        os.path.join(self.workdir, "summary.json"),
        MetricWriter.strict({**summary, "config": config_json(config)}),
      )
      print(self._final_line(summary), flush=True)
      if note := precise_statistics_note(summary):
        print(note, flush=True)
    else:
      acc = summary["final_eval_accuracy"]
      print(
        f"process {self.layout.process_index}/{self.layout.process_count} {status} at "
        f"step {self.step}: final eval accuracy "
        f"{'n/a' if acc is None else f'{acc:.6f}'}",
        flush=True,
      )
    self.manager.close()
    return summary

  def divergence_message(self) -> str:
    config = self.config
    return (
      f"training diverged: {self.consecutive_nonfinite} consecutive steps up to step "
      f"{self.last_nonfinite_step} had a non-finite loss or gradient "
      f"(config.max_nonfinite_steps={config.max_nonfinite_steps}); every one was "
      "skipped, so the parameters and the last checkpoint hold the last finite state. Likely "
      f"cause: a learning rate too high for this batch (base_learning_rate="
      f"{config.base_learning_rate}, lr at the last step "
      f"{float(self.lr_fn(self.opt_step(self.step - 1))):.3g}) "
      "or non-finite input data."
    )

  def _final_line(self, summary: dict) -> str:
    config = self.config
    if summary["status"] == "diverged":
      return f"{config.model}/{config.norm}: {summary['error']}"
    verb = (
      (
        f"Interrupted (signal); checkpoint saved at step {self.step}. Rerun the same command "
        "to resume."
      )
      if summary["status"] == "interrupted"
      else "Done."
    )
    acc, best = summary["final_eval_accuracy"], summary["best_eval_accuracy"]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
    return (
      f"{verb} {config.model}/{config.norm}: final eval accuracy {fmt(acc)} (best "
      f"{fmt(best)}) after {summary['epochs_completed']} epochs; summary in "
      f"{self.workdir}/summary.json"
    )
