"""What a run writes: ``metrics.jsonl`` (one JSON line per epoch), TensorBoard, JSON files, the table.

Process 0 only."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time

__all__ = [
  "MetricWriter",
  "MetricsFileError",
  "comparison_table",
  "precise_statistics_note",
  "read_metrics",
  "save_json",
]

# How much better (accuracy, a fraction) precise statistics must evaluate than the moving
# ones before the run says so in one line: more than one point.
PRECISE_NOTE_MARGIN = 0.01


class MetricsFileError(ValueError):
  """A workdir's ``metrics.jsonl`` holds a line that is not one epoch's record."""


def read_metrics(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl``: one JSON object with an int ``step`` per line.

  A last line without its newline that does not parse is a write cut short
  (the process was killed while writing it; its epoch was never
  checkpointed): it is left out. Any other line that is not such a record
  raises :class:`MetricsFileError` naming the file and the line.
  """
  with open(path) as f:
    lines = f.readlines()
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines) and not line.endswith("\n"):
        break  # a torn last write
      raise MetricsFileError(
        f"{path!r} line {number} is not JSON ({e.msg}): it holds one JSON record per epoch. "
        "Delete that line (or the file: the epochs' records are lost, the checkpoints are not), "
        "or use a new --workdir."
      ) from None
    if (
      not isinstance(record, dict)
      or isinstance(record.get("step"), bool)
      or not isinstance(record.get("step"), int)
    ):
      raise MetricsFileError(
        f"{path!r} line {number} is not an epoch record (a JSON object with an int 'step'): "
        "delete that line (or the file), or use a new --workdir."
      )
    records.append(record)
  return records


