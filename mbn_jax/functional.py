"""The pieces every norm shares: moments, exact pooling, moving averages, checks.

Everything here is a plain ``jax.numpy`` function of arrays: jit-able,
differentiable with ``jax.grad`` (the layers' backward pass is JAX's own; no
custom VJP is involved), and usable on its own by research variants. Each
norm's own body lives in its file (``mbn_jax/norms/<norm>.py``) and is made
of these: :func:`batch_moments` (exact over devices and masks),
:func:`pool_moments` (the law of total variance: devices, micro-batches,
precise statistics), :func:`guarded_moving_average`,
:func:`deferred_moving_average`, :func:`normalize` and the argument checks.

Momentum convention: every ``momentum`` here weights the *old* value,
``new = momentum * old + (1 - momentum) * batch`` (Flax's convention; PyTorch's
``momentum`` argument is ``1 - momentum``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mbn_jax import schedules

__all__ = [
  "DEFERRED_STATISTICS",
  "Moments",
  "abs_sq",
  "batch_moments",
  "batch_statistics",
  "check_epsilon",
  "check_input",
  "check_mask",
  "check_per_example_reduction",
  "check_step",
  "check_training_batch",
  "deferred_moving_average",
  "feature_and_reduction_axes",
  "guarded_moving_average",
  "layer_batch_moments",
  "moving_average",
  "normalize",
  "pool_moments",
  "real_dtype",
  "statistics_batch_size",
  "updatable",
]


def feature_and_reduction_axes(ndim: int, axis) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Canonical (feature_axes, reduction_axes) for an input of rank ``ndim``.

  Raises a ValueError naming ``axis`` when it is out of range.
  """
  if (
    not isinstance(axis, numbers.Integral)
    and not (isinstance(axis, (tuple, list)) and all(isinstance(a, numbers.Integral) for a in axis))
    or isinstance(axis, bool)
  ):
    raise TypeError(
      f"axis must be an int or a tuple of ints (the feature axes; -1 for channels-last), "
      f"got {axis!r}."
    )
  axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
  if not axes:
    raise ValueError("axis must name at least one feature axis, got ().")
  for a in axes:
    if not isinstance(a, numbers.Integral) or not -ndim <= int(a) < ndim:
      raise ValueError(
        f"axis={axis!r} is out of range for an input of rank {ndim}: each "
        f"feature axis must lie in [{-ndim}, {ndim - 1}] (use axis=-1 for "
        "channels-last, axis=1 for NCHW)."
      )
  feature_axes = tuple(sorted({int(a) % ndim for a in axes}))
  if len(feature_axes) == ndim:
    raise ValueError(f"axis={axis!r} leaves no axis to reduce over for an input of rank {ndim}.")
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


def check_epsilon(epsilon) -> None:
  """Raises a ValueError unless ``epsilon`` is a positive, finite real number."""
  if (
    isinstance(epsilon, bool)
    or not isinstance(epsilon, numbers.Real)
    or not math.isfinite(float(epsilon))
    or float(epsilon) <= 0
  ):
    raise ValueError(
      f"epsilon must be a positive finite float (added to the variance; Flax uses 1e-5), "
      f"got {epsilon!r}."
    )


def check_input(x, layer: str = "the norm", *, complex_ok: bool = False) -> jax.Array:
  """``x`` as a JAX array; raises a TypeError for input the layer cannot normalize correctly.

  Refused: anything that is not a numeric array (a string, an object) and,
  unless ``complex_ok`` (the layers whose capabilities say ``complex_input``:
  BatchNorm and MomentumBatchNorm, which compute complex input as
  ``flax.linen.BatchNorm`` does — a complex mean and the real variance
  ``E[|x − μ|²]``), complex input: the other norms' statistics are not defined for
  it (normalize the real and imaginary parts as separate features instead).
  """
  try:
    x = jnp.asarray(x)
  except TypeError as e:
    raise TypeError(
      f"{layer} takes a numeric array as its input x, got {type(x).__name__} ({e})."
    ) from None
  if not complex_ok and jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(
      f"{layer} got a complex input (dtype {x.dtype}): its statistics would not be a mean "
      "and variance of real features. Normalize the real and imaginary parts as separate "
      "features, e.g. jnp.concatenate([x.real, x.imag], axis=-1) (BatchNorm and "
      "MomentumBatchNorm normalize complex input as flax.linen.BatchNorm does)."
    )
  return x


