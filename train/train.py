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
  keep those too, so a resumed run continues bit-for-bit).

Files in the workdir: ``config.json``, ``checkpoints/``, ``metrics.jsonl``
(one JSON line per epoch), ``tensorboard/``, ``summary.json``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

import mbn_jax
from mbn_jax import fast_conv, schedules
from train import checkpoints as ckpt_lib
from train import input_pipeline, models

__all__ = ["train_and_evaluate", "build_model", "validate_config", "RESUME_MAY_CHANGE", "ConfigMismatchError"]

# Config fields a resumed run may change (dotted names; prefixes end with '.').
RESUME_MAY_CHANGE = (
    "num_epochs", "log_every_steps", "eval_every_epochs", "checkpoint_every_epochs",
    "keep_checkpoints", "progress_bar", "tensorboard", "eval_per_device_batch_size",
    "dataset.data_dir", "dataset.root", "dataset.download", "dataset.cache_dir", "distributed.", "norms",
    "simulate_preemption_at_step", "conv", "precise_stats_batches", "precise_stats_batch_size",
    "precise_stats_every_eval",
)
# The precise-statistics batches are drawn from their own stream (never the
# training order): seed + this offset.
PRECISE_STATS_SEED_OFFSET = 7919
CONVS = ("auto", "xla", "fast")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ConfigMismatchError(ValueError):
  """The workdir holds a run whose config differs in a field that matters."""


class TrainState(train_state.TrainState):
  batch_stats: Any = None


# ----------------------------------------------------------------------------
# Validation (before any data is read or anything is compiled).


def _positive(config, name):
  value = config
  for part in name.split("."):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
    raise ValueError(f"config.{name} must be a positive number, got {value!r}.")


