"""Batch Renormalization (Ioffe, NeurIPS 2017): the paper's BReN baseline.

One home: the pure pieces (:func:`renorm_limits`, :func:`renorm_correction`)
and body :func:`batch_renorm`, the ``flax.linen`` declaration
:class:`BatchRenorm` (``make_norm('brn')``) and its ``flax.nnx`` front end
:class:`BatchRenormNNX` (``mbn_jax.nnx.BatchRenorm``).

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
from mbn_jax.norms.base import (
  BatchStatisticsFields,
  Capabilities,
  NNXNorm,
  linen_call,
  nnx_front_end,
)
from mbn_jax.norms.batch_norm import BN_STATISTICS

__all__ = [
  "BRN_MINI_IMAGENET_OPTIONS",
  "BatchRenorm",
  "BatchRenormNNX",
  "batch_renorm",
  "check_renorm_config",
  "renorm_correction",
  "renorm_limits",
]

# The paper's best BReN setting on Mini-ImageNet at batch size 2 (Sec. 5.4):
# ``make_norm('brn', **BRN_MINI_IMAGENET_OPTIONS)``.
BRN_MINI_IMAGENET_OPTIONS = {"r_max": 1.5, "d_max": 0.5}


def check_renorm_config(r_max, d_max, warmup_steps, momentum, epsilon) -> None:
  """Validates the BReN hyper-parameters, naming the offending argument."""

  def real(v):
    return not isinstance(v, bool) and isinstance(v, numbers.Real)

  if not real(r_max) or not r_max >= 1:  # NaN fails too; inf: r unclipped
    raise ValueError(
      f"r_max must be a float >= 1 (r is clipped to [1/r_max, r_max]), got "
      f"{r_max!r}. r_max=1, d_max=0 is plain BatchNorm; Ioffe uses r_max=3."
    )
  if not real(d_max) or not d_max >= 0:  # NaN fails too; inf: d unclipped
    raise ValueError(
      f"d_max must be a float >= 0 (d is clipped to [-d_max, d_max]), got "
      f"{d_max!r}. Ioffe uses d_max=5."
    )
  if (
    isinstance(warmup_steps, bool)
    or not isinstance(warmup_steps, numbers.Integral)
    or warmup_steps < 0
  ):
    raise ValueError(f"warmup_steps must be an int >= 0 (0: no warm-up), got {warmup_steps!r}.")
  if not real(momentum) or not 0 <= momentum <= 1:
    raise ValueError(
      f"momentum must lie in [0, 1] (the weight on the OLD running value, "
      f"Flax convention; PyTorch's 0.1 is 0.9 here), got {momentum!r}."
    )
  F.check_epsilon(epsilon)


def renorm_limits(step, r_max: float, d_max: float, warmup_steps: int = 0):
  """The clipping limits (r_max(t), d_max(t)) at training ``step``.

  A linear ramp from (1, 0) (plain BatchNorm) at step 0 to the full
  (r_max, d_max) at ``step >= warmup_steps``::

      f = clip(step / warmup_steps, 0, 1)
      r_max(t) = 1 + (r_max - 1) f,   d_max(t) = d_max f

  (Ioffe 2017 holds (1, 0) for 5k steps and then relaxes the limits
  gradually; a linear ramp from step 0 is the simplest such schedule.)
  With ``warmup_steps == 0`` or ``step is None`` the full limits are used.
  ``step`` may be a traced integer array (no recompilation per step).
  """
  if step is None or warmup_steps == 0:
    return jnp.float32(r_max), jnp.float32(d_max)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / jnp.float32(warmup_steps), 0.0, 1.0)
  return 1.0 + (jnp.float32(r_max) - 1.0) * frac, jnp.float32(d_max) * frac


def renorm_correction(batch_mean, batch_var, running_mean, running_var, r_max, d_max, epsilon):
  r"""Ioffe's correction (r, d), clipped and ``stop_gradient``-ed.

  σ_B = √(σ²_B + ε), σ = √(σ²_running + ε),

  r = clip(σ_B / σ, 1/r_max, r_max),  d = clip((μ_B − μ_running) / σ, −d_max, d_max).

  Both are treated as constants by ``jax.grad`` (Algorithm 1 of Ioffe 2017).
  """
  sigma_b = jnp.sqrt(batch_var + epsilon)
  sigma = jnp.sqrt(running_var + epsilon)
  r = jnp.clip(sigma_b / sigma, 1.0 / r_max, r_max)
  d = jnp.clip((batch_mean - running_mean) / sigma, -d_max, d_max)
  return jax.lax.stop_gradient(r), jax.lax.stop_gradient(d)


def _renormalize(x, batch_mean, batch_var, r, d, scale, bias, feature_axes, epsilon, dtype):
  """γ·(x̂·r + d) + β with x̂ = (x − μ_B)/σ_B, through ``F.normalize``.

  Folded as scale' = r·γ, bias' = d·γ + β, so that r = 1, d = 0 is
  ``flax.linen.BatchNorm``'s arithmetic exactly.
  """
  if dtype is None:
    dtype = jnp.result_type(*[a for a in (x, scale, bias) if a is not None])
  new_scale = r if scale is None else r * scale
  new_bias = d if scale is None else d * scale
  if bias is not None:
    new_bias = new_bias + bias
  return F.normalize(x, batch_mean, batch_var, new_scale, new_bias, feature_axes, epsilon, dtype)


def batch_renorm(
  cfg,
  x,
  stats: dict,
  scale,
  bias,
  *,
  use_running_average: bool,
  step=None,
  mask=None,
  initializing: bool = False,
):
  """Batch Renormalization as one pure function: the body of both front ends.

  ``cfg`` has :class:`BatchRenorm`'s fields (the linen or the nnx module);
  ``stats`` holds ``mean`` and ``var``. Training: μ_B, σ²_B
  (:func:`mbn_jax.functional.batch_moments`), limits at ``step``
  (:func:`renorm_limits`), (r, d) from the running statistics before this
  step (:func:`renorm_correction`), y = γ·((x − μ_B)/σ_B · r + d) + β, and
  the running statistics' update with ``cfg.momentum`` (weight on the old
  value), guarded as in :func:`mbn_jax.functional.mbn_statistics`.
  Returns ``(y, new_stats)``.
  """
  feature_axes, reduction_axes = F.feature_and_reduction_axes(x.ndim, cfg.axis)
  if use_running_average:
    return F.normalize(
      x, stats["mean"], stats["var"], scale, bias, feature_axes, cfg.epsilon, cfg.dtype
    ), stats
  batch = F.layer_batch_moments(cfg, x, reduction_axes, mask, initializing)
  r_lim, d_lim = renorm_limits(step, cfg.r_max, cfg.d_max, cfg.warmup_steps)
  r, d = renorm_correction(
    batch.mean, batch.var, stats["mean"], stats["var"], r_lim, d_lim, cfg.epsilon
  )
  y = _renormalize(
    x, batch.mean, batch.var, r, d, scale, bias, feature_axes, cfg.epsilon, cfg.dtype
  )
  if initializing:
    return y, stats
  mean, var = F.guarded_moving_average(
    batch, stats["mean"], stats["var"], cfg.momentum, F.updatable(batch, cfg.guard_nonfinite)
  )
  return y, {"mean": mean, "var": var}


class BatchRenorm(BatchStatisticsFields):
  r"""Batch Renormalization (Ioffe 2017), ``flax.linen``: the paper's BReN.

  Training (``use_running_average=False``), per feature:

  * μ_B, σ²_B: batch mean and biased variance (over all devices in
    ``axis_name`` when given), σ_B = √(σ²_B + ε), σ = √(var + ε);
  * r = clip(σ_B/σ, 1/r_max, r_max), d = clip((μ_B − mean)/σ, −d_max, d_max),
    both ``stop_gradient``-ed (they carry no gradient);
  * y = γ·((x − μ_B)/σ_B · r + d) + β;
  * mean ← momentum·mean + (1 − momentum)·μ_B,
    var ← momentum·var + (1 − momentum)·σ²_B — **momentum weights the OLD
    value** (Flax convention; PyTorch's 0.1 is 0.9 here). The running
    *variance* is tracked, as in ``flax.linen.BatchNorm`` (Ioffe tracks σ);
    r and d use the values from before this step's update.

  Inference: y = γ (x − mean)/√(var + ε) + β (exactly BatchNorm).

  The limits ramp linearly from (1, 0) at ``step=0`` to (r_max, d_max) at
  ``step=warmup_steps`` (:func:`renorm_limits`); ``step=None`` (or
  ``warmup_steps=0``) means the full limits. With r_max=1, d_max=0 the layer
  is exactly ``flax.linen.BatchNorm`` (outputs, gradients and statistics).
  The paper's Mini-ImageNet setting is r_max=1.5, d_max=0.5
  (:data:`BRN_MINI_IMAGENET_OPTIONS`).

  Variables: ``params/scale``, ``params/bias``, ``batch_stats/mean``,
  ``batch_stats/var`` (the names of ``flax.linen.BatchNorm``). During
  ``init`` nothing is updated.

  Attributes: those of ``flax.linen.BatchNorm`` (``use_running_average``,
  ``axis``, ``momentum`` = 0.99, ``epsilon``, ``dtype``, ``param_dtype``,
  ``use_bias``, ``use_scale``, ``bias_init``, ``scale_init``, ``axis_name``,
  ``axis_index_groups``, ``use_fast_variance``, ``force_float32_reductions``)
  plus ``r_max`` (3.0), ``d_max`` (5.0), ``warmup_steps`` (0).
  """

  capabilities: ClassVar[Capabilities] = Capabilities(
    normalizer="renormalized",
    running_statistics=True,
    batch_statistics=True,
    precise_statistics=True,
    takes_step=True,
    synchronizes=True,
  )

  # The fields of BatchStatisticsFields (Flax's BatchNorm's but momentum, guard_nonfinite), and:
  option_aliases: ClassVar[dict[str, str]] = {"bn_momentum": "momentum"}
  momentum: float = 0.99
  r_max: float = 3.0
  d_max: float = 5.0
  warmup_steps: int = 0

  @classmethod
  def statistics_for(cls, cfg) -> dict:
    """The initial ``batch_stats``: BatchNorm's ``mean`` and ``var``."""
    return dict(BN_STATISTICS)

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates r_max, d_max, warmup_steps, momentum and epsilon, naming the argument."""
    check_renorm_config(cfg.r_max, cfg.d_max, cfg.warmup_steps, cfg.momentum, cfg.epsilon)

  @nn.compact
  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``.

    Args:
      x: the input; statistics are per feature along ``axis``.
      use_running_average: True for inference (stored ``mean``/``var``).
      step: 0-based global training step for the warm-up of the limits;
        None means the full limits (r_max, d_max).
      mask: boolean array broadcastable to ``x``: which entries enter the
        batch statistics.
    """
    return linen_call(self, batch_renorm, x, use_running_average, mask=mask, step=step)


class BatchRenormNNX(NNXNorm):
  r"""Batch Renormalization for ``flax.nnx`` (``mbn_jax.nnx.BatchRenorm``).

  The same fields, equations and arithmetic as :class:`BatchRenorm` (both run
  :func:`batch_renorm`): r, d clipped and ``stop_gradient``-ed,
  y = γ·((x − μ_B)/σ_B · r + d) + β, mean/var updated with **momentum
  weighting the old value**. ``BatchRenormNNX(num_features, *, rngs,
  **fields)``; ``__call__(x, use_running_average=None, *, step=None,
  mask=None)``. ``model.eval()``/``model.train()`` toggle
  ``use_running_average``.
  """

  linen = BatchRenorm
  body = staticmethod(batch_renorm)

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; arguments as in :class:`BatchRenorm`."""
    return nnx_front_end(self, x, use_running_average, step=step, mask=mask)
