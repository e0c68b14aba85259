"""Momentum Batch Normalization for ``flax.nnx`` (Eq. 8, Algorithm 1).

The same layer and the same arithmetic as :class:`mbn_jax.MomentumBatchNorm`
(both are thin shells around :mod:`mbn_jax.functional`); the four statistics
are ``nnx.BatchStat`` variables: ``mean``/``var`` (inference, the names of
``nnx.BatchNorm``) and ``train_mean``/``train_var`` (training, Eq. 8).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from mbn_jax import functional as F

__all__ = [
  "MomentumBatchNorm",
  "check_input",
  "feature_shape_of",
  "init_statistics",
  "nnx_norm_front_end",
  "resolve_use_running_average",
  "statistic_names",
]


def feature_shape_of(num_features, axis) -> tuple[int, ...]:
  """The statistics' shape: ``(num_features,)``, or the tuple itself for tuple axes."""
  shape = (
    (num_features,)
    if isinstance(num_features, numbers.Integral) and not isinstance(num_features, bool)
    else tuple(num_features)
    if isinstance(num_features, (tuple, list))
    else None
  )
  n_axes = 1 if isinstance(axis, numbers.Integral) else len(tuple(axis))
  if (
    shape is None
    or not shape
    or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0 for d in shape)
    or len(shape) != n_axes
  ):
    raise ValueError(
      f"num_features must be a positive int (one feature axis) or a tuple of positive "
      f"ints, one per feature axis of axis={axis!r}; got {num_features!r}."
    )
  return tuple(int(d) for d in shape)


def resolve_use_running_average(layer: str, field, call):
  """``call`` if given, else the constructor's ``field``; an error naming both if neither."""
  value = field if call is None else call
  if value is None:
    raise ValueError(
      f"{layer} needs use_running_average: pass it to the constructor or to __call__ "
      "(True for inference, False for training)."
    )
  return value


_INITIAL = {
  "mean": jnp.zeros,
  "var": jnp.ones,
  "train_mean": jnp.zeros,
  "train_var": jnp.ones,
  **F.DEFERRED_STATISTICS,
}
_MBN_NAMES = ("mean", "var", "train_mean", "train_var")


def statistic_names(names: tuple[str, ...], accumulation_steps: int) -> tuple[str, ...]:
  """A layer's ``nnx.BatchStat`` names: ``names``, plus the deferred accumulator when k > 1."""
  return names + tuple(F.DEFERRED_STATISTICS) if accumulation_steps > 1 else names


def init_statistics(
  module,
  shape,
  names,
  force_float32_reductions,
  param_dtype,
  use_scale,
  use_bias,
  scale_init,
  bias_init,
  rngs,
) -> None:
  """Creates an nnx norm's ``nnx.BatchStat`` statistics and ``scale``/``bias`` params."""
  stat_dtype = jnp.float32 if force_float32_reductions else param_dtype
  for name in names:
    setattr(module, name, nnx.BatchStat(_INITIAL[name](shape, stat_dtype)))
  module.scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype)) if use_scale else None
  module.bias = nnx.Param(bias_init(rngs.params(), shape, param_dtype)) if use_bias else None


def nnx_norm_front_end(module, body, layer: str, x, use_running_average, names, **call):
  """An nnx norm's whole ``__call__`` around its pure ``body`` (the linen layer's body).

  Reads the ``nnx.BatchStat`` statistics ``names`` and the params, runs
  ``body(module, x, stats, scale, bias, use_running_average=..., **call)`` and
  writes the statistics back in training.
  """
  use_running_average = resolve_use_running_average(
    layer, module.use_running_average, use_running_average
  )
  x = jnp.asarray(x)
  check_input(layer, x, module.axis, getattr(module, names[0])[...].shape, call.get("mask"))
  stats = {name: getattr(module, name)[...] for name in names}
  scale = module.scale[...] if module.scale is not None else None
  bias = module.bias[...] if module.bias is not None else None
  y, new_stats = body(
    module, x, stats, scale, bias, use_running_average=use_running_average, **call
  )
  if not use_running_average:
    for name, value in new_stats.items():
      getattr(module, name)[...] = value
  return y


