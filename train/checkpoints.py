"""Orbax checkpoints of the training state, and SIGTERM/SIGINT handling.

A checkpoint holds (as host NumPy arrays, saved by the primary process):

* ``state``: ``step``, ``params``, ``opt_state``, ``batch_stats`` (averaged over
  all devices: the statistics to evaluate or deploy with) and
  ``batch_stats_per_device`` (stacked over all devices of all processes, in
  device order), so a resumed run continues with exactly the per-device
  statistics it had;
* ``precise_batch_stats`` (only where the run estimated them, see
  ``config.precise_stats_batches``): ``batch_stats`` with population
  ("precise") inference statistics, the alternative to deploy;
* ``checksums`` (JSON): a SHA-256 checksum of every saved item (over the
  host arrays that are saved anyway), verified when a run resumes;
* ``meta`` (JSON): the epoch, the running sums of the current epoch's
  training metrics, and the device layout.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
  "CheckpointError",
  "CheckpointManager",
  "PRECISE_STATS",
  "StopSignal",
  "checksum",
  "restore_latest",
]


class CheckpointError(ValueError):
  """No checkpoint of the workdir can be restored (each damaged one was moved aside)."""


def checksum(tree) -> str:
  """SHA-256 over the sorted SHA-256s of every leaf (its dtype, shape and bytes).

  Independent of the containers' order: a tree restored into a target
  (optax's named tuples) and the dicts saved from it give the same value.
  """
  digests = []
  for leaf in jax.tree.leaves(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    digests.append(hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest())
  return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


PRECISE_STATS = "precise_batch_stats"  # the optional checkpoint item
CHECKSUMS = "checksums"  # the item holding every item's checksum


class CheckpointManager:
  """A thin wrapper of ``ocp.CheckpointManager`` (synchronous saves)."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    # The step folders' names, given to Orbax and used to find a step's folder.
    self._name_format = ocp.step.standard_name_format()
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=False,
        step_name_format=self._name_format,
      ),
    )

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, meta: dict, extra: dict | None = None) -> bool:
    """Saves unless ``step`` is already saved; returns whether it saved.

    ``extra``: further named pytrees (e.g. :data:`PRECISE_STATS`) saved as
    their own items, which :meth:`restore` does not need. The checksum of
    every item (:func:`checksum`) is saved as the item ``checksums`` and
    verified by :meth:`restore_newest_good`.
    """
    if step in self._manager.all_steps():
      return False
    sums = {"state": checksum(state), **{name: checksum(t) for name, t in (extra or {}).items()}}
    items = {name: ocp.args.StandardSave(tree) for name, tree in (extra or {}).items()}
    items[CHECKSUMS] = ocp.args.JsonSave(sums)
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta), **items
      ),
    )
    self._manager.wait_until_finished()
    return True

  def restore(self, step: int, target):
    """Restores (state shaped like ``target``, meta) of ``step``."""
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
    )
    return restored["state"], restored["meta"]

  def restore_item(self, step: int, name: str, *, json: bool = False):
    """The extra item ``name`` saved with ``step`` (a JSON item with ``json``), or None."""
    if name not in self._manager.item_metadata(step):
      return None
    item = ocp.args.JsonRestore() if json else ocp.args.StandardRestore(None)
    return self._manager.restore(step, args=ocp.args.Composite(**{name: item}))[name]

  def restore_newest_good(self, target, check_meta=None):
    """``(step, state, meta)`` of the newest checkpoint that restores and verifies, or None.

    A checkpoint that cannot be read, or whose contents do not match the
    checksum written at save time, is reported in one line naming its step
    and moved aside to ``<checkpoints>_damaged/`` (never deleted); the next
    newest is tried. ``check_meta(meta)`` may raise to refuse a readable
    checkpoint (e.g. a different device layout) without moving it.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        meta = self.restore_meta(step)
      except Exception as e:
        self._move_aside(step, f"its metadata cannot be read ({type(e).__name__})")
        continue
      if check_meta is not None:
        check_meta(meta)
      try:
        state, meta = self.restore(step, target)
      except Exception as e:
        self._move_aside(step, f"it cannot be restored ({type(e).__name__}: {_first_line(e)})")
        continue
      expected = self._checksums(step).get("state")
      if expected is not None and checksum(state) != expected:
        self._move_aside(step, "its contents do not match the checksum written at save time")
        continue
      return step, state, meta
    return None

  def _checksums(self, step: int) -> dict:
    """The checksums saved with ``step`` ({} for checkpoints from before they existed)."""
    return self.restore_item(step, CHECKSUMS, json=True) or {}

  def _move_aside(self, step: int, reason: str) -> None:
    aside = os.path.join(self.directory + "_damaged", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.rename(ocp.step.find_step_path(self.directory, self._name_format, step=step), aside)
    self._manager.reload()
    print(
      f"warning: checkpoint at step {step} is damaged: {reason}; moved it to {aside} and "
      "trying the previous one.",
      flush=True,
    )

  def restore_meta(self, step: int):
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def close(self):
    self._manager.close()


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else ""


def restore_latest(workdir: str) -> dict:
  """The newest checkpoint of a finished ``python -m train`` run in ``workdir``.

  Returns the restored state (``params``, ``batch_stats``, ``step``, ...) as
  saved; raises a ValueError naming ``workdir`` when it holds no checkpoint.
  """
  manager = CheckpointManager(os.path.join(workdir, "checkpoints"))
  try:
    last = manager.latest_step()
    if last is None:
      raise ValueError(f"{workdir}: no checkpoint (train it first).")
    restored, _ = manager.restore(last, None)
  finally:
    manager.close()
  return restored


class StopSignal:
  """Turns SIGTERM/SIGINT into a flag the training loop polls.

  The first signal asks the loop to checkpoint and stop; a second SIGINT
  raises KeyboardInterrupt as usual. Handlers are restored on ``close``.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._event = threading.Event()
    self.signum = None
    self._old = {}
    if threading.current_thread() is threading.main_thread():
      for s in signals:
        self._old[s] = signal.signal(s, self._handle)

  def _handle(self, signum, frame):
    if self._event.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def close(self):
    for s, h in self._old.items():
      signal.signal(s, h)
    self._old = {}
