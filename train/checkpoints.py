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
* ``checksums`` (JSON): a SHA-256 checksum of every other item (``state``,
  ``precise_batch_stats``: over the host arrays that are saved anyway;
  ``meta``: over its canonical JSON), verified when a run resumes;
* ``meta`` (JSON): the epoch, the running sums of the current epoch's
  training metrics, the device layout and the run's config.

Every item is covered when a run resumes (:meth:`CheckpointManager.restore_newest_good`):
``checksums`` must be there, readable and name every other item on disk;
``state``, ``precise_batch_stats`` and ``meta`` must match it (checkpoints
written before ``meta`` had a checksum are checked for its structure only);
``meta`` must have its fields with sensible values and ``state`` finite
arrays. A checkpoint that fails any of this is moved aside and the next
newest is tried. Saving refuses non-finite arrays (:class:`NonFiniteStateError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import hashlib
import json
import logging as std_logging
import math
import os
import shutil
import signal
import threading
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from train import cli

__all__ = [
  "CheckpointError",
  "CheckpointManager",
  "NonFiniteStateError",
  "PRECISE_STATS",
  "StopSignal",
  "checksum",
  "json_checksum",
  "nonfinite_leaves",
  "restore_latest",
]


class CheckpointError(ValueError):
  """No checkpoint of the workdir can be restored (each damaged one was moved aside)."""


class NonFiniteStateError(CheckpointError):
  """A checkpoint about to be saved holds NaN/±inf: refused, the previous ones stay."""


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


def json_checksum(obj) -> str:
  """SHA-256 of ``obj``'s canonical JSON (sorted keys), as it reads back from a JSON item."""
  canonical = json.dumps(json.loads(json.dumps(obj)), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(canonical.encode()).hexdigest()


def nonfinite_leaves(tree) -> list[str]:
  """The paths (``['params']['w']``) of the floating-point leaves of ``tree`` with NaN/±inf."""
  bad = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.asarray(leaf)
    if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
      bad.append(jax.tree_util.keystr(path))
  return bad


PRECISE_STATS = "precise_batch_stats"  # the optional checkpoint item
CHECKSUMS = "checksums"  # the item holding every other item's checksum
META = "meta"
# Orbax writes a step into the folder <step>.orbax-checkpoint-tmp, then renames it to <step>.
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_ACCUM_FIELDS = {"loss": float, "accuracy": float, "count": int, "nonfinite": int}


def _meta_problem(meta) -> str | None:
  """What is wrong with a checkpoint's ``meta`` (None: it has every field, sensibly valued)."""
  if not isinstance(meta, dict):
    return f"it is a {type(meta).__name__}, not a JSON object"
  epoch = meta.get("epoch")
  if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
    return f"epoch is {epoch!r}, not an int >= 0"
  accum = meta.get("accum")
  if not isinstance(accum, dict) or set(accum) != set(_ACCUM_FIELDS):
    return f"accum is {accum!r}, not the epoch sums {sorted(_ACCUM_FIELDS)}"
  for name, kind in _ACCUM_FIELDS.items():
    v = accum[name]
    ok = (
      not isinstance(v, bool)
      and isinstance(v, (int, float) if kind is float else int)
      and math.isfinite(v)
      and (kind is float or v >= 0)
    )
    if not ok:
      return f"accum.{name} is {v!r}"
  if not isinstance(meta.get("run_info"), dict):
    return f"run_info is {meta.get('run_info')!r}, not a JSON object"
  if "config" in meta and not isinstance(meta["config"], dict):
    return f"config is {meta['config']!r}, not a JSON object"
  return None


def _checksums_problem(sums, items: set) -> str | None:
  """What is wrong with a checkpoint's ``checksums`` given the items on disk (None: fine)."""
  if not isinstance(sums, dict) or not sums:
    return f"its checksums item holds {sums!r}, not the items' checksums"
  for name, value in sums.items():
    if not (isinstance(value, str) and len(value) == 64):
      return f"its checksum of {name!r} is {value!r}, not a SHA-256"
  if "state" not in sums:
    return "its checksums item has no checksum of the state"
  missing = sorted(set(sums) - items)
  if missing:
    return f"its item(s) {missing} are missing (the checksums name them)"
  uncovered = sorted(items - set(sums) - {CHECKSUMS, META})
  if uncovered:
    return f"its item(s) {uncovered} have no checksum"
  return None


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

    A save that fails leaves nothing running and no partial step folder; on
    a full disk it raises an ``OSError`` (ENOSPC) naming the checkpoint
    directory, chained to Orbax's error.
    """
    if step in self._manager.all_steps():
      return False
    _refuse_nonfinite(step, {"state": state, **(extra or {})})
    try:
      with _background_work_ends():  # also when a write fails, e.g. on a full disk
        self._manager.save(step, args=_save_args(state, meta, extra or {}))
        self._manager.wait_until_finished()
    except BaseException as e:
      self._remove_partial(step)
      if isinstance(e, Exception) and cli.disk_full_message(e, None) is not None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.directory) from e
      raise
    return True

  def _remove_partial(self, step: int) -> None:
    """Removes what a failed save of ``step`` left: Orbax's temporary folder, never a checkpoint."""
    if jax.process_index() != 0:
      return
    name = self._name_format.build_name(step)
    for path in glob.glob(os.path.join(glob.escape(self.directory), f"{name}{_TMP_SUFFIX}*")):
      shutil.rmtree(path, ignore_errors=True)

  def restore(self, step: int, target):
    """Restores (state shaped like ``target``, meta) of ``step``."""
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
    )
    return restored["state"], restored["meta"]

  def item_names(self, step: int) -> set:
    """The names of the items saved with ``step`` (Orbax's item metadata)."""
    return set(self._manager.item_metadata(step).keys())

  def restore_item(self, step: int, name: str, *, json: bool = False):
    """The extra item ``name`` saved with ``step`` (a JSON item with ``json``), or None."""
    if name not in self.item_names(step):
      return None
    item = ocp.args.JsonRestore() if json else ocp.args.StandardRestore(None)
    return self._manager.restore(step, args=ocp.args.Composite(**{name: item}))[name]

  def restore_newest_good(self, target, check_meta=None):
    """``(step, state, meta)`` of the newest checkpoint whose every item verifies, or None.

    A checkpoint with a missing or unreadable item, a ``checksums`` item that
    does not cover every other item, contents that do not match their
    checksum, a ``meta`` without its fields or a non-finite ``state`` is
    reported in one line naming its step and moved aside to
    ``<checkpoints>_damaged/`` (never deleted); the next newest is tried.
    ``check_meta(meta)`` may raise to refuse a sound checkpoint (e.g. a
    different device layout) without moving it.
    """
    for step in sorted(self.all_steps(), reverse=True):
      found = _verified(self, step, target, check_meta)
      if isinstance(found, str):
        self._move_aside(step, found)
        continue
      return found
    return None

  def _move_aside(self, step: int, reason: str) -> None:
    path = ocp.step.find_step_path(self.directory, self._name_format, step=step)
    _move_step_aside(path, self.directory + "_damaged", step, reason)
    self._manager.reload()

  def restore_meta(self, step: int):
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def close(self):
    self._manager.close()


def _verified(manager: CheckpointManager, step: int, target, check_meta):
  """``(step, state, meta)`` if every item of ``step`` of ``manager`` verifies, else why not (a str)."""
  try:
    items = manager.item_names(step)
  except Exception as e:
    return f"its items cannot be listed ({type(e).__name__}: {_first_line(e)})"
  if CHECKSUMS not in items:
    return "its checksums item is missing"
  try:
    sums = manager.restore_item(step, CHECKSUMS, json=True)
  except Exception as e:
    return f"its checksums cannot be read ({type(e).__name__}: {_first_line(e)})"
  problem = _checksums_problem(sums, items)
  if problem:
    return problem
  assert isinstance(sums, dict)  # _checksums_problem refused anything else
  try:
    meta = manager.restore_meta(step)
  except Exception as e:
    return f"its metadata cannot be read ({type(e).__name__}: {_first_line(e)})"
  if META in sums and json_checksum(meta) != sums[META]:
    return "its metadata do not match the checksum written at save time"
  problem = _meta_problem(meta)
  if problem:
    return f"its metadata are not valid ({problem})"
  if check_meta is not None:
    check_meta(meta)
  try:
    state, meta = manager.restore(step, target)
  except Exception as e:
    return f"it cannot be restored ({type(e).__name__}: {_first_line(e)})"
  if checksum(state) != sums["state"]:
    return "its contents do not match the checksum written at save time"
  bad = nonfinite_leaves(state)
  if bad:
    return f"its state holds NaN/inf ({', '.join(bad[:3])})"
  for name in sorted(items - {CHECKSUMS, META, "state"}):
    try:
      tree = manager.restore_item(step, name)
    except Exception as e:
      return f"its item {name!r} cannot be read ({type(e).__name__}: {_first_line(e)})"
    if checksum(tree) != sums[name]:
      return f"its item {name!r} does not match the checksum written at save time"
  return step, state, meta


def _save_args(state, meta: dict, extra: dict):
  """Orbax's arguments of one save: state, meta, the extra items and every item's checksum."""
  sums = {
    "state": checksum(state),
    META: json_checksum(meta),
    **{name: checksum(t) for name, t in extra.items()},
  }
  items: dict[str, ocp.args.CheckpointArgs] = {
    name: ocp.args.StandardSave(tree) for name, tree in extra.items()
  }
  items[CHECKSUMS] = ocp.args.JsonSave(sums)
  return ocp.args.Composite(
    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta), **items
  )


# How long a failed save waits for Orbax's other writes of that save to end (then it goes on).
_BACKGROUND_TIMEOUT_S = 120.0


@contextlib.contextmanager
def _background_work_ends():
  """Orbax's background writes of one save end inside it, even when one of them fails.

  Orbax writes a checkpoint's items in threads, each running its writes in an
  event loop of its own. When one write fails (a full disk: ENOSPC), Orbax
  raises in the caller at once while the other items' threads still write;
  each thread closes its loop with TensorStore writes still pending (their
  completion then calls into the closed loop: "RuntimeError: Event loop is
  closed" tracebacks from TensorStore's threads until the interpreter exits);
  and it logs each thread's exception with its traceback. Here, while the
  save lasts, the event loops that this thread and the threads it starts
  create finish their pending tasks before they close
  (:class:`_DrainingEventLoop`), a failed save waits for the threads it
  started, and log records of a full disk are dropped (the exception itself
  reaches the caller: ``python -m train`` says it in one line). Nothing of
  the save is left running when its error propagates.
  """
  started = set(threading.enumerate())
  records = _DiskFullRecords()
  logger = absl_logging.get_absl_logger()
  logger.addFilter(records)
  try:
    with _draining_event_loops(threading.current_thread(), started):
      try:
        yield
      except BaseException:
        _join_threads_started_since(started)
        raise
  finally:
    logger.removeFilter(records)


class _DrainingEventLoop(asyncio.SelectorEventLoop):
  """An event loop whose ``close()`` first lets its pending tasks and executor threads end."""

  def close(self):
    if not self.is_running() and not self.is_closed():
      deadline = time.monotonic() + _BACKGROUND_TIMEOUT_S
      while (pending := asyncio.all_tasks(self)) and time.monotonic() < deadline:
        self.run_until_complete(asyncio.wait(pending, timeout=deadline - time.monotonic()))
        for task in pending:  # retrieved: no "exception was never retrieved" log at exit
          if task.done() and not task.cancelled():
            task.exception()
      self.run_until_complete(self.shutdown_default_executor())
    super().close()


@contextlib.contextmanager
def _draining_event_loops(saver: threading.Thread, started: set):
  """New event loops of ``saver`` and of threads not in ``started`` are :class:`_DrainingEventLoop`.

  Through asyncio's event-loop policy (deprecated from Python 3.14 on, hence
  the silenced warnings; where asyncio has none, loops are left as they are).
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    base = getattr(asyncio, "DefaultEventLoopPolicy", None)
    previous = asyncio.get_event_loop_policy() if base is not None else None
  if base is None:
    yield
    return

  class Policy(base):
    def new_event_loop(self):
      me = threading.current_thread()
      if me is saver or me not in started:
        return _DrainingEventLoop()
      return super().new_event_loop()

  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    asyncio.set_event_loop_policy(Policy())
  try:
    yield
  finally:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)
      asyncio.set_event_loop_policy(previous)


class _DiskFullRecords(std_logging.Filter):
  """Drops the log records that report a full disk (ENOSPC), in their text or exception."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and cli.disk_full_message(exc, None) is not None:
      return False
    try:
      text = record.getMessage()
    except Exception:  # a record that does not format: let its handler report that
      return True
    return cli.disk_full_message(Exception(text), None) is None


def _join_threads_started_since(started: set) -> None:
  """Waits (up to :data:`_BACKGROUND_TIMEOUT_S` in all) for the non-daemon threads not in ``started``."""
  deadline = time.monotonic() + _BACKGROUND_TIMEOUT_S
  for thread in threading.enumerate():
    if thread in started or thread.daemon or thread is threading.current_thread():
      continue
    try:
      thread.join(max(0.0, deadline - time.monotonic()))
    except Exception:  # Orbax's threads re-raise their exception in join(): the caller has one
      pass


def _move_step_aside(path, damaged_dir: str, step: int, reason: str) -> None:
  """Moves a damaged step's folder into ``damaged_dir`` (never deletes it) and says so."""
  aside = os.path.join(damaged_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  os.makedirs(damaged_dir, exist_ok=True)
  os.rename(path, aside)
  print(
    f"warning: checkpoint at step {step} is damaged: {reason}; moved it to {aside} and "
    "trying the previous one.",
    flush=True,
  )


def _refuse_nonfinite(step: int, trees: dict) -> None:
  """A NonFiniteStateError naming the first non-finite leaves of any of ``trees`` (by item)."""
  for name, tree in trees.items():
    bad = nonfinite_leaves(tree)
    if bad:
      raise NonFiniteStateError(
        f"refusing to save the checkpoint of step {step}: its {name} holds NaN/inf in "
        f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. The training step skips "
        "every update that would do this, so this is a bug; the earlier checkpoints are "
        "kept (rerun resumes from the newest of them)."
      )


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
