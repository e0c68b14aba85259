"""The comparison set of the paper: "the same model, another norm".

* :class:`BatchRenorm` (``flax.linen``) and :class:`BatchRenormNNX`
  (``flax.nnx``): Batch Renormalization (Ioffe, NeurIPS 2017), the paper's
  BReN baseline.
* :func:`make_norm`: one factory for ``'bn'``, ``'mbn'``, ``'brn'``, ``'gn'``,
  ``'ln'``, ``'in'`` and ``'none'``. Every module it builds is called the same
  way, ``module(x, use_running_average, *, step=None)``, so a model never
  branches on the norm's name.

Momentum convention (as everywhere in mbn_jax and in ``flax.linen.BatchNorm``):
a momentum weights the *old* value, ``running <- momentum * running +
(1 - momentum) * batch``. PyTorch's ``momentum=p`` is ``1 - p`` here.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx
from flax.linen import initializers
from flax.linen.module import merge_param
from jax.typing import ArrayLike

from mbn_jax import functional as F
from mbn_jax import nnx as mbn_nnx
from mbn_jax import schedules
from mbn_jax.layers import BN_STATISTICS, MomentumBatchNorm, linen_norm_front_end, statistics_of

__all__ = [
  "BRN_MINI_IMAGENET_OPTIONS",
  "BatchNorm",
  "BatchRenorm",
  "BatchRenormNNX",
  "GroupNorm",
  "Identity",
  "InstanceNorm",
  "LayerNorm",
  "NORM_NAMES",
  "NORM_OPTIONS",
  "group_count",
  "make_norm",
  "renorm_correction",
  "renorm_limits",
]

# The paper's best BReN setting on Mini-ImageNet at batch size 2 (Sec. 5.4):
# ``make_norm('brn', **BRN_MINI_IMAGENET_OPTIONS)``.
BRN_MINI_IMAGENET_OPTIONS = {"r_max": 1.5, "d_max": 0.5}


# --------------------------------------------------------------------------
# Batch Renormalization: pure pieces shared by the linen and nnx layers.
# --------------------------------------------------------------------------


def _check_renorm_config(r_max, d_max, warmup_steps, momentum, epsilon) -> None:
  """Validates the BReN hyper-parameters, naming the offending argument."""

  def real(v):
    return not isinstance(v, bool) and isinstance(v, numbers.Real)

  if not real(r_max) or r_max < 1:
    raise ValueError(
      f"r_max must be a float >= 1 (r is clipped to [1/r_max, r_max]), got "
      f"{r_max!r}. r_max=1, d_max=0 is plain BatchNorm; Ioffe uses r_max=3."
    )
  if not real(d_max) or d_max < 0:
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
  if not real(epsilon) or epsilon <= 0:
    raise ValueError(f"epsilon must be a positive float, got {epsilon!r}.")


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


def renorm_layer(
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
  _check_renorm_config(cfg.r_max, cfg.d_max, cfg.warmup_steps, cfg.momentum, cfg.epsilon)
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


class BatchRenorm(nn.Module):
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

  use_running_average: bool | None = None
  axis: int | tuple[int, ...] = -1
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = initializers.zeros
  scale_init: Any = initializers.ones
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True
  r_max: float = 3.0
  d_max: float = 5.0
  warmup_steps: int = 0
  guard_nonfinite: bool = True

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
    use_running_average = merge_param(
      "use_running_average", self.use_running_average, use_running_average
    )
    return linen_norm_front_end(
      self, renorm_layer, x, use_running_average, BN_STATISTICS, mask=mask, step=step
    )


class BatchRenormNNX(nnx.Module):
  r"""Batch Renormalization (Ioffe 2017) for ``flax.nnx``; twin of :class:`BatchRenorm`.

  The same equations and arithmetic (see :class:`BatchRenorm`): r, d
  clipped and ``stop_gradient``-ed, y = γ·((x − μ_B)/σ_B · r + d) + β,
  mean/var updated with **momentum weighting the old value**. Arguments as in
  ``nnx.BatchNorm`` (``num_features``, ``rngs``) plus ``r_max``, ``d_max``,
  ``warmup_steps``; ``__call__(x, use_running_average=None, *, step=None,
  mask=None)``. ``model.eval()``/``model.train()`` toggle
  ``use_running_average``.
  """

  def __init__(
    self,
    num_features: int | tuple[int, ...],
    *,
    use_running_average: bool | None = False,
    axis: int | tuple[int, ...] = -1,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    use_bias: bool = True,
    use_scale: bool = True,
    bias_init: Any = nnx.initializers.zeros_init(),
    scale_init: Any = nnx.initializers.ones_init(),
    axis_name: str | None = None,
    axis_index_groups: Any = None,
    use_fast_variance: bool = True,
    force_float32_reductions: bool = True,
    r_max: float = 3.0,
    d_max: float = 5.0,
    warmup_steps: int = 0,
    guard_nonfinite: bool = True,
    rngs: nnx.Rngs,
  ):
    shape = mbn_nnx.feature_shape_of(num_features, axis)
    _check_renorm_config(r_max, d_max, warmup_steps, momentum, epsilon)
    mbn_nnx.init_statistics(
      self,
      shape,
      ("mean", "var"),
      force_float32_reductions,
      param_dtype,
      use_scale,
      use_bias,
      scale_init,
      bias_init,
      rngs,
    )
    self.num_features = num_features
    self.use_running_average = use_running_average
    self.axis = axis
    self.momentum = momentum
    self.epsilon = epsilon
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.axis_name = axis_name
    self.axis_index_groups = axis_index_groups
    self.use_fast_variance = use_fast_variance
    self.force_float32_reductions = force_float32_reductions
    self.r_max = r_max
    self.d_max = d_max
    self.warmup_steps = warmup_steps
    self.guard_nonfinite = guard_nonfinite

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; arguments as in :class:`BatchRenorm`."""
    return mbn_nnx.nnx_norm_front_end(
      self,
      renorm_layer,
      "BatchRenormNNX",
      x,
      use_running_average,
      ("mean", "var"),
      step=step,
      mask=mask,
    )

  def set_view(self, use_running_average: bool | None = None):
    """Used by ``nnx.view``/``model.eval()``: sets ``use_running_average``."""
    if use_running_average is not None:
      self.use_running_average = use_running_average


