"""BatchNorm (Ioffe & Szegedy 2015) with ``flax.linen.BatchNorm``'s fields and arithmetic.

One home: the pure body :func:`batch_norm`, the ``flax.linen`` declaration
:class:`BatchNorm` (``make_norm('bn')``) and its ``flax.nnx`` front end
:class:`BatchNormNNX` (``mbn_jax.nnx.BatchNorm``). What mbn_jax adds to
Flax's layer: the exact statistics of the concatenated valid entries across
devices (also with masks and unequal counts), the non-finite guard, the
uniform call (``step`` accepted and ignored) and gradient accumulation's
deferred statistics.

Momentum convention: ``momentum`` weights the **old** value (Flax's
convention; PyTorch's ``momentum=0.1`` is 0.9 here).
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike

from mbn_jax import functional as F
from mbn_jax import schedules
from mbn_jax.norms.base import (
  Capabilities,
  NNXNorm,
  linen_call,
  nnx_front_end,
  statistics_with_accumulator,
)

__all__ = ["BN_STATISTICS", "BatchNorm", "BatchNormNNX", "batch_norm", "check_bn_momentum"]

# BatchNorm's statistics and their initial values (BReN keeps the same two).
BN_STATISTICS = {"mean": jnp.zeros, "var": jnp.ones}


def check_bn_momentum(momentum) -> None:
  """Raises a ValueError unless ``momentum`` lies in [0, 1] (the weight on the old value)."""
  if (
    isinstance(momentum, bool)
    or not isinstance(momentum, numbers.Real)
    or not 0 <= float(momentum) <= 1  # NaN fails too
  ):
    raise ValueError(
      f"momentum must lie in [0, 1] (the weight on the OLD running value, Flax "
      f"convention; PyTorch's 0.1 is 0.9 here), got {momentum!r}."
    )


def batch_norm(
  cfg,
  x,
  stats: dict,
  scale,
  bias,
  *,
  use_running_average: bool,
  mask=None,
  initializing: bool = False,
):
  """BatchNorm as one pure function (``flax.linen.BatchNorm``'s equations and arithmetic).

  Training: y = γ (x − μ_B)/√(σ²_B + ε) + β and (mean, var) ←
  momentum·(mean, var) + (1 − momentum)·(μ_B, σ²_B) (**momentum weights the
  old value**), where :func:`mbn_jax.functional.updatable` (no valid entry,
  or non-finite with ``cfg.guard_nonfinite``: the feature keeps its
  statistics); with ``cfg.accumulation_steps`` k > 1 once per k calls
  (:func:`mbn_jax.functional.deferred_moving_average`). ``cfg`` has the
  fields of :class:`BatchNorm`. Returns ``(y, new_stats)``.
  """
  feature_axes, reduction_axes = F.feature_and_reduction_axes(x.ndim, cfg.axis)
  if use_running_average:
    return F.normalize(
      x, stats["mean"], stats["var"], scale, bias, feature_axes, cfg.epsilon, cfg.dtype
    ), stats
  batch = F.layer_batch_moments(cfg, x, reduction_axes, mask, initializing)
  y = F.normalize(x, batch.mean, batch.var, scale, bias, feature_axes, cfg.epsilon, cfg.dtype)
  if initializing:
    return y, stats
  ok = F.updatable(batch, cfg.guard_nonfinite)
  k = cfg.accumulation_steps
  if k > 1:  # deferred: the running statistics move once per k micro-batches
    return y, F.deferred_moving_average(batch, stats, cfg.momentum, k, ok)
  mean, var = F.guarded_moving_average(batch, stats["mean"], stats["var"], cfg.momentum, ok)
  return y, {"mean": mean, "var": var}


class BatchNorm(nn.BatchNorm):
  """``flax.linen.BatchNorm``'s fields, variables and arithmetic, uniform call, guarded statistics.

  y = γ (x − μ_B)/√(σ²_B + ε) + β in training; mean ← momentum·mean +
  (1 − momentum)·μ_B (**momentum weights the old value**). The body is
  :func:`batch_norm`: bit-equal to ``flax.linen.BatchNorm`` on one device,
  the exact statistics of the concatenated valid entries across devices
  (``axis_name``, also with masks and unequal counts), and a feature whose
  batch statistics are non-finite (``guard_nonfinite``) or empty keeps its
  running statistics. ``step`` is accepted and ignored.

  ``accumulation_steps`` k > 1 is gradient accumulation's *deferred* mode
  (torchgpipe's ``DeferredBatchNorm``): every micro-batch is still normalized
  with its own statistics, but the running statistics move once per k
  training calls, by ``momentum``, with the pooled moments of those k
  micro-batches (accumulator in ``batch_stats``:
  :func:`mbn_jax.functional.deferred_moving_average`). Default 1.

  Complex input is normalized as ``flax.linen.BatchNorm`` does: complex mean
  μ_B, real variance ``E[|x − μ_B|²]``, and a complex running ``mean``.
  """

  capabilities: ClassVar[Capabilities] = Capabilities(
    normalizer="batch",
    running_statistics=True,
    batch_statistics=True,
    precise_statistics=True,
    deferred_accumulation=True,
    synchronizes=True,
    complex_input=True,
  )

  option_aliases: ClassVar[dict[str, str]] = {"bn_momentum": "momentum"}

  guard_nonfinite: bool = True
  accumulation_steps: int = 1

  @classmethod
  def statistics_for(cls, cfg) -> dict:
    """The initial ``batch_stats`` of a layer with fields ``cfg``."""
    return statistics_with_accumulator(BN_STATISTICS, cfg.accumulation_steps)

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates momentum, epsilon and accumulation_steps, naming the offending argument."""
    check_bn_momentum(cfg.momentum)
    F.check_epsilon(cfg.epsilon)
    schedules.validate_positive_int(cfg.accumulation_steps, "accumulation_steps")

  @nn.compact
  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    del step  # BatchNorm has no schedule.
    return linen_call(self, batch_norm, x, use_running_average, mask=mask)


class BatchNormNNX(NNXNorm):
  """BatchNorm for ``flax.nnx`` (``mbn_jax.nnx.BatchNorm``): :class:`BatchNorm`'s fields and body.

  ``BatchNormNNX(num_features, *, rngs, **fields)`` with every field of
  :class:`BatchNorm` (Flax's BatchNorm fields — ``momentum`` = 0.99 weighting
  the old value, ``epsilon``, ``axis_name``, ... — plus ``guard_nonfinite``
  and ``accumulation_steps``); ``nnx.BatchStat`` statistics ``mean``/``var``
  as in ``flax.nnx.BatchNorm``; ``__call__(x, use_running_average=None, *,
  step=None, mask=None)``.
  """

  linen = BatchNorm
  body = staticmethod(batch_norm)

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; arguments as in :class:`BatchNorm`."""
    del step
    return nnx_front_end(self, x, use_running_average, mask=mask)
