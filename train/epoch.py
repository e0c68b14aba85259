"""One epoch of training through the seam: :func:`train_epoch`, and what it keeps (:class:`Progress`)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from train import divergence
from train.data_errors import DataConfigError

if TYPE_CHECKING:
  from train.setup import RunSetup

__all__ = ["EpochSums", "Progress", "epoch_record", "train_epoch"]


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


@dataclasses.dataclass
class Progress:
  """Where the run is: the device state, its (micro-)batch step and this epoch's sums."""

  state: Any
  step: int
  start_step: int
  sums: EpochSums = dataclasses.field(default_factory=EpochSums)
  lam: float = 0.0  # λ of the last consumed step (progress bar)
  consecutive_nonfinite: int = 0
  last_nonfinite_step: int | None = None
  last_nonfinite_kind: int = 0
  epoch_time: float = 0.0
  images_per_sec: float = 0.0
  data_wait_share: float = 0.0  # share of the epoch's time the loop waited for its next batch


def train_epoch(s: RunSetup, p: Progress, epoch: int, stop) -> str | None:
  """Trains ``epoch`` from the current step; returns None, ``'interrupted'`` or ``'diverged'``."""
  config, spe = s.config, s.spe
  first = p.step - epoch * spe
  bar = tqdm(
    total=spe,
    initial=first,
    desc=f"epoch {epoch + 1}/{config.num_epochs}",
    disable=not (config.progress_bar and s.is_main),
    dynamic_ncols=True,
    leave=True,
  )
  t_epoch, done_here, pending, outcome = time.time(), 0, [], None
  wait_before = s.batches.wait_seconds
  try:
    for batch in s.batches.epoch(epoch, first):
      p.state, metrics = s.parallel.train_step(
        p.state, s.parallel.shard(batch), s.parallel.stop_flags(stop.requested)
      )
      p.step += 1
      done_here += 1
      if p.step == config.simulate_preemption_at_step:  # Tests: a real SIGTERM to ourselves.
        os.kill(os.getpid(), signal.SIGTERM)
      pending.append(metrics)  # read one step late (none late near the skip limit: exact)
      while not outcome and len(pending) > divergence.read_lag(
        p.consecutive_nonfinite, config.max_nonfinite_steps
      ):
        outcome = _consume(s, p, pending.pop(0))
      bar.update(1)
      if done_here % config.log_every_steps == 0 or p.step % spe == 0:
        bar.set_postfix(_postfix(s, p, done_here, t_epoch))
      if outcome:
        break
  except DataConfigError:  # a bad image met mid-epoch: the steps before it count
    for metrics in pending:
      _consume(s, p, metrics)
    bar.close()
    raise
  for metrics in pending:
    outcome = _consume(s, p, metrics) or outcome
  bar.close()
  p.epoch_time = time.time() - t_epoch
  p.images_per_sec = done_here * s.layout.global_batch_size / max(p.epoch_time, 1e-9)
  p.data_wait_share = (s.batches.wait_seconds - wait_before) / max(p.epoch_time, 1e-9)
  if outcome is None and p.step % spe != 0:  # stopped mid-epoch by the data running out
    outcome = "interrupted"
  return outcome


def _consume(s: RunSetup, p: Progress, metrics) -> str | None:
  """Adds one step's metrics to the epoch sums; says whether to stop and why."""
  mh = s.parallel.first(metrics)
  p.lam = float(mh["lambda"])
  if int(mh["nonfinite"]):
    p.sums.nonfinite += 1
    p.consecutive_nonfinite += 1
    p.last_nonfinite_step = int(p.step)
    p.last_nonfinite_kind = int(mh.get("nonfinite_kind", 0))
  else:
    p.consecutive_nonfinite = 0
    p.sums.loss += float(mh["loss"])
    p.sums.accuracy += float(mh["accuracy"])
    p.sums.count += 1
  if int(mh["stop"]) > 0:
    return "interrupted"
  if divergence.should_stop(p.consecutive_nonfinite, s.config.max_nonfinite_steps):
    return "diverged"
  return None


def _postfix(s: RunSetup, p: Progress, done_here: int, t_epoch: float) -> dict:
  n = max(p.sums.count, 1)
  post: dict[str, str | int] = {  # tqdm formats the numbers
    "loss": f"{p.sums.loss / n:.4f}",
    "acc": f"{p.sums.accuracy / n:.4f}",
    "img/s": f"{done_here * s.layout.global_batch_size / (time.time() - t_epoch):.0f}",
  }
  if p.sums.nonfinite:
    post["skipped"] = p.sums.nonfinite
  if s.logs_lambda:
    post["λ"] = f"{p.lam:.4f}"
  return post


def epoch_record(s: RunSetup, p: Progress, epoch: int) -> dict:
  """The epoch's line of ``metrics.jsonl`` before evaluation (training sums, lr, λ, speed)."""
  last = s.opt_step(p.step - 1)
  return {
    "step": p.step,
    "epoch": epoch + 1,
    **p.sums.record(),
    "learning_rate": float(s.rule.learning_rate(last)),
    "lambda": float(s.rule.momentum(last)) if s.logs_lambda else None,
    "images_per_sec": p.images_per_sec,
    "data_wait_share": p.data_wait_share,
  }
