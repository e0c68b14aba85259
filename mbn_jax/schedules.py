"""Momentum schedules of Momentum Batch Normalization (Yong et al., ECCV 2020).

Both schedules are pure functions, in the style of optax schedules: the
training momentum is a ``step -> value`` function that can be evaluated on a
traced step inside ``jit``/``pmap`` without recompiling.

Momentum convention (used everywhere in mbn_jax, and by ``flax.linen.BatchNorm``):
the momentum is the weight on the *old* value::

    running <- momentum * running + (1 - momentum) * batch_statistic

PyTorch's ``BatchNorm2d(momentum=...)`` weights the *new* value instead, so a
PyTorch momentum ``p`` corresponds to ``1 - p`` here.
"""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = [
  "MomentumSchedule",
  "inference_momentum",
  "momentum_schedule",
  "train_momentum",
  "validate_positive_int",
]


def validate_positive_int(value, name: str) -> int:
  """Returns ``value`` as an int, or raises a ValueError naming ``name``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(
      f"{name} must be a positive Python int, got {value!r} "
      f"({type(value).__name__}). Pass e.g. {name}=32."
    )
  if value <= 0:
    raise ValueError(f"{name} must be a positive int, got {value}.")
  return int(value)


def train_momentum(
  step: ArrayLike,
  *,
  batch_size: int,
  total_epochs: int,
  steps_per_epoch: int,
  ideal_batch_size: int = 32,
) -> jax.Array:
  r"""Training momentum λ(t) of MBN, Eq. 11 of the paper.

  .. math::

      λ^{(t)} = ρ^{\frac{T}{T-1}\max(T-t, 0)} - ρ^T,
      \qquad ρ = \min(m / m_0, 1)^{1/T}

  which simplifies (since ρ^T = r with r = min(m/m0, 1)) to

  .. math::

      λ^{(t)} = r^{\max(T-t,0)/(T-1)} - r .

  λ weights the *old* training moving statistics (the Flax convention, see
  the module docstring): μ ← λ μ + (1 − λ) μ_B.

  The paper's epoch index ``t`` is **1-based**. Here it is derived from the
  0-based global optimizer ``step``: ``t = step // steps_per_epoch + 1``
  (the same λ for every step of an epoch, as in the paper). With a 0-based t
  the printed formula would give a *negative* λ in the first epoch.

  Edges, all defined:

  * first epoch (t = 1): λ = 0 exactly (MBN starts as plain BN);
  * last epoch (t = T): λ = 1 − m/m0 (the largest value, always < 1);
  * steps beyond the last epoch: t is held at T, so λ stays at 1 − m/m0;
  * negative steps are treated as step 0;
  * m ≥ m0: r = 1, λ = 0 for every step (MBN is plain BN, as the paper says);
  * T = 1: Eq. 11 divides by zero (T/(T−1)). The single epoch is both the
    first and the last; we take the first-epoch value λ = 0 (plain BN). To
    train one epoch with a fixed MBN momentum, pass ``momentum=`` to the
    layer instead.

  λ lies in [0, 1) for every step (tiny negative round-off is clipped to 0).

  Args:
    step: 0-based global training step; a Python int or a (possibly traced)
      integer array. Under ``jit`` a traced step costs one compilation for
      all steps.
    batch_size: the actual batch size m that the statistics are computed over
      (per device, times the devices when statistics are synchronized).
    total_epochs: T, the total number of training epochs (>= 1).
    steps_per_epoch: optimizer steps per epoch (>= 1).
    ideal_batch_size: m0, the "large enough" batch size (paper: 32).

  Returns:
    λ as a float32 JAX scalar (or an array of the shape of ``step``).
  """
  m = validate_positive_int(batch_size, "batch_size")
  total = validate_positive_int(total_epochs, "total_epochs")
  spe = validate_positive_int(steps_per_epoch, "steps_per_epoch")
  m0 = validate_positive_int(ideal_batch_size, "ideal_batch_size")

  step = jnp.asarray(step)
  if not jnp.issubdtype(step.dtype, jnp.integer):
    raise TypeError(f"step must be an integer (0-based global step), got dtype {step.dtype}.")
  r = min(m / m0, 1.0)
  if r >= 1.0 or total == 1:
    return jnp.zeros(step.shape, jnp.float32)
  epoch = jnp.clip(jnp.maximum(step, 0) // spe + 1, 1, total)  # 1-based t
  remaining = (total - epoch).astype(jnp.float32)  # max(T - t, 0) >= 0
  exponent = remaining / (total - 1)
  lam = jnp.exp(exponent * jnp.log(jnp.float32(r))) - jnp.float32(r)
  return jnp.clip(lam, 0.0, None).astype(jnp.float32)


def inference_momentum(batch_size: int, *, ideal_batch_size: int = 32, tau0: float = 0.85) -> float:
  r"""Inference momentum τ of MBN, Eq. 12 of the paper: τ = τ0^(m/m0).

  τ weights the *old* inference moving statistics (Flax convention):
  mean ← τ·mean + (1 − τ)·μ_B. It is chosen so that after N samples the
  weight on the oldest sample is the same at batch size m as at m0:
  τ^(N/m) = τ0^(N/m0). Smaller batches get a larger τ (a longer average).

  Args:
    batch_size: the batch size m the statistics are computed over.
    ideal_batch_size: m0 (paper: 32).
    tau0: the momentum for batch size m0, in (0, 1) (paper: 0.85).

  Returns:
    τ as a Python float in (0, 1).
  """
  m = validate_positive_int(batch_size, "batch_size")
  m0 = validate_positive_int(ideal_batch_size, "ideal_batch_size")
  if isinstance(tau0, bool) or not isinstance(tau0, numbers.Real):
    raise TypeError(f"tau0 must be a float in (0, 1), got {tau0!r}.")
  if not 0.0 < float(tau0) < 1.0:
    raise ValueError(
      f"tau0 must lie strictly between 0 and 1, got {tau0}. The paper uses tau0=0.85."
    )
  return float(tau0) ** (m / m0)


@dataclasses.dataclass(frozen=True)
class MomentumSchedule:
  r"""λ(t) of Eq. 11 as a value: an optax-style ``step -> λ`` function.

  ``schedule(step)`` is :func:`train_momentum` with this schedule's m, T,
  steps per epoch and m0 (λ weights the *old* value). Built once — by
  :func:`momentum_schedule` — and handed to whoever needs λ: the layer
  (``MomentumBatchNorm(momentum_schedule=...)``), a training loop's logged
  λ, an analysis of a finished run. Frozen and hashable, so a module that
  holds it can be a static argument of ``jax.jit``; :meth:`to_dict` gives
  the values to save in a run record.

  Attributes:
    batch_size: m, the batch the statistics are computed over (per device,
      times the devices that share statistics).
    total_epochs: T (>= 1).
    steps_per_epoch: optimizer steps per epoch (>= 1).
    ideal_batch_size: m0 (paper: 32).
    ramp: True (default): Eq. 11, λ ramps from 0 (plain BN) in the first
      epoch to 1 − m/m0 at epoch T. False: λ = 1 − m/m0 from the first step
      — for fine-tuning a network whose statistics come from pretraining
      (MBN's ``train_mean``/``train_var`` set from its ``mean``/``var``,
      :func:`mbn_jax.convert.convert_norm_variables`): the normalizer then
      starts at the pretrained statistics instead of 2-image batch statistics.
      Measured at the paper's learning rate (docs/results/fine_tuning.md,
      resnet20, 4 devices × 2 images) it trained far worse than the ramp
      (its weights drifted while the statistics lagged): keep the ramp
      unless you are studying this.
  """

  batch_size: int
  total_epochs: int
  steps_per_epoch: int
  ideal_batch_size: int = 32
  ramp: bool = True

  def __post_init__(self):
    for name in ("batch_size", "total_epochs", "steps_per_epoch", "ideal_batch_size"):
      validate_positive_int(getattr(self, name), name)
    if not isinstance(self.ramp, bool):
      raise ValueError(
        f"ramp must be True (Eq. 11) or False (λ final from step 0), got {self.ramp!r}."
      )

  def __call__(self, step: ArrayLike) -> jax.Array:
    if not self.ramp:
      final = 1.0 - min(self.batch_size / self.ideal_batch_size, 1.0)
      return jnp.full(jnp.shape(step), final, jnp.float32)
    return train_momentum(
      step,
      batch_size=self.batch_size,
      total_epochs=self.total_epochs,
      steps_per_epoch=self.steps_per_epoch,
      ideal_batch_size=self.ideal_batch_size,
    )

  @property
  def final_momentum(self) -> float:
    """λ from epoch T on (from step 0 without the ramp): 1 − m/m0 (0 when m ≥ m0, or T = 1
    with the ramp)."""
    return float(self(self.total_epochs * self.steps_per_epoch))

  def to_dict(self) -> dict:
    """The values to save in a run record (``ramp`` only when False, so records of
    schedules with the paper's ramp keep their keys)."""
    out = dataclasses.asdict(self)
    if out["ramp"]:
      del out["ramp"]
    return out


def momentum_schedule(
  *,
  batch_size: int,
  total_epochs: int,
  steps_per_epoch: int,
  ideal_batch_size: int = 32,
  ramp: bool = True,
) -> MomentumSchedule:
  """MBN's training-momentum schedule λ(t) (Eq. 11) for m, T, steps per epoch and m0.

  The optax-style constructor of :class:`MomentumSchedule`: the result is a
  pure ``step -> λ`` function (traced steps included, one compilation).
  ``ramp=False``: λ = 1 − m/m0 from the first step (starting from
  pretrained statistics; see :class:`MomentumSchedule`). Measured when
  fine-tuning at the paper's learning rate (docs/results/fine_tuning.md) it
  trained far worse than the ramp: an option to study, not a default.
  """
  return MomentumSchedule(
    batch_size=batch_size,
    total_epochs=total_epochs,
    steps_per_epoch=steps_per_epoch,
    ideal_batch_size=ideal_batch_size,
    ramp=ramp,
  )