# --------------------------------------------------------------------------
# Flax's norms with the uniform call ``module(x, use_running_average, *, step=None)``.
# Parameter trees are exactly those of the wrapped Flax layer (no nesting).
# --------------------------------------------------------------------------


class BatchNorm(nn.BatchNorm):
  """``flax.linen.BatchNorm``'s fields, variables and arithmetic, uniform call, guarded statistics.

  y = γ (x − μ_B)/√(σ²_B + ε) + β in training; mean ← momentum·mean +
  (1 − momentum)·μ_B (**momentum weights the old value**). The body is
  :func:`mbn_jax.functional.bn_layer`: bit-equal to ``flax.linen.BatchNorm``
  on one device, the exact statistics of the concatenated valid entries
  across devices (``axis_name``, also with masks and unequal counts), and a
  feature whose batch statistics are non-finite (``guard_nonfinite``) or
  empty keeps its running statistics. ``step`` is accepted and ignored.

  ``accumulation_steps`` k > 1 is gradient accumulation's *deferred* mode
  (torchgpipe's ``DeferredBatchNorm``): every micro-batch is still normalized
  with its own statistics, but the running statistics move once per k
  training calls, by ``momentum``, with the pooled moments of those k
  micro-batches (accumulator in ``batch_stats``:
  :func:`mbn_jax.functional.deferred_moving_average`). Default 1.
  """

  guard_nonfinite: bool = True
  accumulation_steps: int = 1

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
    if not isinstance(self.momentum, numbers.Real) or not 0 <= self.momentum <= 1:
      raise ValueError(
        f"momentum must lie in [0, 1] (weight on the OLD running value, Flax "
        f"convention; PyTorch's 0.1 is 0.9 here), got {self.momentum!r}."
      )
    schedules.validate_positive_int(self.accumulation_steps, "accumulation_steps")
    use_running_average = merge_param(
      "use_running_average", self.use_running_average, use_running_average
    )
    return linen_norm_front_end(
      self,
      F.bn_layer,
      x,
      use_running_average,
      statistics_of(BN_STATISTICS, self.accumulation_steps),
      mask=mask,
    )


def group_count(channels: int, num_groups: int = 32) -> int:
  """The number of GroupNorm groups for ``channels`` channels.

  The largest divisor of ``channels`` that is <= ``num_groups``: 32 groups
  (the paper's setting) whenever 32 divides C; e.g. C=16 → 16, C=48 → 24,
  C=3 → 3. Always >= 1, so GroupNorm is defined for every channel count.
  """
  for name, v in (("channels", channels), ("num_groups", num_groups)):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
      raise ValueError(f"{name} must be a positive int, got {v!r}.")
  return max(g for g in range(1, min(channels, num_groups) + 1) if channels % g == 0)


