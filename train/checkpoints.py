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
* ``meta`` (JSON): the epoch, the running sums of the current epoch's
  training metrics, and the device layout.
"""

from __future__ import annotations

import os
import signal
import threading

import orbax.checkpoint as ocp

__all__ = ["CheckpointManager", "PRECISE_STATS", "StopSignal", "restore_latest"]

PRECISE_STATS = "precise_batch_stats"  # the optional checkpoint item


class CheckpointManager:
  """A thin wrapper of ``ocp.CheckpointManager`` (synchronous saves)."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
      ),
    )

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, meta: dict, extra: dict | None = None) -> bool:
    """Saves unless ``step`` is already saved; returns whether it saved.

    ``extra``: further named pytrees (e.g. :data:`PRECISE_STATS`) saved as
    their own items, which :meth:`restore` does not need.
    """
    if step in self._manager.all_steps():
      return False
    items = {name: ocp.args.StandardSave(tree) for name, tree in (extra or {}).items()}
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

  def restore_item(self, step: int, name: str):
    """The extra item ``name`` saved with ``step``, or None if it has none."""
    if not os.path.isdir(os.path.join(self.directory, str(step), name)):
      return None
    return self._manager.restore(
      step, args=ocp.args.Composite(**{name: ocp.args.StandardRestore(None)})
    )[name]

  def restore_meta(self, step: int):
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def close(self):
    self._manager.close()


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