def abs_sq(x) -> jax.Array:
  """``|x|²`` elementwise: ``x²`` for real ``x`` (the same operation), ``re² + im²`` (real) for
  complex ``x`` — what a variance squares (Flax's ``_abs_sq``)."""
  x = jnp.asarray(x)
  if jnp.iscomplexobj(x):
    return jax.lax.square(jnp.real(x)) + jax.lax.square(jnp.imag(x))
  return jax.lax.square(x)


def real_dtype(dtype) -> np.dtype:
  """The real dtype of a (possibly complex) inexact dtype: complex64 → float32."""
  return np.dtype(jnp.finfo(dtype).dtype)


def check_per_example_reduction(x_shape, values_per_statistic: int, layer: str, hint: str) -> None:
  """Raises a ValueError when a per-example norm (GN, LN, IN) would reduce over one value.

  Each statistic of such a norm is computed over ``values_per_statistic``
  entries of one example; with a single entry the variance is 0 and the
  output is exactly ``bias`` whatever the input (Flax returns it silently).
  """
  if values_per_statistic <= 1:
    raise ValueError(
      f"{layer} got an input of shape {tuple(x_shape)}: each of its statistics would be "
      f"computed over {values_per_statistic} value(s) of one example, so the output "
      f"would not depend on the input. {hint}"
    )


def check_step(step, name: str = "step"):
  """Returns ``step`` unchanged, or raises naming ``name`` if it is not an integer scalar.

  ``step`` is the 0-based global training step: a Python int, a NumPy integer
  or a 0-d integer array (traced arrays included; their value cannot be
  checked). Refused: bools, strings, floats, arrays of another shape, and
  values that JAX would wrap when it converts them to its integer type
  (with ``jax_enable_x64`` off a NumPy ``int64(2**40)`` silently becomes
  int32 0; a ``uint32`` up to 2³² − 1 stays as it is).
  ``None`` passes (no step given).
  """
  if step is None:
    return None
  what = f"{name} must be an integer scalar (the 0-based global step, e.g. state.step)"
  if isinstance(step, (bool, np.bool_, str, bytes, list, tuple, dict)):
    raise TypeError(f"{what}, got {step!r} ({type(step).__name__}).")
  if isinstance(step, numbers.Integral):
    value = int(step)
  else:
    try:
      shape, dtype = jnp.shape(step), jnp.result_type(step)
    except TypeError:
      raise TypeError(f"{what}, got {step!r} ({type(step).__name__}).") from None
    if shape != ():
      raise ValueError(
        f"{name} must be a scalar (the 0-based global step), got an array of shape {shape}."
      )
    if not jnp.issubdtype(dtype, jnp.integer):
      kind = f"of dtype {dtype}" if hasattr(step, "dtype") else f"({type(step).__name__})"
      raise TypeError(f"{what}, got {step!r} {kind}.")
    try:
      value = int(step)
    except (
      jax.errors.ConcretizationTypeError,
      jax.errors.TracerIntegerConversionError,
      jax.errors.TracerArrayConversionError,
    ):
      return step  # traced: its dtype is checked, its value cannot be
  # The integer type JAX makes of it: its default int for a Python int, else the
  # canonical type of its dtype (int64 -> int32, uint64 -> uint32 without jax_enable_x64).
  x64 = jax.config.read("jax_enable_x64")
  if type(step) is int:
    target = np.dtype(np.int64 if x64 else np.int32)
  else:
    target = np.dtype(jax.dtypes.canonicalize_dtype(jnp.result_type(step)))
  info = np.iinfo(target)
  lo, hi = int(info.min), int(info.max)
  if not lo <= value <= hi:
    wrapped = (value - lo) % 2**info.bits + lo
    raise ValueError(
      f"{name}={value} does not fit in {target} (the integer type JAX makes of it"
      f"{'' if x64 else ' without jax_enable_x64'}): it would wrap to {wrapped}. Pass a step "
      f"in [{lo}, {hi}]."
    )
  return step


