"""Pure functions behind the MBN layers (shared by the linen and nnx modules).

Everything here is a plain ``jax.numpy`` function of arrays: jit-able,
differentiable with ``jax.grad`` (there is no custom VJP anywhere in mbn_jax),
and usable on its own by research variants.

Momentum convention: every ``momentum`` here weights the *old* value,
``new = momentum * old + (1 - momentum) * batch`` (Flax's convention; PyTorch's
``momentum`` argument is ``1 - momentum``).
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax.linen.normalization import _compute_stats

from mbn_jax import schedules

__all__ = [
    "batch_statistics",
    "moving_average",
    "momentum_normalizer_statistics",
    "normalize",
    "statistics_batch_size",
    "resolve_train_momentum",
    "feature_and_reduction_axes",
    "check_mask",
    "check_layer_config",
]


def feature_and_reduction_axes(ndim: int, axis) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Canonical (feature_axes, reduction_axes) for an input of rank ``ndim``.

  Raises a ValueError naming ``axis`` when it is out of range.
  """
  axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
  if not axes:
    raise ValueError("axis must name at least one feature axis, got ().")
  for a in axes:
    if not isinstance(a, numbers.Integral) or not -ndim <= a < ndim:
      raise ValueError(
          f"axis={axis!r} is out of range for an input of rank {ndim}: each "
          f"feature axis must lie in [{-ndim}, {ndim - 1}] (use axis=-1 for "
          "channels-last, axis=1 for NCHW)."
      )
  feature_axes = tuple(sorted({int(a) % ndim for a in axes}))
  if len(feature_axes) == ndim:
    raise ValueError(
        f"axis={axis!r} leaves no axis to reduce over for an input of rank {ndim}."
    )
  reduction_axes = tuple(i for i in range(ndim) if i not in feature_axes)
  return feature_axes, reduction_axes


def check_mask(mask, x_shape) -> None:
  """Raises a ValueError if ``mask`` does not broadcast to the input shape."""
  if mask is None:
    return
  mask_shape = tuple(jnp.shape(mask))
  try:
    broadcast = jnp.broadcast_shapes(mask_shape, tuple(x_shape))
  except ValueError:
    broadcast = None
  if broadcast != tuple(x_shape):
    raise ValueError(
        f"mask has shape {mask_shape}, which does not broadcast to the input "
        f"shape {tuple(x_shape)}: pass a boolean mask of the input's shape (or "
        "one broadcastable to it, e.g. with size-1 feature axes)."
    )


def check_layer_config(
    *,
    total_epochs,
    steps_per_epoch,
    ideal_batch_size,
    tau0,
    batch_size,
    epsilon,
) -> None:
  """Validates the MBN hyper-parameters, naming the offending argument."""
  for name, value in (("total_epochs", total_epochs), ("steps_per_epoch", steps_per_epoch),
                      ("batch_size", batch_size)):
    if value is not None:
      schedules.validate_positive_int(value, name)
  schedules.validate_positive_int(ideal_batch_size, "ideal_batch_size")
  schedules.inference_momentum(1, ideal_batch_size=ideal_batch_size, tau0=tau0)
  if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or epsilon <= 0:
    raise ValueError(f"epsilon must be a positive float, got {epsilon!r}.")


def batch_statistics(
    x,
    reduction_axes: Sequence[int],
    *,
    dtype=None,
    axis_name: str | None = None,
    axis_index_groups: Any = None,
    use_fast_variance: bool = True,
    mask=None,
    force_float32_reductions: bool = True,
):
  """Batch mean μ_B and *biased* variance σ²_B over ``reduction_axes``.

  μ_B = mean(x), σ²_B = mean(x²) − μ_B² (clipped at 0), computed in at least
  float32, with one stacked ``pmean`` over ``axis_name`` when given (the
  statistics then equal those of the concatenated global batch). This is
  Flax's own ``_compute_stats``, reused unchanged.
  """
  return _compute_stats(
      x,
      reduction_axes,
      dtype=dtype,
      axis_name=axis_name,
      axis_index_groups=axis_index_groups,
      use_fast_variance=use_fast_variance,
      mask=mask,
      force_float32_reductions=force_float32_reductions,
  )


def moving_average(old, new, momentum):
  """Exponential moving average: ``momentum * old + (1 - momentum) * new``.

  ``momentum`` weights the *old* value (Flax convention). Used with τ for the
  inference statistics (Algorithm 1): μ_inf ← τ μ_inf + (1 − τ) μ_B.
  """
  return momentum * old + (1.0 - momentum) * new


