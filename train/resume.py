"""The run's state to and from checkpoints: :func:`restore_or_start`, :func:`save_checkpoint`.

A checkpoint holds host arrays only (:mod:`train.checkpoints`): ``step``,
``params``, ``opt_state``, the device-averaged ``batch_stats`` and every
device's own ``batch_stats_per_device`` ``[devices, ...]``. It does not
depend on the parallelism (:mod:`train.parallel` places and reads the state),
so a checkpoint written under ``pmap`` resumes under ``mesh`` and back.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from train import checkpoints as ckpt_lib
from train import init_from, steps
from train.epoch import EpochSums, Progress
from train.setup import RunSetup
from train.validation import ConfigMismatchError, check_resume_compatible, config_json
from train.writer import save_json

__all__ = ["check_saved_config", "restore_or_start", "save_checkpoint"]


def check_saved_config(config, workdir: str) -> None:
  """Refuses, before anything is loaded, to resume a workdir whose run differs in what matters."""
  path = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "config.json")
  if os.path.exists(path):
    with open(path) as f:
      check_resume_compatible(json.load(f)["config"], config)


def restore_or_start(s: RunSetup) -> Progress:
  """The state on the devices: from the newest good checkpoint, or fresh (then ``config.json``)."""
  config, layout = s.config, s.layout
  config_path = os.path.join(s.workdir, "config.json")
  tx = steps.make_optimizer(config, s.lr_fn)
  host = jax.device_get(
    steps.create_train_state(
      s.model, tx, s.data.image_shape, batch_size=layout.per_device_batch_size, seed=config.seed
    )
  )
  start_record = None
  if s.source is not None:  # config.init_from: the source's network, converted to this norm
    params, stats, start_record = init_from.initial_variables(
      config, s.source, host.params, host.batch_stats, s.data.num_classes
    )
    host = host.replace(params=params, batch_stats=stats)
  per_device = _stacked(host.batch_stats, layout.local_devices)  # a fresh start: all alike
  target = {
    "step": np.asarray(host.step),
    "params": host.params,
    "opt_state": host.opt_state,
    "batch_stats": host.batch_stats,
    "batch_stats_per_device": _stacked(host.batch_stats, layout.devices),
  }
  had_checkpoints = bool(s.manager.all_steps())
  found = s.manager.restore_newest_good(target, check_meta=lambda meta: _check_meta(s, meta))
  sums = EpochSums()
  if found is not None:
    latest, restored, meta = found
    host = host.replace(**{k: restored[k] for k in ("step", "params", "opt_state", "batch_stats")})
    lo = layout.process_index * layout.local_devices  # this process's devices' rows
    rows = slice(lo, lo + layout.local_devices)
    per_device = jax.tree.map(lambda x: np.asarray(x)[rows], restored["batch_stats_per_device"])
    sums = EpochSums(**meta["accum"])
    if s.is_main:
      print(f"Resuming from step {latest} (epoch {latest // s.spe + 1}) in {s.workdir}", flush=True)
  elif had_checkpoints:
    raise ckpt_lib.CheckpointError(
      f"every checkpoint in {s.manager.directory} is damaged (each was moved to "
      f"{s.manager.directory}_damaged/); nothing to resume from. Start over with a new "
      "--workdir (or move the damaged ones back to inspect them)."
    )
  if found is None and s.is_main:
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
    save_json(config_path, record)
  state = s.parallel.place(host, per_device)
  step = int(s.parallel.first(state.step))
  return Progress(state=state, step=step, start_step=step, sums=sums)


def _stacked(tree, n: int):
  """``n`` copies of every leaf, stacked: ``[n, ...]``."""
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)).copy(), tree)


def _check_meta(s: RunSetup, meta: dict) -> None:
  """Refuses a readable checkpoint of a different layout or config (not damage)."""
  if meta["run_info"] != s.run_info:
    raise ConfigMismatchError(
      f"Refusing to resume: the checkpoint was written with {meta['run_info']}, this run "
      f"has {s.run_info} (a different device count changes the global batch and the "
      "data order)."
    )
  if "config" in meta:  # config.json may be gone: the checkpoint's own copy decides
    check_resume_compatible(meta["config"], s.config)


def save_checkpoint(s: RunSetup, p: Progress, mean_stats, precise_stats=None) -> None:
  """Saves the state at ``p.step``: device-averaged and per-device statistics, the epoch's sums."""
  host = jax.device_get(
    s.parallel.first({"params": p.state.params, "opt_state": p.state.opt_state})
  )
  item = {
    "step": np.asarray(p.step, np.int32),  # the dtype of TrainState.step
    **host,
    "batch_stats": s.parallel.first(mean_stats),
    "batch_stats_per_device": s.parallel.all_rows(p.state.batch_stats),
  }
  extra = None
  if precise_stats is not None:  # the deployable alternative to item["batch_stats"]
    extra = {ckpt_lib.PRECISE_STATS: jax.device_get(s.parallel.first(precise_stats))}
  meta = {
    "accum": dataclasses.asdict(p.sums),
    "run_info": s.run_info,
    "epoch": p.step // s.spe,
    "config": config_json(s.config),
  }
  s.manager.save(p.step, item, meta, extra=extra)
