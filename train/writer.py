"""Metric writing: ``metrics.jsonl`` (one JSON line per epoch) and TensorBoard, process 0 only."""

from __future__ import annotations

import json
import math
import os

__all__ = ["MetricWriter", "save_json"]


class MetricWriter:
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
    with open(self.path, "a") as f:
      f.write(json.dumps(self.strict(record), allow_nan=False) + "\n")
    if self.tb is not None:
      for k, v in record.items():
        if (
          k not in ("step", "epoch")
          and isinstance(v, (int, float))
          and not isinstance(v, bool)
          and math.isfinite(v)
        ):
          self.tb.add_scalar(k, float(v), global_step=record["step"])
      self.tb.flush()


def save_json(path, obj):
  """Writes ``obj`` as strict JSON, atomically (a temporary file, then a rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(MetricWriter.strict(obj), f, indent=2, sort_keys=True, default=str, allow_nan=False)
  os.replace(tmp, path)