class MetricWriter:
  """metrics.jsonl + TensorBoard, on process 0 only."""

  def __init__(self, workdir, enabled, tensorboard, resume_step):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if not enabled:
      return
    if os.path.exists(self.path):  # Drop lines written after the checkpoint we resume from.
      kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
      with _naming(self.path), open(self.path, "w") as f:
        f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in kept)
    if tensorboard:
      self.tb = _EventFile(os.path.join(workdir, "tensorboard"))

  @staticmethod
  def strict(obj):
    """``obj`` with every NaN/±inf float replaced by None: strict JSON (RFC 8259)."""
    if isinstance(obj, float) and not math.isfinite(obj):
      return None
    if isinstance(obj, dict):
      return {k: MetricWriter.strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
      return [MetricWriter.strict(v) for v in obj]
    return obj

  def write(self, record: dict):
    """Appends ``record`` as one strict-JSON line (non-finite numbers become null) and to TensorBoard."""
    if not self.enabled:
      return
    with _naming(self.path), open(self.path, "a") as f:
      f.write(json.dumps(self.strict(record), allow_nan=False) + "\n")
    if self.tb is not None:
      scalars = {
        k: float(v)
        for k, v in record.items()
        if k not in ("step", "epoch")
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
      }
      self.tb.write(scalars, record["step"])

  def close(self):
    """Closes the TensorBoard event file (idempotent); ``write`` must not follow."""
    if self.tb is not None:
      self.tb.close()
      self.tb = None


class _EventFile:
  """A TensorBoard event file under ``logdir``, written and flushed in the calling thread.

  Not tensorboardX's ``SummaryWriter``: that one writes and flushes in a
  thread of its own and flushes once more in an ``atexit`` hook, so a failed
  write (a full disk) printed tracebacks from both, after the run's
  ``error:`` line; and on Python >= 3.12 the hook may fail at interpreter
  shutdown ("can't create new thread") in a process that ran several runs.
  Here a failed write raises an ``OSError`` naming ``logdir`` where it
  happens, and leaves the file closed (nothing is flushed at exit). The
  events are the ones ``SummaryWriter.add_scalar`` writes.
  """

  def __init__(self, logdir: str):
    from tensorboardX.event_file_writer import EventsWriter

    self.logdir = logdir
    os.makedirs(logdir, exist_ok=True)
    with self._closing_on_error():
      self._events = EventsWriter(os.path.join(logdir, "events"))
      self._events.flush()

  def write(self, scalars: dict[str, float], step: int) -> None:
    """Appends one event per scalar at ``step`` and flushes them to disk."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.summary import scalar

    events = self._events
    if events is None:
      raise ValueError(f"{self.logdir}: the event file is closed (a write after close()).")
    with self._closing_on_error():
      for name, value in scalars.items():
        # event_pb2 is protobuf-generated, without a .pyi: its message classes are made at import.
        event = event_pb2.Event(  # pyright: ignore[reportAttributeAccessIssue]
          summary=scalar(name, value), wall_time=time.time(), step=step
        )
        events.write_event(event)
      events.flush()

  def close(self) -> None:
    if self._events is not None:
      events, self._events = self._events, None
      with _naming(self.logdir):
        events.close()

  @contextlib.contextmanager
  def _closing_on_error(self):
    try:
      with _naming(self.logdir):
        yield
    except OSError:
      events, self._events = getattr(self, "_events", None), None
      if events is not None:
        with contextlib.suppress(OSError):  # the flush fails again; the file is closed all the same
          events.close()
      raise


def _naming(path: str):
  """A context in which an OSError without a file name (a failed write or flush) gets ``path``."""

  @contextlib.contextmanager
  def context():
    try:
      yield
    except OSError as e:
      if e.filename is None:
        raise OSError(e.errno, e.strerror, path) from e
      raise

  return context()


def save_json(path, obj):
  """Writes ``obj`` as strict JSON, atomically (a temporary file, then a rename).

  A failed write (e.g. a full disk, ENOSPC) raises an OSError naming the file.
  """
  tmp = path + ".tmp"
  with _naming(tmp), open(tmp, "w") as f:
    json.dump(MetricWriter.strict(obj), f, indent=2, sort_keys=True, default=str, allow_nan=False)
  os.replace(tmp, path)


def comparison_table(summaries: dict[str, dict]) -> str:
  """The plain-text table ``python -m train`` prints for ``config.norms='bn,mbn'``.

  One row per norm (in the given order) from its ``summary.json`` dict; a
  ``precise acc`` column (evaluation with population statistics) appears when
  any run measured it (``precise_stats_batches > 0``).
  """
  precise = any(s.get("final_eval_accuracy_precise") is not None for s in summaries.values())
  header = ("norm", "eval acc") + (("precise acc",) if precise else ())
  rows = [header + ("best eval acc", "train acc", "epochs", "time (s)")]
  fmt = lambda v: "—" if v is None or not math.isfinite(v) else f"{v:.4f}"
  for norm, s in summaries.items():
    rows.append(
      (norm, fmt(s.get("final_eval_accuracy")))
      + ((fmt(s.get("final_eval_accuracy_precise")),) if precise else ())
      + (
        fmt(s.get("best_eval_accuracy")),
        fmt(s.get("final_train_accuracy")),
        str(s.get("epochs_completed")),
        f"{s.get('wall_time_s', float('nan')):.0f}",
      )
    )
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def precise_statistics_note(summary: dict) -> str | None:
  """The line ``python -m train`` prints after a run whose precise statistics won.

  ``summary`` is the run's ``summary.json`` dict. Returns one line when its
  final evaluation with population ("precise") statistics,
  ``final_eval_accuracy_precise``, beats the one with the moving statistics,
  ``final_eval_accuracy``, by more than one point (0.01); None otherwise, and
  when either is missing or not finite. The moving average lags behind the
  weights on short runs and with a high inference momentum (MBN's τ ≈ 0.99
  at m = 2), and the checkpoint keeps both statistics, so the line says which
  to deploy.
  """
  moving = summary.get("final_eval_accuracy")
  precise = summary.get("final_eval_accuracy_precise")
  if not (
    isinstance(moving, (int, float))
    and isinstance(precise, (int, float))
    and math.isfinite(moving)
    and math.isfinite(precise)
  ):
    return None
  if precise - moving <= PRECISE_NOTE_MARGIN + 1e-9:  # exactly one point is not more
    return None
  name = "/".join(str(summary[k]) for k in ("model", "norm") if summary.get(k))
  return (
    f"note: {name + ': ' if name else ''}precise statistics evaluate at {precise:.4f}, "
    f"{100 * (precise - moving):.1f} points above the moving statistics ({moving:.4f}): "
    "the moving average still lags behind the weights (short run or high momentum); "
    "deploy the checkpoint's precise_batch_stats item (README, 'Precise statistics')."
  )