def check_input(layer: str, x, axis, feature_shape, mask):
  """(feature_axes, reduction_axes) of ``x``, checking its features and ``mask``."""
  feature_axes, reduction_axes = F.feature_and_reduction_axes(x.ndim, axis)
  got = tuple(x.shape[a] for a in feature_axes)
  if got != tuple(feature_shape):
    raise ValueError(
      f"{layer}(num_features={feature_shape if len(feature_shape) > 1 else feature_shape[0]}) "
      f"got an input with {got} features along axis={axis}: set num_features to the "
      "input's feature size or fix axis."
    )
  F.check_mask(mask, x.shape)
  return feature_axes, reduction_axes


class MomentumBatchNorm(nnx.Module):
  r"""Momentum Batch Normalization (Yong et al., ECCV 2020), ``flax.nnx``.

  Training: μ ← λ μ + (1 − λ) μ_B, σ² ← λ σ² + (1 − λ) σ²_B (Eq. 8), output
  γ (x − μ)/√(σ² + ε) + β; inference statistics mean ← τ mean + (1 − τ) μ_B,
  var ← τ var + (1 − τ) σ²_B. Inference normalizes with ``mean``/``var``.
  λ = ``momentum`` if given, else :func:`mbn_jax.train_momentum` (Eq. 11) at
  ``step``; τ = :func:`mbn_jax.inference_momentum` (Eq. 12). **Both weight
  the old value** (Flax convention; PyTorch's ``momentum`` is 1 − τ).
  Every field of :class:`mbn_jax.MomentumBatchNorm` is an argument here with
  the same meaning (dtype policy, ``force_float32_reductions``, tuple
  ``axis``, ``mask``, ``guard_nonfinite``, ``accumulation_steps``), and both run the
  same pure body
  (:func:`mbn_jax.functional.mbn_statistics`); ``num_features`` (an int, or
  one int per feature axis for a tuple ``axis``) and ``rngs`` are as in
  ``nnx.BatchNorm``. ``model.eval()`` /
  ``model.train()`` (or ``nnx.view``) toggle ``use_running_average``.
  """

  def __init__(
    self,
    num_features: int | tuple[int, ...],
    *,
    use_running_average: bool | None = False,
    axis: int | tuple[int, ...] = -1,
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
    total_epochs: int | None = None,
    steps_per_epoch: int | None = None,
    ideal_batch_size: int = 32,
    tau0: float = 0.85,
    batch_size: int | None = None,
    guard_nonfinite: bool = True,
    accumulation_steps: int = 1,
    rngs: nnx.Rngs,
  ):
    shape = feature_shape_of(num_features, axis)
    F.check_layer_config(
      total_epochs=total_epochs,
      steps_per_epoch=steps_per_epoch,
      ideal_batch_size=ideal_batch_size,
      tau0=tau0,
      batch_size=batch_size,
      epsilon=epsilon,
      accumulation_steps=accumulation_steps,
    )
    init_statistics(
      self,
      shape,
      statistic_names(_MBN_NAMES, accumulation_steps),
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
    self.epsilon = epsilon
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.axis_name = axis_name
    self.axis_index_groups = axis_index_groups
    self.use_fast_variance = use_fast_variance
    self.force_float32_reductions = force_float32_reductions
    self.total_epochs = total_epochs
    self.steps_per_epoch = steps_per_epoch
    self.ideal_batch_size = ideal_batch_size
    self.tau0 = tau0
    self.batch_size = batch_size
    self.guard_nonfinite = guard_nonfinite
    self.accumulation_steps = accumulation_steps

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    momentum: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; arguments as in :class:`mbn_jax.MomentumBatchNorm`."""
    return nnx_norm_front_end(
      self,
      F.mbn_layer,
      "MomentumBatchNorm",
      x,
      use_running_average,
      statistic_names(_MBN_NAMES, self.accumulation_steps),
      step=step,
      momentum=momentum,
      mask=mask,
    )

  def set_view(self, use_running_average: bool | None = None):
    """Used by ``nnx.view``/``model.eval()``: sets ``use_running_average``."""
    if use_running_average is not None:
      self.use_running_average = use_running_average