class Moments(NamedTuple):
  """Per-feature batch statistics: mean, *biased* variance, number of valid entries."""

  mean: jax.Array
  var: jax.Array
  count: jax.Array


def batch_moments(
  x: ArrayLike,
  reduction_axes: Sequence[int],
  *,
  dtype=None,
  axis_name: str | None = None,
  axis_index_groups: Any = None,
  use_fast_variance: bool = True,
  mask=None,
  force_float32_reductions: bool = True,
) -> Moments:
  r"""Batch mean μ_B, *biased* variance σ²_B and valid-entry count n over ``reduction_axes``.

  Computed in at least float32 (unless ``force_float32_reductions=False``),
  with ``mask`` selecting the entries that count. float16 is always reduced in
  float32, ``force_float32_reductions=False`` or not: its squares overflow
  above ``|x| = 256`` (65504 is its largest value), which would make σ²_B = inf
  and freeze the moving statistics; bfloat16 (float32's range) and wider
  dtypes follow ``force_float32_reductions``.

  * One device (``axis_name=None``): μ_B = mean(x), σ²_B = mean(x²) − μ_B²
    clipped at 0 (or mean((x − μ_B)²) with ``use_fast_variance=False``) —
    ``flax.linen.BatchNorm``'s arithmetic, operation for operation, so
    ``MomentumBatchNorm`` at λ = 0 is bit-equal to it.
  * Across devices (``axis_name``, under ``pmap``/``shard_map``): the moments
    of the *concatenated valid entries of every device*, from one ``psum`` of
    the stacked per-device [n, Σx, Σx²] (two-pass: [n, Σx], then Σ(x − μ)²).
    A mean of per-device means (Flax's ``pmean``) is wrong whenever devices
    hold different numbers of valid entries; with full masks and equal
    counts the two agree to float rounding.
  * No valid entry at all (every device's mask empty): μ_B = σ²_B = n = 0,
    and :func:`updatable` is False, so the layers keep their statistics.
  * Complex input (``flax.linen.BatchNorm``'s arithmetic): μ_B is complex,
    σ²_B = ``E[|x − μ_B|²]`` is real (``E[|x|²] − |μ_B|²`` with
    ``use_fast_variance``), n is real; across devices the real and imaginary
    parts of Σx travel as two real rows of the one ``psum``.
  """
  if dtype is None:
    dtype = jnp.result_type(x)
  if force_float32_reductions or jnp.dtype(dtype) == jnp.float16:  # float16: see above
    dtype = jnp.promote_types(dtype, jnp.float32)
  x = jnp.asarray(x).astype(dtype)
  is_complex = jnp.iscomplexobj(x)
  count_dtype = real_dtype(dtype) if is_complex else dtype
  axes = tuple(sorted({a % x.ndim for a in reduction_axes}))
  feature_shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
  given_mask = None if mask is None else jnp.asarray(mask, bool)  # as Flax passes it: where=
  if given_mask is not None:
    mask = jnp.broadcast_to(given_mask, x.shape)
    count = jnp.sum(mask, axis=axes, dtype=count_dtype)
  else:
    count = jnp.full(feature_shape, np.prod([x.shape[a] for a in axes]), count_dtype)

  if axis_name is None:
    mean = x.mean(axes, where=given_mask)
    if use_fast_variance:
      var = jnp.maximum(0.0, abs_sq(x).mean(axes, where=given_mask) - abs_sq(mean))
    else:
      var = abs_sq(x - jnp.expand_dims(mean, axes)).mean(axes, where=given_mask)
  else:

    def psum(t):
      return jax.lax.psum(t, axis_name, axis_index_groups=axis_index_groups)

    def total(t):  # Σ over the valid entries of this device
      return jnp.sum(t if mask is None else jnp.where(mask, t, 0), axis=axes)

    def first_moment(*rows):  # one psum of [n, Σx, *rows]; Σx as two real rows if complex
      s1 = total(x)
      parts = [jnp.real(s1), jnp.imag(s1)] if is_complex else [s1]
      out = psum(jnp.stack([count, *parts, *rows]))
      s1 = jax.lax.complex(out[1], out[2]) if is_complex else out[1]
      safe = jnp.where(out[0] > 0, out[0], 1)
      return out[0], s1 / safe, safe, out[1 + len(parts) :]

    if use_fast_variance:
      count, mean, safe, (s2,) = first_moment(total(abs_sq(x)))
      var = jnp.maximum(0.0, s2 / safe - abs_sq(mean))
    else:
      count, mean, safe, _ = first_moment()
      var = psum(total(abs_sq(x - jnp.expand_dims(mean, axes)))) / safe
  if mask is not None or axis_name is not None:  # count may be 0: define the statistics
    mean = jnp.where(count > 0, mean, 0)
    var = jnp.where(count > 0, var, 0)
  return Moments(mean, var, count)