class GroupNorm(nn.Module):
  """Group normalization (Wu & He 2018) over (H, W, C/G) per example, uniform call.

  y = γ (x − μ_g)/√(σ²_g + ε) + β with statistics per example and group.
  The group count is :func:`group_count` (C, num_groups): 32 when 32 divides
  C, else the largest divisor of C that is <= 32. ``use_running_average`` and
  ``step`` are accepted and ignored. Variables: ``params/scale``,
  ``params/bias`` (those of ``flax.linen.GroupNorm``).
  """

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = initializers.zeros
  scale_init: Any = initializers.ones

  @nn.compact
  def __call__(
    self, x: ArrayLike, use_running_average: bool | None = None, *, step: ArrayLike | None = None
  ) -> jax.Array:
    del use_running_average, step
    x = jnp.asarray(x)
    groups = group_count(x.shape[-1], self.num_groups)
    norm = nn.GroupNorm(
      num_groups=groups,
      epsilon=self.epsilon,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      use_bias=self.use_bias,
      use_scale=self.use_scale,
      bias_init=self.bias_init,
      scale_init=self.scale_init,
      name="group_norm",
    )
    nn.share_scope(self, norm)
    return norm(x)


class LayerNorm(nn.Module):
  """Layer normalization over all non-batch axes (H, W, C), uniform call.

  y = γ (x − μ)/√(σ² + ε) + β, μ and σ² per example over (H, W, C), γ and β
  per channel: the LN of the GroupNorm paper (= GroupNorm with one group).
  (``flax.linen.LayerNorm``'s default would normalize over C only.)
  ``use_running_average`` and ``step`` are accepted and ignored.
  """

  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = initializers.zeros
  scale_init: Any = initializers.ones

  @nn.compact
  def __call__(
    self, x: ArrayLike, use_running_average: bool | None = None, *, step: ArrayLike | None = None
  ) -> jax.Array:
    del use_running_average, step
    x = jnp.asarray(x)
    norm = nn.LayerNorm(
      epsilon=self.epsilon,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      use_bias=self.use_bias,
      use_scale=self.use_scale,
      bias_init=self.bias_init,
      scale_init=self.scale_init,
      reduction_axes=tuple(range(1, x.ndim)),
      feature_axes=-1,
      name="layer_norm",
    )
    nn.share_scope(self, norm)
    return norm(x)


class InstanceNorm(nn.InstanceNorm):
  """``flax.linen.InstanceNorm`` (per example and channel, over H, W), uniform call.

  y = γ (x − μ_nc)/√(σ²_nc + ε) + β. ``use_running_average`` and ``step`` are
  accepted and ignored.
  """

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    del use_running_average, step
    return super().__call__(x, mask=None if mask is None else jnp.asarray(mask))


class Identity(nn.Module):
  """No normalization (``'none'``): returns ``x``; every argument is ignored."""

  @nn.compact
  def __call__(
    self, x: ArrayLike, use_running_average: bool | None = None, *, step: ArrayLike | None = None
  ) -> jax.Array:
    del use_running_average, step
    return jnp.asarray(x)


# --------------------------------------------------------------------------
# make_norm
# --------------------------------------------------------------------------

NORM_NAMES = ("bn", "mbn", "brn", "gn", "ln", "in", "none")

_CLASSES: dict[str, Callable[..., nn.Module]] = {
  "bn": BatchNorm,
  "mbn": MomentumBatchNorm,
  "brn": BatchRenorm,
  "gn": GroupNorm,
  "ln": LayerNorm,
  "in": InstanceNorm,
  "none": Identity,
}
# make_norm's defaults where they differ from the classes' (PyTorch's BN
# momentum 0.1, the paper's framework, is 0.9 in Flax's convention).
_DEFAULTS = {"bn": {"momentum": 0.9}, "brn": {"momentum": 0.9}}