def validate_config(config, workdir: str | None = None) -> dict:
  """Checks names, sizes and the device split; returns the batch layout."""
  if workdir is not None:
    parent = os.path.dirname(os.path.abspath(os.path.expanduser(workdir)))
    if not os.path.isdir(parent):
      raise FileNotFoundError(
          f"The parent directory of --workdir={workdir!r} does not exist ({parent!r}). "
          "Create it first (mkdir -p), or pick another workdir.")
  if config.get("norms"):
    norms = [n.strip() for n in config.norms.split(",") if n.strip()]
    if not norms:
      raise ValueError(f"config.norms={config.norms!r} names no norm.")
  else:
    norms = [config.norm]
  valid_norms = models.norm_names()
  for n in norms + [config.norm]:
    if n not in valid_norms:
      raise ValueError(f"Unknown norm {n!r}: choose one of {', '.join(valid_norms)}.")
  valid_models = models.model_names()
  if config.model not in valid_models:
    raise ValueError(f"Unknown model {config.model!r}: choose one of {', '.join(valid_models)}.")
  if config.input_variant not in ("cifar", "mini_imagenet"):
    raise ValueError(f"config.input_variant must be 'cifar' or 'mini_imagenet', got {config.input_variant!r}.")
  if config.get("conv", "xla") not in CONVS:
    raise ValueError(f"config.conv must be one of {CONVS} ('auto': mbn_jax.fast_conv on CPU, "
                     f"XLA's conv elsewhere), got {config.conv!r}.")
  if config.dtype not in DTYPES:
    raise ValueError(f"config.dtype must be one of {sorted(DTYPES)}, got {config.dtype!r}.")
  if config.lr_batch_size not in ("per_device", "global"):
    raise ValueError(f"config.lr_batch_size must be 'per_device' or 'global', got {config.lr_batch_size!r}.")
  for name in ("per_device_batch_size", "eval_per_device_batch_size", "num_epochs",
               "mbn_total_epochs", "ideal_batch_size", "lr_reference_batch_size",
               "lr_decay_epochs", "log_every_steps", "eval_every_epochs",
               "checkpoint_every_epochs", "keep_checkpoints", "precise_stats_batch_size"):
    _positive(config, name)
  k = config.precise_stats_batches
  if isinstance(k, bool) or not isinstance(k, int) or k < 0:
    raise ValueError(f"config.precise_stats_batches must be an int >= 0 (0: off), got {k!r}.")
  for name in ("per_device_batch_size", "eval_per_device_batch_size", "num_epochs",
               "mbn_total_epochs", "ideal_batch_size", "precise_stats_batch_size"):
    if not isinstance(config[name], int):
      raise TypeError(f"config.{name} must be an int, got {config[name]!r}.")
  if not 0.0 < config.tau0 < 1.0:
    raise ValueError(f"config.tau0 must lie in (0, 1), got {config.tau0}.")
  if config.base_learning_rate <= 0 or config.weight_decay < 0 or not 0 <= config.momentum < 1:
    raise ValueError("Need base_learning_rate > 0, weight_decay >= 0 and 0 <= momentum < 1.")
  input_pipeline.validate_dataset_config(config.dataset)
  devices = jax.device_count()
  m = config.per_device_batch_size
  if config.global_batch_size not in (-1, None):
    g = config.global_batch_size
    if isinstance(g, bool) or not isinstance(g, int) or g <= 0:
      raise ValueError(f"config.global_batch_size must be a positive int (or -1), got {g!r}.")
    if g % devices:
      raise ValueError(
          f"config.global_batch_size={g} is not divisible among the {devices} devices; "
          f"use a multiple of {devices}, or set per_device_batch_size instead.")
    m = g // devices
  return {"per_device_batch_size": m, "devices": devices, "global_batch_size": m * devices,
          "local_devices": jax.local_device_count(), "process_count": jax.process_count(),
          "process_index": jax.process_index(), "norms": norms}


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def _config_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def check_resume_compatible(saved: dict, config) -> None:
  """Raises ConfigMismatchError if a field outside RESUME_MAY_CHANGE differs.

  A field that the saved config lacks (added to the program after the run
  started) is compatible when it has its default value (configs/default.py):
  the run started without it, i.e. with the default behaviour.
  """
  from configs import default
  a, b = _flatten(saved), _flatten(_config_json(config))
  defaults = _flatten(_config_json(default.get_config()))
  bad = []
  for key in sorted(set(a) | set(b)):
    if any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUME_MAY_CHANGE):
      continue
    if key not in a and key in defaults and b.get(key) == defaults[key]:
      continue
    if a.get(key, "<missing>") != b.get(key, "<missing>"):
      bad.append(f"  {key}: workdir has {a.get(key, '<missing>')!r}, now {b.get(key, '<missing>')!r}")
  if bad:
    raise ConfigMismatchError(
        "Refusing to resume: the workdir's config.json differs in fields that change the run:\n"
        + "\n".join(bad) + "\nUse a new --workdir, or restore those values. Only these may "
        f"change on resume: {', '.join(RESUME_MAY_CHANGE)}.")


# ----------------------------------------------------------------------------
# The steps.


def learning_rate_fn(config, per_device_batch: int, global_batch: int, steps_per_epoch: int):
  """The step-decay learning rate, an optax schedule (a pure ``step -> lr`` function).

  lr(step) = base · factor^⌊step / (lr_decay_epochs · steps_per_epoch)⌋ with
  base = ``base_learning_rate`` · m / ``lr_reference_batch_size`` (m: the
  per-device or global batch, ``lr_batch_size``) and factor =
  ``lr_decay_factor``: the paper's ÷10 every 60 of 200 epochs is
  ``lr_decay_epochs=60``; a 10-epoch run of the same shape uses 3.
  """
  m = per_device_batch if config.lr_batch_size == "per_device" else global_batch
  base = config.base_learning_rate * m / config.lr_reference_batch_size
  return optax.exponential_decay(
      init_value=base, transition_steps=config.lr_decay_epochs * steps_per_epoch,
      decay_rate=config.lr_decay_factor, staircase=True)


