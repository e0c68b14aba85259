"""The run's state to and from checkpoints: :func:`restore`, :func:`save_checkpoint`.

A checkpoint holds host arrays only (:mod:`train.checkpoints`): ``step``,
``params``, ``opt_state``, the device-averaged ``batch_stats`` and every
device's own ``batch_stats_per_device`` ``[devices, ...]``. It does not
depend on the parallelism (:mod:`train.parallel` places and reads the state),
so a checkpoint written under ``pmap`` resumes under ``mesh`` and back.

The resume guard compares the run's config with the saved one once: with
``config.json`` before anything is loaded (:func:`check_saved_config`), or,
where that file is gone, with the checkpoint's own copy as it is restored.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from train import checkpoints as ckpt_lib
from train.epoch import EpochSums, Progress
from train.setup import RunSetup, stacked
from train.validation import ConfigMismatchError, check_resume_compatible, config_json

__all__ = ["check_saved_config", "restore", "save_checkpoint"]


def check_saved_config(config, workdir: str) -> bool:
  """Refuses, before anything is loaded, to resume a workdir whose run differs in what matters.

  Returns whether ``config.json`` was there to compare with (else a checkpoint's
  copy is compared as it is restored).
  """
  path = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "config.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    check_resume_compatible(json.load(f)["config"], config)
  return True


def restore(s: RunSetup, *, config_checked: bool) -> Progress | None:
  """The newest good checkpoint's state on the devices, or None when the run has none.

  ``config_checked``: :func:`check_saved_config` compared the config already
  (else the checkpoint's own copy is compared here). Every checkpoint damaged
  is a :class:`train.checkpoints.CheckpointError`.
  """
  layout, host = s.layout, s.initial
  target = {
    "step": np.asarray(host.step),
    "params": host.params,
    "opt_state": host.opt_state,
    "batch_stats": host.batch_stats,
    "batch_stats_per_device": stacked(host.batch_stats, layout.devices),
  }
  had_checkpoints = bool(s.manager.all_steps())
  found = s.manager.restore_newest_good(
    target, check_meta=lambda meta: _check_meta(s, meta, compare_config=not config_checked)
  )
  if found is None:
    if had_checkpoints:
      raise ckpt_lib.CheckpointError(
        f"every checkpoint in {s.manager.directory} is damaged (each was moved to "
        f"{s.manager.directory}_damaged/); nothing to resume from. Start over with a new "
        "--workdir (or move the damaged ones back to inspect them)."
      )
    return None
  latest, restored, meta = found
  host = host.replace(**{k: restored[k] for k in ("step", "params", "opt_state", "batch_stats")})
  lo = layout.process_index * layout.local_devices  # this process's devices' rows
  rows = slice(lo, lo + layout.local_devices)
  per_device = jax.tree.map(lambda x: np.asarray(x)[rows], restored["batch_stats_per_device"])
  if s.is_main:
    print(f"Resuming from step {latest} (epoch {latest // s.spe + 1}) in {s.workdir}", flush=True)
  state = s.parallel.place(host, per_device)
  step = int(s.parallel.first(state.step))
  return Progress(state=state, step=step, start_step=step, sums=EpochSums(**meta["accum"]))


# run_info keys that older checkpoints lack (they resume as before).
RUN_INFO_ADDED = ("train_examples",)


def _check_meta(s: RunSetup, meta: dict, *, compare_config: bool) -> None:
  """Refuses a readable checkpoint of a different layout (or config, ``compare_config``)."""
  saved = meta["run_info"]
  # Keys added to run_info later are compared only where the checkpoint recorded them.
  expected = {k: v for k, v in s.run_info.items() if k in saved or k not in RUN_INFO_ADDED}
  if saved != expected:
    raise ConfigMismatchError(
      f"Refusing to resume: the checkpoint was written with {saved}, this run "
      f"has {expected} (a different device count changes the global batch and the "
      "data order; so does a different number of training images)."
    )
  if compare_config and "config" in meta:  # config.json is gone: the checkpoint's copy decides
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
