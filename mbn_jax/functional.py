"""Pure functions behind the MBN layers (shared by the linen and nnx modules).

Everything here is a plain ``jax.numpy`` function of arrays: jit-able,
differentiable with ``jax.grad`` (the layers' backward pass is JAX's own; no
custom VJP is involved), and usable on its own by research variants. The
layers (linen and nnx alike) only read and write their variables around
:func:`batch_moments`, :func:`mbn_statistics` and :func:`normalize`.

Momentum convention: every ``momentum`` here weights the *old* value,
``new = momentum * old + (1 - momentum) * batch`` (Flax's convention; PyTorch's
``momentum`` argument is ``1 - momentum``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mbn_jax import schedules

__all__ = [
  "Moments",
  "batch_moments",
  "batch_statistics",
  "bn_layer",
  "guarded_moving_average",
  "layer_batch_moments",
  "mbn_layer",
  "mbn_statistics",
  "updatable",
  "moving_average",
  "momentum_normalizer_statistics",
  "normalize",
  "statistics_batch_size",
  "resolve_train_momentum",
  "feature_and_reduction_axes",
  "check_mask",
  "check_training_batch",
  "check_layer_config",
  "DEFERRED_STATISTICS",
  "accumulation_steps_of",
  "deferred_moving_average",
  "pool_moments",
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


def check_layer_config(
  *,
  total_epochs,
  steps_per_epoch,
  ideal_batch_size,
  tau0,
  batch_size,
  epsilon,
  accumulation_steps=1,
) -> None:
  """Validates the MBN hyper-parameters, naming the offending argument."""
  for name, value in (
    ("total_epochs", total_epochs),
    ("steps_per_epoch", steps_per_epoch),
    ("batch_size", batch_size),
    ("accumulation_steps", accumulation_steps),
  ):
    if value is not None:
      schedules.validate_positive_int(value, name)
  schedules.validate_positive_int(ideal_batch_size, "ideal_batch_size")
  schedules.inference_momentum(1, ideal_batch_size=ideal_batch_size, tau0=tau0)
  if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or epsilon <= 0:
    raise ValueError(f"epsilon must be a positive float, got {epsilon!r}.")


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
  with ``mask`` selecting the entries that count.

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
  """
  if dtype is None:
    dtype = jnp.result_type(x)
  if force_float32_reductions:
    dtype = jnp.promote_types(dtype, jnp.float32)
  x = jnp.asarray(x).astype(dtype)
  axes = tuple(sorted({a % x.ndim for a in reduction_axes}))
  feature_shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
  if mask is not None:
    mask = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
    count = jnp.sum(mask, axis=axes, dtype=dtype)
  else:
    count = jnp.full(feature_shape, np.prod([x.shape[a] for a in axes]), dtype)

  if axis_name is None:
    mean = x.mean(axes, where=mask)
    if use_fast_variance:
      var = jnp.maximum(0.0, jax.lax.square(x).mean(axes, where=mask) - jax.lax.square(mean))
    else:
      var = jax.lax.square(x - jnp.expand_dims(mean, axes)).mean(axes, where=mask)
  else:

    def psum(t):
      return jax.lax.psum(t, axis_name, axis_index_groups=axis_index_groups)

    def total(t):  # Σ over the valid entries of this device
      return jnp.sum(t if mask is None else jnp.where(mask, t, 0), axis=axes)

    if use_fast_variance:
      count, s1, s2 = psum(jnp.stack([count, total(x), total(jax.lax.square(x))]))
      safe = jnp.where(count > 0, count, 1)
      mean = s1 / safe
      var = jnp.maximum(0.0, s2 / safe - jax.lax.square(mean))
    else:
      count, s1 = psum(jnp.stack([count, total(x)]))
      safe = jnp.where(count > 0, count, 1)
      mean = s1 / safe
      var = psum(total(jax.lax.square(x - jnp.expand_dims(mean, axes)))) / safe
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
  counts = (
    jnp.ones_like(means)
    if counts is None
    else jnp.broadcast_to(jnp.asarray(counts, means.dtype), means.shape)
  )

  def total(t):
    if axis is not None:
      t = jnp.sum(t, axis=axis)
    return jax.lax.psum(t, axis_name) if axis_name is not None else t

  n = total(counts)
  safe_n = jnp.where(n > 0, n, 1)
  mean = total(counts * means) / safe_n
  centred = means - (jnp.expand_dims(mean, axis) if axis is not None else mean)
  var = total(counts * (variances + centred**2)) / safe_n
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