def conv_function(conv: str, per_device_batch: int):
  """``config.conv`` → the convolution of every conv layer (None: XLA's).

  ``'auto'``: :func:`mbn_jax.fast_conv.auto_conv` — the fast path on CPU
  (chunked weight gradients, matmul convs for tiny layers), XLA's conv on
  GPU/TPU; ``'xla'``: always XLA's; ``'fast'``: the fast path on any backend.
  """
  if conv == "xla":
    return None
  if conv == "fast":
    return fast_conv.conv_general_dilated
  if conv == "auto":
    return fast_conv.auto_conv(per_device_batch)
  raise ValueError(f"config.conv must be one of {CONVS}, got {conv!r}.")


def build_model(config, *, num_classes: int, steps_per_epoch: int,
                per_device_batch: int | None = None):
  """The configured network, its norms built from the config's norm options.

  ``axis_name='batch'`` (the pmap axis) when ``sync_batch_stats``; the
  model's dtype reaches its norms through ``create_model(dtype=...)``; its
  convolutions are ``config.conv``'s (:func:`conv_function` for
  ``per_device_batch``, default ``config.per_device_batch_size``; runs saved
  before that field existed used XLA's).
  """
  norm_options = dict(
      axis_name="batch" if config.sync_batch_stats else None,
      total_epochs=config.mbn_total_epochs,
      steps_per_epoch=steps_per_epoch, ideal_batch_size=config.ideal_batch_size,
      tau0=config.tau0, r_max=config.r_max, d_max=config.d_max,
      warmup_steps=config.brn_warmup_steps, bn_momentum=config.bn_momentum)
  conv = conv_function(config.get("conv", "xla"),
                       per_device_batch or config.per_device_batch_size)
  return models.create_model(
      config.model, num_classes=num_classes, norm=config.norm,
      input_variant=config.input_variant, dtype=DTYPES[config.dtype],
      conv_general_dilated=conv, **norm_options)


class Steps:
  """The pmapped train/eval steps; counts how often the train step is traced."""

  def __init__(self, model, lr_fn, lam_fn):
    self.model = model
    self.lr_fn = lr_fn
    self.lam_fn = lam_fn
    self.train_traces = 0
    self.p_train = jax.pmap(self._train, axis_name="batch", donate_argnums=(0,))
    self.p_eval = jax.pmap(self._eval, axis_name="batch")
    self._p_mean = jax.pmap(lambda t: jax.lax.pmean(t, "batch"), axis_name="batch")

  def precise_stats(self, params, mean_stats, batches):
    """Population statistics (:func:`mbn_jax.precise_batch_stats`) pooled over every device.

    Returns the device-averaged ``mean_stats`` with every BN/MBN/BReN layer's
    ``mean``/``var`` replaced by its population statistics: the complete
    ``batch_stats`` to evaluate or deploy with (replicated on every device).
    """
    return mbn_jax.precise_batch_stats(
        self._estimation_fn, {"params": params, "batch_stats": mean_stats}, batches,
        axis_name="batch")

  def _estimation_fn(self, variables, batch):
    return self.model.apply(variables, batch["image"], train=True, step=0,
                            mutable=["batch_stats"])

  def p_mean(self, tree):
    """Averages the (per-device) batch_stats over all devices; {} stays {}."""
    return self._p_mean(tree) if jax.tree.leaves(tree) else tree

  def _train(self, state, batch, stop):
    self.train_traces += 1  # Python side effect: runs once per trace.

    def loss_fn(params):
      logits, updates = self.model.apply(
          {"params": params, "batch_stats": state.batch_stats}, batch["image"],
          train=True, step=state.step, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, "batch")
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    metrics = jax.lax.pmean({"loss": loss, "accuracy": accuracy}, "batch")
    metrics["lr"] = self.lr_fn(state.step)
    metrics["lambda"] = self.lam_fn(state.step)
    metrics["stop"] = jax.lax.psum(stop, "batch")
    return new_state, metrics

  def _eval(self, variables, batch):
    logits = self.model.apply(variables, batch["image"], train=False, step=None)
    mask = batch["mask"].astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return jax.lax.psum({"loss": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask),
                         "count": jnp.sum(mask)}, "batch")