def momentum_normalizer_statistics(batch_mean, batch_var, train_mean, train_var, momentum):
  r"""Eq. 8 / Algorithm 1: the statistics MBN normalizes with during training.

  μ ← λ μ + (1 − λ) μ_B,   σ² ← λ σ² + (1 − λ) σ²_B.

  The previous moving values ``train_mean``/``train_var`` are constants for
  this step (``stop_gradient``), so ``jax.grad`` through the result gives
  exactly the paper's Eq. 13: the gradient flows only through the current
  batch statistics, scaled by (1 − λ). λ weights the *old* value.

  Returns:
    ``(mean, var)``: both the normalizer and the new training moving values.
  """
  lam = jnp.asarray(momentum, jnp.result_type(batch_mean))
  mean = moving_average(jax.lax.stop_gradient(train_mean), batch_mean, lam)
  var = moving_average(jax.lax.stop_gradient(train_var), batch_var, lam)
  return mean, var


def normalize(x, mean, var, scale, bias, feature_axes, epsilon, dtype=None):
  """y = (x − mean) · rsqrt(var + ε) · scale + bias, broadcast per feature.

  ``mean``/``var``/``scale``/``bias`` have the feature shape; ``scale`` or
  ``bias`` may be None. The arithmetic and its order are Flax's ``_normalize``,
  so MBN at λ = 0 reproduces ``flax.linen.BatchNorm`` bit for bit; the result
  has ``dtype`` or, if None, the promoted dtype of x and the parameters.
  """
  feature_shape = [1] * x.ndim
  for ax in feature_axes:
    feature_shape[ax] = x.shape[ax]
  y = x - mean.reshape(feature_shape)
  mul = jax.lax.rsqrt(var.reshape(feature_shape) + epsilon)
  args = [x]
  if scale is not None:
    scale = scale.reshape(feature_shape)
    mul = mul * scale
    args.append(scale)
  y = y * mul
  if bias is not None:
    bias = bias.reshape(feature_shape)
    y = y + bias
    args.append(bias)
  if dtype is None:
    dtype = jnp.result_type(*args)
  return jnp.asarray(y, dtype)


def statistics_batch_size(
    x, *, axis_name=None, axis_index_groups=None, batch_size=None, batch_axis: int = 0
) -> int:
  """The batch size m that the statistics are computed over (a Python int).

  ``batch_size`` if given (the override); else ``x.shape[batch_axis]`` (the
  number of examples on this device — for images, the images, not the
  pixels), times the number of devices that ``axis_name`` synchronizes over
  (the size of one group when ``axis_index_groups`` is given).
  """
  if batch_size is not None:
    return schedules.validate_positive_int(batch_size, "batch_size")
  m = int(x.shape[batch_axis])
  if axis_name is not None:
    if axis_index_groups is not None:
      m *= len(axis_index_groups[0])
    else:
      m *= int(jax.lax.axis_size(axis_name))
  return m


def resolve_train_momentum(
    *,
    step,
    momentum,
    batch_size: int,
    total_epochs,
    steps_per_epoch,
    ideal_batch_size: int,
    layer: str = "MomentumBatchNorm",
):
  """λ for this training step: ``momentum`` if given, else Eq. 11 at ``step``.

  Raises a ValueError that says what to pass when neither is available.
  """
  if momentum is not None:
    lam = jnp.asarray(momentum, jnp.result_type(float))
    try:
      bad = bool(jnp.any((lam < 0) | (lam >= 1)))
    except jax.errors.ConcretizationTypeError:
      bad = False  # traced momentum: [0, 1) is the caller's contract.
    if bad:
      raise ValueError(
          f"momentum must lie in [0, 1) (weight on the old value), got {momentum}."
      )
    return lam
  if step is None:
    raise ValueError(
        f"{layer} in training mode needs the training step: call it with "
        "step=<0-based global step> (e.g. model.apply(..., step=state.step)), "
        "or pass a fixed training momentum with momentum=<λ in [0, 1)>. For "
        "inference, pass use_running_average=True."
    )
  if total_epochs is None or steps_per_epoch is None:
    missing = [n for n, v in (("total_epochs", total_epochs),
                              ("steps_per_epoch", steps_per_epoch)) if v is None]
    raise ValueError(
        f"{layer} got step= but no {' and '.join(missing)}: Eq. 11 needs the "
        f"schedule length. Construct it with {layer}(total_epochs=T, "
        "steps_per_epoch=S, ...), or pass momentum=<λ> instead of step=."
    )
  return schedules.train_momentum(
      step,
      batch_size=batch_size,
      total_epochs=total_epochs,
      steps_per_epoch=steps_per_epoch,
      ideal_batch_size=ideal_batch_size,
  )