def pool_moments(
  means, variances, counts=None, *, axis: int | None = 0, axis_name: str | None = None
) -> Moments:
  r"""Pools per-group moments by the law of total variance.

      N = Σ_b n_b,   μ = Σ_b n_b μ_b / N,   σ² = Σ_b n_b (σ²_b + (μ_b − μ)²) / N

  The sums run over ``axis`` of the inputs (None: no array axis) and, when
  ``axis_name`` is given, over the devices of that ``pmap``/``shard_map``
  axis (``psum``), so pooling per-device moments gives the moments of the
  concatenated global data exactly. ``counts`` default to equal weights.
  Groups with n_b = 0 contribute nothing; if N = 0 the result is
  ``(0, 0, 0)`` (callers keep their old statistics then).

  Args:
    means, variances: the groups' means and biased variances.
    counts: the groups' numbers of valid entries (broadcastable to ``means``).
    axis: the array axis holding the groups, or None.
    axis_name: a mapped axis to pool over as well.

  Returns:
    :class:`mbn_jax.functional.Moments` ``(μ, σ², N)`` with the group axis reduced.
  """
  means = jnp.asarray(means)
  variances = jnp.asarray(variances)
  count_dtype = real_dtype(means.dtype) if jnp.iscomplexobj(means) else means.dtype
  counts = (
    jnp.ones(means.shape, count_dtype)
    if counts is None
    else jnp.broadcast_to(jnp.asarray(counts, count_dtype), means.shape)
  )

  def total(t):
    if axis is not None:
      t = jnp.sum(t, axis=axis)
    return jax.lax.psum(t, axis_name) if axis_name is not None else t

  n = total(counts)
  safe_n = jnp.where(n > 0, n, 1)
  mean = total(counts * means) / safe_n
  centred = means - (jnp.expand_dims(mean, axis) if axis is not None else mean)
  var = total(counts * (variances + (abs_sq(centred) if jnp.iscomplexobj(centred) else centred**2)))
  var = var / safe_n
  return Moments(mean, var, n)


def batch_statistics(
  x: ArrayLike, reduction_axes: Sequence[int], **kwargs
) -> tuple[jax.Array, jax.Array]:
  """``(μ_B, σ²_B)`` of :func:`batch_moments` (same arguments)."""
  moments = batch_moments(x, reduction_axes, **kwargs)
  return moments.mean, moments.var