# ----------------------------------------------------------------------------
# Host <-> device helpers (pmapped values carry a leading local-device axis).


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
        data, per_device_batch_size=config.precise_stats_batch_size,
        local_devices=layout["local_devices"], process_index=layout["process_index"],
        process_count=layout["process_count"], seed=config.seed + PRECISE_STATS_SEED_OFFSET,
        augment=config.dataset.augment, pad=config.dataset.crop_padding)
  except ValueError as e:
    raise ValueError(f"config.precise_stats_batch_size={config.precise_stats_batch_size} per "
                     f"device: {e} Use a smaller precise_stats_batch_size.") from None
  passes = -(-config.precise_stats_batches // stream.steps_per_epoch)
  for i in range(config.precise_stats_batches):
    rep, index = divmod(i, stream.steps_per_epoch)
    yield {"image": stream.batch(epoch * passes + rep, index)["image"]}


def _replicate(tree, n):
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)).copy(), tree)


def _local_rows(x) -> np.ndarray:
  """This process's per-device values of a pmapped array, in device order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def _first(tree):
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)


def _all_rows(tree):
  local = jax.tree.map(_local_rows, tree)
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils
  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), local)


# ----------------------------------------------------------------------------
# Logging.


class _Writer:
  """metrics.jsonl + TensorBoard, on process 0 only."""

  def __init__(self, workdir, enabled, tensorboard, resume_step):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if not enabled:
      return
    if os.path.exists(self.path):  # Drop lines written after the checkpoint we resume from.
      with open(self.path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(lines)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, record: dict):
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tb is not None:
      for k, v in record.items():
        if k not in ("step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool):
          self.tb.add_scalar(k, float(v), global_step=record["step"])
      self.tb.flush()


def _save_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Training.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates ``config`` in ``workdir``; returns the summary dict.

  With ``config.norms='bn,mbn'`` trains one run per norm into
  ``workdir/<norm>`` and prints their accuracies side by side.
  """
  layout = validate_config(config, workdir)
  if len(layout["norms"]) > 1 or config.get("norms"):
    return _compare(config, workdir, layout["norms"])
  return _train_one(config, workdir, layout)