# The options make_norm takes (every norm accepts all and ignores those it does
# not use). Each routes to the module field of the same name where the norm's
# class has one; ``bn_momentum`` is an alias of ``momentum`` (bn and brn).
NORM_OPTIONS = (
  "accumulation_steps",
  "axis_name",
  "axis_index_groups",
  "batch_size",
  "bn_momentum",
  "d_max",
  "dtype",
  "epsilon",
  "guard_nonfinite",
  "ideal_batch_size",
  "momentum",
  "num_groups",
  "param_dtype",
  "r_max",
  "steps_per_epoch",
  "tau0",
  "total_epochs",
  "warmup_steps",
)


def _fields(cls) -> set[str]:
  """The dataclass fields of a linen norm class."""
  return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


# Per-example norms never synchronize over devices, although Flax's
# InstanceNorm has the fields (it would average per-example statistics).
_NOT_ROUTED = {"in": {"axis_name", "axis_index_groups"}}

# Which options each norm uses, derived from its fields (option name == field name).
_ROUTES: dict[str, tuple[str, ...]] = {
  name: tuple(o for o in NORM_OPTIONS if o in _fields(cls) and o not in _NOT_ROUTED.get(name, ()))
  for name, cls in _CLASSES.items()
}


def make_norm(name: str, **options) -> Callable[..., nn.Module]:
  """A factory of normalization layers, picked by name.

  Args:
    name: one of ``'bn'`` (``flax.linen.BatchNorm``), ``'mbn'``
      (:class:`mbn_jax.MomentumBatchNorm`), ``'brn'`` (:class:`BatchRenorm`),
      ``'gn'`` (:class:`GroupNorm`, 32 groups, see :func:`group_count`),
      ``'ln'`` (:class:`LayerNorm`), ``'in'`` (:class:`InstanceNorm`),
      ``'none'`` (:class:`Identity`).
    **options: any of :data:`NORM_OPTIONS` — ``axis_name``,
      ``axis_index_groups``, ``dtype``, ``param_dtype``, ``epsilon``,
      ``momentum`` / its alias ``bn_momentum`` (bn, brn; default 0.9, weight
      on the OLD value), ``total_epochs``, ``steps_per_epoch``,
      ``ideal_batch_size``, ``tau0``, ``batch_size`` (mbn), ``r_max``,
      ``d_max``, ``warmup_steps`` (brn), ``num_groups`` (gn),
      ``accumulation_steps`` (bn, mbn: k > 1 defers the inference statistics
      to once per k micro-batches, gradient accumulation). **Every norm
      accepts every option and ignores those it does not use**, so a training
      program can always pass one dict; an option set to None means "the
      default". An unknown option name is an error (it catches typos).

  Returns:
    ``norm_factory(name=None, **kwargs) -> flax.linen.Module``; ``kwargs``
    are module fields that override the options (ignored for ``'none'``).
    Every module is called as ``module(x, use_running_average, *, step=None)``;
    layers that do not use ``step`` or ``use_running_average`` ignore them.

  Raises:
    ValueError: unknown ``name`` (lists the valid names), unknown option
      names, or conflicting ``momentum``/``bn_momentum``.
  """
  if not isinstance(name, str) or name.lower() not in _ROUTES:
    raise ValueError(
      f"Unknown norm name {name!r}: make_norm(name=...) takes one of "
      f"{', '.join(repr(n) for n in NORM_NAMES)}."
    )
  name = name.lower()
  unknown = sorted(set(options) - set(NORM_OPTIONS))
  if unknown:
    raise ValueError(
      f"make_norm got unknown option(s) {unknown}; valid options (every norm "
      f"accepts all and ignores those it does not use): {list(NORM_OPTIONS)}."
    )
  options = {k: v for k, v in options.items() if v is not None}
  if "bn_momentum" in options:
    alias = options.pop("bn_momentum")
    if "momentum" in options and options["momentum"] != alias:
      raise ValueError(
        f"make_norm got momentum={options['momentum']!r} and bn_momentum="
        f"{alias!r}: they are the same option; pass one."
      )
    options["momentum"] = alias
  fields = dict(_DEFAULTS.get(name, {}))
  fields.update({opt: options[opt] for opt in _ROUTES[name] if opt in options})
  if name == "brn":
    _check_renorm_config(
      fields.get("r_max", 3.0),
      fields.get("d_max", 5.0),
      fields.get("warmup_steps", 0),
      fields["momentum"],
      fields.get("epsilon", 1e-5),
    )
  cls = _CLASSES[name]

  def norm_factory(name: str | None = None, **kwargs) -> nn.Module:
    if cls is Identity:
      return Identity(name=name)
    return cls(name=name, **{**fields, **kwargs})

  return norm_factory