def updatable(moments: Moments, guard_nonfinite: bool = True) -> jax.Array:
  """Per feature: may these batch statistics update moving statistics?

  False where no entry was valid (n = 0) and, with ``guard_nonfinite``,
  where μ_B or σ²_B is NaN or ±inf (one bad batch would otherwise poison
  the moving statistics for ever). The layers keep those features' moving
  statistics unchanged.
  """
  ok = moments.count > 0
  if guard_nonfinite:
    ok = ok & jnp.isfinite(moments.mean) & jnp.isfinite(moments.var)
  return ok


def moving_average(old: ArrayLike, new: ArrayLike, momentum: ArrayLike) -> ArrayLike:
  """Exponential moving average: ``momentum * old + (1 - momentum) * new``.

  ``momentum`` weights the *old* value (Flax convention). Used with τ for the
  inference statistics (Algorithm 1): μ_inf ← τ μ_inf + (1 − τ) μ_B.
  """
  return momentum * old + (1.0 - momentum) * new


def guarded_moving_average(batch: Moments, mean, var, momentum, ok):
  """(mean, var) ← momentum·(mean, var) + (1 − momentum)·(μ_B, σ²_B) where ``ok``, else kept.

  ``momentum`` weights the *old* value (Flax convention). No gradient flows
  into the result. BN (``momentum``), MBN's inference statistics (τ) and
  BReN share this update.
  """
  new_mean = jnp.where(ok, moving_average(mean, batch.mean, momentum), mean)
  new_var = jnp.where(ok, moving_average(var, batch.var, momentum), var)
  return jax.lax.stop_gradient(new_mean), jax.lax.stop_gradient(new_var)


# Gradient accumulation, deferred mode: the accumulator a layer keeps in ``batch_stats``
# beside ``mean``/``var`` when ``accumulation_steps`` k > 1. Per feature: the pooled
# mean, biased variance and valid-entry count of the micro-batches seen since the
# last update; ``acc_calls`` (a scalar) counts those micro-batches.
DEFERRED_STATISTICS = {
  "acc_mean": jnp.zeros,
  "acc_var": jnp.zeros,
  "acc_count": jnp.zeros,
  "acc_calls": lambda shape, dtype: jnp.zeros((), jnp.float32),
}


def deferred_moving_average(batch: Moments, stats: dict, momentum, accumulation_steps: int, ok):
  r"""Inference statistics updated once per k micro-batches (gradient accumulation, *deferred*).

  The idea of torchgpipe's ``DeferredBatchNorm``: with k micro-batches per
  optimizer step, the moving statistics should move once per optimizer step,
  with the statistics of all k micro-batches together. Every call pools this
  micro-batch's moments into the accumulator by the law of total variance
  (:func:`pool_moments`; features where ``ok`` is False — no valid entry, or
  non-finite with ``guard_nonfinite`` — add nothing) and counts the call; the
  k-th call updates

      mean ← momentum·mean + (1 − momentum)·μ_pool,   var ← momentum·var + (1 − momentum)·σ²_pool

  (**momentum weights the old value**) with μ_pool, σ²_pool the mean and
  biased variance of the concatenated valid entries of the k micro-batches,
  and empties the accumulator. In between, ``mean``/``var`` stay as they
  were. A feature with no valid entry in all k micro-batches keeps its
  statistics. No gradient flows into the result.

  Args:
    batch: this micro-batch's moments (:func:`batch_moments`).
    stats: ``mean``, ``var`` and the accumulator (:data:`DEFERRED_STATISTICS`).
    momentum: the momentum of the once-per-k update (MBN: τ for m·k, Eq. 12).
    accumulation_steps: k, a positive int.
    ok: per feature, may this micro-batch count (:func:`updatable`).

  Returns:
    The new ``mean``, ``var``, ``acc_mean``, ``acc_var``, ``acc_count``, ``acc_calls``.
  """
  zero = jnp.zeros_like(batch.var)  # real, also for complex input (whose mean is complex)
  this = Moments(
    jnp.where(ok, batch.mean, jnp.zeros_like(batch.mean)),
    jnp.where(ok, batch.var, zero),
    jnp.where(ok, batch.count, zero).astype(batch.var.dtype),
  )
  acc = Moments(stats["acc_mean"], stats["acc_var"], stats["acc_count"])
  pooled = pool_moments(
    jnp.stack([acc.mean, this.mean]),
    jnp.stack([acc.var, this.var]),
    jnp.stack([acc.count, this.count]),
  )
  calls = stats["acc_calls"] + 1
  flush = calls >= accumulation_steps
  mean, var = guarded_moving_average(
    pooled, stats["mean"], stats["var"], momentum, flush & (pooled.count > 0)
  )
  keep = lambda t: jax.lax.stop_gradient(jnp.where(flush, jnp.zeros_like(t), t))
  return {
    "mean": mean,
    "var": var,
    "acc_mean": keep(pooled.mean),
    "acc_var": keep(pooled.var),
    "acc_count": keep(pooled.count),
    "acc_calls": keep(calls),
  }


