"""When a run stops as "diverged", and what it says then: pure functions of the loop's counts.

The train step (:func:`train.steps.train_step`) skips an update that would
leave anything non-finite and reports *what* was non-finite in
``metrics["nonfinite_kind"]``, a bit mask (the same on every device, the OR
over devices):

=========  =====  =====================================================
name       value  non-finite on some device
=========  =====  =====================================================
DATA       1      the input batch (NaN/±inf pixels after normalization)
LOSS       2      the loss
GRADIENTS  4      the gradients (after averaging over devices)
UPDATE     8      the *updated* parameters, optimizer state or batch
                  statistics (the update itself overflowed; the loss and
                  gradients may well be finite)
=========  =====  =====================================================

0 means the step was applied. The loop stops after exactly
``config.max_nonfinite_steps`` consecutive skips (:func:`should_stop`; it
reads the step's metrics without delay once one more skip would reach the
limit, :func:`read_lag`) and reports :func:`divergence_message`.
"""

from __future__ import annotations

__all__ = [
  "DATA",
  "GRADIENTS",
  "KINDS",
  "LOSS",
  "UPDATE",
  "describe",
  "divergence_message",
  "read_lag",
  "should_stop",
]

DATA, LOSS, GRADIENTS, UPDATE = 1, 2, 4, 8
KINDS = {
  DATA: "the input data",
  LOSS: "the loss",
  GRADIENTS: "the gradients",
  UPDATE: "the updated parameters or optimizer state",
}


def describe(kind: int) -> str:
  """``'the loss and the gradients'`` for a :data:`KINDS` bit mask (unknown bits: 'a value')."""
  names = [text for bit, text in KINDS.items() if kind & bit]
  if not names:
    return "a value"
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def should_stop(consecutive_skips: int, limit: int) -> bool:
  """Whether ``consecutive_skips`` skipped steps in a row stop the run (``limit`` = max_nonfinite_steps)."""
  return consecutive_skips >= limit


def read_lag(consecutive_skips: int, limit: int) -> int:
  """How many steps' metrics may stay unread while the next step runs.

  1 as a rule (metrics are read one step late, so the host never waits for
  the device); 0 once one more skip would reach ``limit``: the loop then
  reads each step before starting the next, so it stops after exactly
  ``limit`` skips, never ``limit + 1``.
  """
  return 0 if consecutive_skips >= limit - 1 else 1


def divergence_message(
  config,
  *,
  consecutive: int,
  last_step: int | None,
  lr_at_last_step: float,
  nonfinite_kind: int,
  has_checkpoint: bool,
  checkpoint_step: int | None = None,
) -> str:
  """The ``error:`` line of a diverged run (exit status 3).

  Names how many steps were skipped and up to which step, what was
  non-finite (``nonfinite_kind``, the OR of the skipped steps' kinds), that no
  skipped update reached the parameters, the last checkpoint only if there
  is one, and the config values that can cause it (non-finite data, which
  makes the loss and all after it non-finite too, is named alone): the learning rate
  (``base_learning_rate``, its value at the last step, ``lr_decay_factor``),
  ``weight_decay``, ``momentum`` and the data.
  """
  # Non-finite data makes everything after it non-finite too: name the data alone.
  kind = DATA if nonfinite_kind & DATA else nonfinite_kind
  what = describe(kind)
  were = "was" if kind in (DATA, LOSS) else "were"
  head = (
    f"training diverged: {consecutive} consecutive steps up to step {last_step} were skipped "
    f"because {what} {were} non-finite (config.max_nonfinite_steps="
    f"{config.max_nonfinite_steps}). No skipped update was applied, so the parameters hold "
    "the last finite state"
  )
  if has_checkpoint:
    at = f" (step {checkpoint_step})" if checkpoint_step is not None else ""
    head += f", and the last checkpoint{at} holds finite values."
  else:
    head += "; no checkpoint was written before this, so a rerun starts from scratch."
  lr = (
    f"base_learning_rate={config.base_learning_rate} (lr {lr_at_last_step:.3g} at the last "
    f"step, lr_decay_factor={config.lr_decay_factor})"
  )
  optimizer = f"{lr}, weight_decay={config.weight_decay}, momentum={config.momentum}"
  data = (
    "the data (non-finite or extreme pixels after normalization: check the images and "
    f"config.dataset.mean={config.dataset.mean}, config.dataset.std={config.dataset.std})"
  )
  if kind == DATA:
    cause = f" The cause is {data}."
  elif kind & (LOSS | GRADIENTS):
    cause = (
      f" Values that can cause this: a learning rate too high for this batch ({optimizer}), "
      f"or {data}."
    )
  else:  # only the update: lr · (gradient + weight_decay · parameter) overflowed
    cause = (
      " The loss and gradients were finite: the update itself overflowed (learning rate × "
      f"(gradient + weight_decay × parameter), with momentum). Values that can cause this: "
      f"{optimizer}; lower base_learning_rate or weight_decay."
    )
  return head + cause