def momentum_normalizer_statistics(
  batch_mean: ArrayLike,
  batch_var: ArrayLike,
  train_mean: ArrayLike,
  train_var: ArrayLike,
  momentum: ArrayLike,
) -> tuple[jax.Array, jax.Array]:
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
  return jnp.asarray(mean), jnp.asarray(var)


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


def accumulation_steps_of(cfg) -> int:
  """A layer's ``accumulation_steps`` k (1 for layers without the field)."""
  return int(getattr(cfg, "accumulation_steps", 1) or 1)


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
  zero = jnp.zeros_like(batch.mean)
  this = Moments(
    jnp.where(ok, batch.mean, zero),
    jnp.where(ok, batch.var, zero),
    jnp.where(ok, batch.count, zero).astype(batch.mean.dtype),
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


def mbn_statistics(
  batch: Moments, train_mean, train_var, mean, var, lam, tau, *, guard_nonfinite: bool = True
):
  r"""One training step of MBN's statistics (Eq. 8 and Algorithm 1).

  * normalizer μ, σ² = λ·(train_mean, train_var) + (1 − λ)·(μ_B, σ²_B)
    (:func:`momentum_normalizer_statistics`; Eq. 13 under ``jax.grad``);
  * the new training statistics are μ, σ² (no gradient);
  * the new inference statistics are τ·(mean, var) + (1 − τ)·(μ_B, σ²_B).

  λ and τ weight the *old* value. Where :func:`updatable` is False (no
  valid entry, or non-finite batch statistics with ``guard_nonfinite``) the
  feature keeps all four statistics and normalizes with its previous
  training statistics. With λ = 0 (and finite batches) the normalizer is
  (μ_B, σ²_B) exactly: ``flax.linen.BatchNorm(momentum=τ)``.

  Returns:
    ``((norm_mean, norm_var), (new_train_mean, new_train_var), (new_mean, new_var))``.
  """
  ok = updatable(batch, guard_nonfinite)
  norm_mean, norm_var = momentum_normalizer_statistics(
    batch.mean, batch.var, train_mean, train_var, lam
  )
  norm_mean = jnp.where(ok, norm_mean, jax.lax.stop_gradient(train_mean))
  norm_var = jnp.where(ok, norm_var, jax.lax.stop_gradient(train_var))
  new_train = (jax.lax.stop_gradient(norm_mean), jax.lax.stop_gradient(norm_var))
  return (norm_mean, norm_var), new_train, guarded_moving_average(batch, mean, var, tau, ok)


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


def mbn_layer(
  cfg,
  x,
  stats: dict,
  scale,
  bias,
  *,
  use_running_average: bool,
  step=None,
  momentum=None,
  mask=None,
  initializing: bool = False,
):
  """The whole MomentumBatchNorm layer as one pure function: the body of both front ends.

  ``cfg`` is anything with the layer's fields (``axis``, ``epsilon``,
  ``dtype``, ``axis_name``, ``axis_index_groups``, ``use_fast_variance``,
  ``force_float32_reductions``, ``total_epochs``, ``steps_per_epoch``,
  ``ideal_batch_size``, ``tau0``, ``batch_size``, ``guard_nonfinite``): the
  linen module or the nnx module itself. ``stats`` holds ``mean``, ``var``,
  ``train_mean``, ``train_var``. During ``init`` (``initializing``) no
  devices are synchronized, λ may be omitted (0) and nothing is updated.

  Returns:
    ``(y, new_stats)``: the output (Eq. 8 normalization in training, the
    inference statistics otherwise) and the updated ``stats`` (the same
    dict's values when nothing changes).
  """
  feature_axes, reduction_axes = feature_and_reduction_axes(x.ndim, cfg.axis)
  if use_running_average:
    return normalize(
      x, stats["mean"], stats["var"], scale, bias, feature_axes, cfg.epsilon, cfg.dtype
    ), stats
  axis_name = None if initializing else cfg.axis_name
  batch = layer_batch_moments(cfg, x, reduction_axes, mask, initializing)
  m = statistics_batch_size(
    x, axis_name=axis_name, axis_index_groups=cfg.axis_index_groups, batch_size=cfg.batch_size
  )
  if initializing and step is None and momentum is None:
    lam = jnp.float32(0.0)
  else:
    lam = resolve_train_momentum(
      step=step,
      momentum=momentum,
      batch_size=m,
      total_epochs=cfg.total_epochs,
      steps_per_epoch=cfg.steps_per_epoch,
      ideal_batch_size=cfg.ideal_batch_size,
    )
  k = accumulation_steps_of(cfg)
  tau = schedules.inference_momentum(m * k, ideal_batch_size=cfg.ideal_batch_size, tau0=cfg.tau0)
  (mean, var), new_train, new_inference = mbn_statistics(
    batch,
    stats["train_mean"],
    stats["train_var"],
    stats["mean"],
    stats["var"],
    lam,
    tau,
    guard_nonfinite=cfg.guard_nonfinite,
  )
  y = normalize(x, mean, var, scale, bias, feature_axes, cfg.epsilon, cfg.dtype)
  if initializing:
    return y, stats
  new_stats = {"train_mean": new_train[0], "train_var": new_train[1]}
  if k > 1:  # deferred: the inference statistics move once per k micro-batches
    new_stats.update(
      deferred_moving_average(batch, stats, tau, k, updatable(batch, cfg.guard_nonfinite))
    )
  else:
    new_stats.update(mean=new_inference[0], var=new_inference[1])
  return y, new_stats


def bn_layer(
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
  old value**), guarded as in :func:`mbn_statistics` (``cfg.guard_nonfinite``).
  ``cfg`` has the fields of ``flax.linen.BatchNorm`` plus ``guard_nonfinite``.
  Returns ``(y, new_stats)``.
  """
  feature_axes, reduction_axes = feature_and_reduction_axes(x.ndim, cfg.axis)
  if use_running_average:
    return normalize(
      x, stats["mean"], stats["var"], scale, bias, feature_axes, cfg.epsilon, cfg.dtype
    ), stats
  batch = layer_batch_moments(cfg, x, reduction_axes, mask, initializing)
  y = normalize(x, batch.mean, batch.var, scale, bias, feature_axes, cfg.epsilon, cfg.dtype)
  if initializing:
    return y, stats
  ok = updatable(batch, cfg.guard_nonfinite)
  k = accumulation_steps_of(cfg)
  if k > 1:  # deferred: the running statistics move once per k micro-batches
    return y, deferred_moving_average(batch, stats, cfg.momentum, k, ok)
  mean, var = guarded_moving_average(batch, stats["mean"], stats["var"], cfg.momentum, ok)
  return y, {"mean": mean, "var": var}


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

  A concrete ``momentum`` outside [0, 1) or NaN raises a ValueError. A
  *traced* ``momentum`` cannot be checked without ``checkify``; it is made
  safe instead: NaN becomes 0 (plain BN for that step) and other values are
  clipped to [0, 1 − 2⁻²³] (the largest float32 below 1), so the moving
  statistics stay finite. ``step`` must be a scalar. Raises a ValueError that
  says what to pass when neither is available.
  """
  if momentum is not None:
    lam = jnp.asarray(momentum, jnp.result_type(float))
    if lam.ndim:
      raise ValueError(f"momentum must be a scalar λ in [0, 1), got shape {lam.shape}.")
    try:
      bad = not bool((lam >= 0) & (lam < 1))  # NaN compares False: rejected too
    except jax.errors.ConcretizationTypeError:  # traced: sanitize (documented above)
      return jnp.where(jnp.isnan(lam), 0.0, jnp.clip(lam, 0.0, 1.0 - 2.0**-23)).astype(lam.dtype)
    if bad:
      raise ValueError(
        f"momentum must lie in [0, 1) (weight on the old value; NaN is not allowed), got "
        f"{momentum}."
      )
    return lam
  if step is not None and jnp.ndim(step) != 0:
    raise ValueError(
      f"step must be a scalar (the 0-based global step, e.g. state.step), got an array of "
      f"shape {jnp.shape(step)}."
    )
  if step is None:
    raise ValueError(
      f"{layer} in training mode needs the training step: call it with "
      "step=<0-based global step> (e.g. model.apply(..., step=state.step)), "
      "or pass a fixed training momentum with momentum=<λ in [0, 1)>. For "
      "inference, pass use_running_average=True."
    )
  if total_epochs is None or steps_per_epoch is None:
    missing = [
      n
      for n, v in (("total_epochs", total_epochs), ("steps_per_epoch", steps_per_epoch))
      if v is None
    ]
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