def _compare(config, workdir, norms):
  os.makedirs(workdir, exist_ok=True)
  results = {}
  for norm in norms:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.norm = norm
    sub.norms = ""
    results[norm] = _train_one(sub, os.path.join(workdir, norm), validate_config(sub, workdir))
    if results[norm]["status"] != "completed":  # Preempted: stop here; rerun resumes.
      return {"per_device_batch_size": config.per_device_batch_size, "runs": results,
              "status": "interrupted"}
  rows = [("norm", "eval acc", "best eval acc", "train acc", "epochs", "time (s)")]
  for norm, s in results.items():
    rows.append((norm, f"{s['final_eval_accuracy']:.4f}", f"{s['best_eval_accuracy']:.4f}",
                 f"{s['final_train_accuracy']:.4f}", str(s["epochs_completed"]),
                 f"{s['wall_time_s']:.0f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  table = "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)
  m = config.per_device_batch_size
  header = (f"{config.model} on {config.dataset.source}:{config.dataset.name}, "
            f"per-device batch {m}, {jax.device_count()} device(s):")
  comparison = {"per_device_batch_size": m, "runs": results, "table": table}
  if jax.process_index() == 0:
    print("\n" + header + "\n" + table, flush=True)
    _save_json(os.path.join(workdir, "comparison.json"), comparison)
  return comparison


def _train_one(config, workdir, layout) -> dict:
  t_start = time.time()
  process_index, process_count = layout["process_index"], layout["process_count"]
  local_devices, devices = layout["local_devices"], layout["devices"]
  m, global_batch = layout["per_device_batch_size"], layout["global_batch_size"]
  is_main = process_index == 0
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)

  # The config: refuse to resume a run that differs in what matters.
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      check_resume_compatible(json.load(f)["config"], config)

  data = input_pipeline.load_dataset(config.dataset)
  batches = input_pipeline.TrainBatches(
      data, per_device_batch_size=m, local_devices=local_devices,
      process_index=process_index, process_count=process_count, seed=config.seed,
      augment=config.dataset.augment, pad=config.dataset.crop_padding)
  spe = batches.steps_per_epoch
  stats_batch = m * devices if config.sync_batch_stats else m

  model = build_model(config, num_classes=data.num_classes, steps_per_epoch=spe,
                      per_device_batch=m)

  lr_fn = learning_rate_fn(config, m, global_batch, spe)
  lam_fn = functools.partial(
      schedules.train_momentum, batch_size=stats_batch, total_epochs=config.mbn_total_epochs,
      steps_per_epoch=spe, ideal_batch_size=config.ideal_batch_size)
  tx = optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(lr_fn, momentum=config.momentum or None, nesterov=config.nesterov))

  dummy = jnp.zeros((m,) + data.image_shape, jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(config.seed), dummy)
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                            batch_stats=variables.get("batch_stats", {}))
  host_state = jax.device_get(state)
  target = {"step": np.asarray(host_state.step), "params": host_state.params,
            "opt_state": host_state.opt_state, "batch_stats": host_state.batch_stats,
            "batch_stats_per_device": _replicate(host_state.batch_stats, devices)}

  manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=config.keep_checkpoints)
  run_info = {"devices": devices, "processes": process_count, "steps_per_epoch": spe,
              "per_device_batch_size": m, "global_batch_size": global_batch}
  accum = {"loss": 0.0, "accuracy": 0.0, "count": 0}
  latest = manager.latest_step()
  per_device_stats = None
  if latest is not None:
    meta = manager.restore_meta(latest)
    if meta["run_info"] != run_info:
      raise ConfigMismatchError(
          f"Refusing to resume: the checkpoint was written with {meta['run_info']}, this run has "
          f"{run_info} (a different device count changes the global batch and the data order).")
    restored, meta = manager.restore(latest, target)
    host_state = host_state.replace(step=restored["step"], params=restored["params"],
                                    opt_state=restored["opt_state"],
                                    batch_stats=restored["batch_stats"])
    rows = slice(process_index * local_devices, (process_index + 1) * local_devices)
    per_device_stats = jax.tree.map(lambda x: np.asarray(x)[rows], restored["batch_stats_per_device"])
    accum = meta["accum"]
    if is_main:
      print(f"Resuming from step {latest} (epoch {latest // spe + 1}) in {workdir}", flush=True)
  elif is_main:
    _save_json(config_path, {"config": _config_json(config), "run_info": run_info})
  start_step = int(host_state.step)

  rstate = _replicate(host_state, local_devices)
  if per_device_stats is not None:
    rstate = rstate.replace(batch_stats=per_device_stats)
  steps = Steps(model, lr_fn, lam_fn)
  # Onto the devices, laid out as the train step's outputs are, so the first
  # step does not trace twice (NumPy inputs and device outputs differ).
  rstate = jax.pmap(lambda t: t, axis_name="batch")(rstate)
  writer = _Writer(workdir, is_main, config.tensorboard, start_step)
  stop = ckpt_lib.StopSignal()
  if is_main:
    print(f"{config.model}/{config.norm}: {data.description}; {devices} device(s) on "
          f"{process_count} process(es), per-device batch m={m}, global batch {global_batch}, "
          f"{spe} steps/epoch, {config.num_epochs} epochs, seed {config.seed}", flush=True)

  def checkpoint(step, mean_stats, precise_stats=None):
    host = jax.device_get(_first({"params": rstate.params, "opt_state": rstate.opt_state}))
    item = {"step": np.asarray(step), **host, "batch_stats": _first(mean_stats),
            "batch_stats_per_device": _all_rows(rstate.batch_stats)}
    extra = None
    if precise_stats is not None:  # the deployable alternative to item["batch_stats"]
      extra = {ckpt_lib.PRECISE_STATS: jax.device_get(_first(precise_stats))}
    manager.save(step, item, {"accum": accum, "run_info": run_info, "epoch": step // spe},
                 extra=extra)

  def evaluate(mean_stats):
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    variables = {"params": rstate.params, "batch_stats": mean_stats}
    for batch in input_pipeline.eval_batches(
        data, per_device_batch_size=config.eval_per_device_batch_size,
        local_devices=local_devices, process_index=process_index, process_count=process_count):
      out = _first(steps.p_eval(variables, batch))
      for k in sums:
        sums[k] += float(out[k])
    return {"eval_loss": sums["loss"] / sums["count"], "eval_accuracy": sums["correct"] / sums["count"]}

  from tqdm import tqdm
  stop_flag = np.zeros((local_devices,), np.int32)
  history, interrupted, step = [], False, start_step
  last_eval = {}
  try:
    for epoch in range(start_step // spe, config.num_epochs):
      first = step - epoch * spe
      bar = tqdm(total=spe, initial=first, desc=f"epoch {epoch + 1}/{config.num_epochs}",
                 disable=not (config.progress_bar and is_main), dynamic_ncols=True, leave=True)
      t_epoch, done_here, pending, lam = time.time(), 0, [], 0.0

      def consume(metrics):
        nonlocal lam
        mh = _first(metrics)
        accum["loss"] += float(mh["loss"])
        accum["accuracy"] += float(mh["accuracy"])
        accum["count"] += 1
        lam = float(mh["lambda"])
        return int(mh["stop"]) > 0

      for batch in batches.epoch(epoch, first):
        stop_flag[:] = int(stop.requested)
        rstate, metrics = steps.p_train(rstate, batch, stop_flag)
        step += 1
        done_here += 1
        if step == config.simulate_preemption_at_step:  # Tests: a real SIGTERM to ourselves.
          os.kill(os.getpid(), signal.SIGTERM)
        pending.append(metrics)
        if len(pending) > 1 and consume(pending.pop(0)):
          interrupted = True
        bar.update(1)
        if done_here % config.log_every_steps == 0 or step % spe == 0:
          n = max(accum["count"], 1)
          post = {"loss": f"{accum['loss'] / n:.4f}", "acc": f"{accum['accuracy'] / n:.4f}",
                  "img/s": f"{done_here * global_batch / (time.time() - t_epoch):.0f}"}
          if config.norm == "mbn":
            post["λ"] = f"{lam:.4f}"
          bar.set_postfix(post)
        if interrupted:
          break
      for metrics in pending:
        interrupted = consume(metrics) or interrupted
      bar.close()
      epoch_time = time.time() - t_epoch
      if step % spe != 0:  # Stopped mid-epoch.
        interrupted = True
        break
      n = max(accum["count"], 1)
      record = {"step": step, "epoch": epoch + 1, "train_loss": accum["loss"] / n,
                "train_accuracy": accum["accuracy"] / n, "learning_rate": float(lr_fn(step - 1)),
                "lambda": float(lam_fn(step - 1)) if config.norm == "mbn" else None,
                "images_per_sec": done_here * global_batch / max(epoch_time, 1e-9)}
      last_epoch = epoch + 1 == config.num_epochs
      mean_stats = precise_stats = None
      if (epoch + 1) % config.eval_every_epochs == 0 or last_epoch or interrupted:
        mean_stats = steps.p_mean(rstate.batch_stats)
        last_eval = evaluate(mean_stats)
        record.update(last_eval)
        if config.get("precise_stats_batches", 0) and not interrupted and (
            last_epoch or config.get("precise_stats_every_eval", False)):
          precise_stats = steps.precise_stats(
              rstate.params, mean_stats, precise_stats_stream(config, data, layout, epoch))
          record.update({f"{k}_precise": v for k, v in evaluate(precise_stats).items()})
          last_eval.update({f"{k}_precise": record[f"{k}_precise"]
                            for k in ("eval_loss", "eval_accuracy")})
      writer.write(record)
      history.append(record)
      if is_main and not config.progress_bar:
        print(json.dumps(record), flush=True)
      elif is_main and "eval_accuracy" in record:
        precise_note = (f" (precise statistics: {record['eval_accuracy_precise']:.4f})"
                        if "eval_accuracy_precise" in record else "")
        tqdm.write(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc "
                   f"{record['train_accuracy']:.4f}, eval loss {record['eval_loss']:.4f} acc "
                   f"{record['eval_accuracy']:.4f}{precise_note}")
      accum = {"loss": 0.0, "accuracy": 0.0, "count": 0}
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or last_epoch or interrupted:
        checkpoint(step, mean_stats if mean_stats is not None else steps.p_mean(rstate.batch_stats),
                   precise_stats)
      if interrupted:
        break
    if interrupted and step % spe != 0:
      checkpoint(step, steps.p_mean(rstate.batch_stats))
  finally:
    stop.close()

  # The summary (over the whole run, resumed parts included). Every process
  # takes the same branches here: an evaluation is a collective.
  if not interrupted and not last_eval:
    last_eval = evaluate(steps.p_mean(rstate.batch_stats))
  all_records = list(history)
  if is_main and os.path.exists(writer.path):
    with open(writer.path) as f:
      all_records = [json.loads(line) for line in f if line.strip()]
  evals = [r["eval_accuracy"] for r in all_records if r.get("eval_accuracy") is not None]
  if last_eval and (not evals or evals[-1] != last_eval["eval_accuracy"]):
    evals.append(last_eval["eval_accuracy"])
  final = all_records[-1] if all_records else {}
  summary = {
      "status": "interrupted" if interrupted else "completed",
      "step": step, "epochs_completed": step // spe, "num_epochs": config.num_epochs,
      "final_eval_accuracy": (last_eval or {}).get("eval_accuracy", evals[-1] if evals else float("nan")),
      "best_eval_accuracy": max(evals) if evals else float("nan"),
      "final_eval_loss": (last_eval or {}).get("eval_loss", final.get("eval_loss")),
      "final_eval_accuracy_precise": (last_eval or {}).get("eval_accuracy_precise"),
      "final_train_accuracy": final.get("train_accuracy", float("nan")),
      "final_train_loss": final.get("train_loss"),
      "seed": config.seed, "data_order_seed": config.seed, "init_seed": config.seed,
      "model": config.model, "norm": config.norm, "dataset": data.description,
      "train_step_traces": steps.train_traces, "wall_time_s": time.time() - t_start,
      **run_info,
  }
  if interrupted:
    summary["resume_hint"] = "Rerun the same command with the same --workdir to resume."
  if is_main:
    _save_json(os.path.join(workdir, "summary.json"), {**summary, "config": _config_json(config)})
    verb = (f"Interrupted (signal); checkpoint saved at step {step}. Rerun the same command "
            "to resume.") if interrupted else "Done."
    print(f"{verb} {config.model}/{config.norm}: final eval accuracy "
          f"{summary['final_eval_accuracy']:.4f} (best {summary['best_eval_accuracy']:.4f}) after "
          f"{summary['epochs_completed']} epochs; summary in {workdir}/summary.json", flush=True)
  else:
    print(f"process {process_index}/{process_count} {summary['status']} at step {step}: final "
          f"eval accuracy {summary['final_eval_accuracy']:.6f}", flush=True)
  manager.close()
  return summary