def layer_batch_moments(cfg, x, reduction_axes, mask, initializing: bool) -> Moments:
  """:func:`batch_moments` with a layer's fields (``cfg``): what every norm's training step reads.

  During ``init`` no devices are synchronized; otherwise a single value per
  feature is refused (:func:`check_training_batch`).
  """
  axis_name = None if initializing else cfg.axis_name
  if not initializing:
    check_training_batch(x, reduction_axes, axis_name, cfg.axis_index_groups)
  return batch_moments(
    x,
    reduction_axes,
    dtype=cfg.dtype,
    axis_name=axis_name,
    axis_index_groups=cfg.axis_index_groups,
    use_fast_variance=cfg.use_fast_variance,
    mask=mask,
    force_float32_reductions=cfg.force_float32_reductions,
  )


def normalize(
  x: ArrayLike,
  mean: ArrayLike,
  var: ArrayLike,
  scale: ArrayLike | None,
  bias: ArrayLike | None,
  feature_axes: Sequence[int],
  epsilon: float,
  dtype: Any = None,
) -> jax.Array:
  """y = (x − mean) · rsqrt(var + ε) · scale + bias, broadcast per feature.

  ``mean``/``var``/``scale``/``bias`` have the feature shape; ``scale`` or
  ``bias`` may be None. The arithmetic and its order are Flax's ``_normalize``,
  so MBN at λ = 0 reproduces ``flax.linen.BatchNorm`` bit for bit; the result
  has ``dtype`` or, if None, the promoted dtype of x and the parameters.
  """
  x, mean, var = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(var)
  scale = None if scale is None else jnp.asarray(scale)
  bias = None if bias is None else jnp.asarray(bias)
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


def check_training_batch(
  x, reduction_axes: Sequence[int], axis_name=None, axis_index_groups: Any = None
) -> None:
  """Raises a ValueError when training statistics would pool a single value per feature.

  With one value the batch variance is 0 and the output is 0 whatever the
  input (PyTorch: "Expected more than 1 value per channel when training");
  with λ > 0 MBN's training variance would then decay towards 0 and the
  activations blow up. Checked on static shapes (and the device count).
  """
  n = int(np.prod([x.shape[a] for a in reduction_axes]))
  if axis_name is not None:
    n *= (
      len(axis_index_groups[0])
      if axis_index_groups is not None
      else int(jax.lax.axis_size(axis_name))
    )
  if n <= 1:
    raise ValueError(
      f"Expected more than 1 value per feature when training, got an input of shape "
      f"{tuple(x.shape)} (reducing over axes {tuple(reduction_axes)}): batch statistics of one "
      "value are meaningless. Use a batch of at least 2, or use_running_average=True."
    )


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
