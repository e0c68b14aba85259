"""Momentum Batch Normalization for ``flax.linen`` (Eq. 8 and Algorithm 1).

A drop-in for ``flax.linen.BatchNorm``: the same fields with the same meaning,
plus the MBN schedule (``total_epochs``, ``steps_per_epoch``,
``ideal_batch_size`` m0, ``tau0``, optional ``batch_size`` override), and the
training ``step`` passed through ``apply``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers
from flax.linen.module import merge_param
from jax.typing import ArrayLike

from mbn_jax import functional as F

__all__ = [
  "BN_STATISTICS",
  "MBN_STATISTICS",
  "MomentumBatchNorm",
  "linen_norm_front_end",
  "statistics_of",
]


class MomentumBatchNorm(nn.Module):
  r"""Momentum Batch Normalization (Yong et al., ECCV 2020), ``flax.linen``.

  Training (``use_running_average=False``), per feature, Algorithm 1:

  * μ_B, σ²_B: batch mean and *biased* variance over every axis but the
    feature axis (over all devices in ``axis_name`` when given);
  * μ ← λ μ + (1 − λ) μ_B,  σ² ← λ σ² + (1 − λ) σ²_B  (Eq. 8; stored as
    ``batch_stats/train_mean``, ``batch_stats/train_var``);
  * y = γ (x − μ)/√(σ² + ε) + β;
  * mean ← τ·mean + (1 − τ) μ_B,  var ← τ·var + (1 − τ) σ²_B (the inference
    statistics, ``batch_stats/mean`` and ``batch_stats/var``: the same names
    as ``flax.linen.BatchNorm``).

  Inference (``use_running_average=True``): y = γ (x − mean)/√(var + ε) + β.

  λ is ``momentum`` if given to ``__call__``, else
  :func:`mbn_jax.train_momentum` (Eq. 11) at ``step``, with m the per-device
  batch size ``x.shape[0]`` (times the devices in ``axis_name`` when the
  statistics are synchronized) unless ``batch_size`` overrides it.
  τ = :func:`mbn_jax.inference_momentum` (Eq. 12) of the same m.
  **Both λ and τ weight the old value** (Flax convention; PyTorch's
  ``momentum`` is 1 − τ). With λ = 0 the layer is exactly
  ``flax.linen.BatchNorm(momentum=τ)``.

  The previous training statistics are constants for the step, so
  ``jax.grad`` yields the paper's Eq. 13 (no hand-written backward pass).

  During ``init`` nothing is updated and ``step`` may be omitted (λ = 0).

  Attributes:
    use_running_average: as in ``flax.linen.BatchNorm``; may also be given to
      ``__call__``.
    axis: the feature axis (or axes); default -1 (channels last).
    epsilon: added to the variance (default 1e-5, as in Flax).
    dtype: the output dtype (statistics are always float32 or wider).
    param_dtype: dtype of scale and bias.
    use_bias, use_scale, bias_init, scale_init: the affine part, as in Flax.
    axis_name: the ``pmap``/``shard_map`` axis to synchronize statistics over
      (None: per-device statistics, as in the paper).
    axis_index_groups: groups of devices within ``axis_name``.
    use_fast_variance: Var = E[x²] − E[x]² in one pass (as in Flax).
    force_float32_reductions: compute statistics in at least float32.
    total_epochs: T of Eq. 11 (needed when ``step`` is passed).
    steps_per_epoch: optimizer steps per epoch (needed with ``step``).
    ideal_batch_size: m0 of Eqs. 11-12 (paper: 32).
    tau0: τ0 of Eq. 12, in (0, 1) (paper: 0.85).
    batch_size: overrides the m used for λ and τ (e.g. when the leading axis
      is not the example axis).
    guard_nonfinite: keep a feature's four statistics unchanged when its
      batch statistics are NaN/±inf (default True; finite batches give
      bit-identical results either way). A feature with no valid entry
      (empty mask on every device) always keeps them.
    accumulation_steps: k for gradient accumulation's *deferred* statistics
      (default 1: every training call updates every statistic — also the
      right setting for *sequential* accumulation). With k > 1 the training
      statistics still follow Eq. 8 at every call (micro-batch), but the
      inference statistics move once per k calls, with the pooled moments of
      those k micro-batches and τ for m·k
      (:func:`mbn_jax.functional.deferred_moving_average`); the accumulator
      lives in ``batch_stats`` (``acc_mean``, ``acc_var``, ``acc_count``,
      ``acc_calls``), so a checkpoint taken mid-accumulation resumes exactly.
  """

  use_running_average: bool | None = None
  axis: int | tuple[int, ...] = -1
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
  total_epochs: int | None = None
  steps_per_epoch: int | None = None
  ideal_batch_size: int = 32
  tau0: float = 0.85
  batch_size: int | None = None
  guard_nonfinite: bool = True
  accumulation_steps: int = 1

  @nn.compact
  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    momentum: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; see the class docstring for the equations.

    Args:
      x: the input; statistics are per feature along ``axis``.
      use_running_average: True for inference (stored ``mean``/``var``).
      step: 0-based global training step (int or traced array) for Eq. 11.
      momentum: a fixed training momentum λ in [0, 1), overriding ``step``.
      mask: boolean array broadcastable to ``x``: which entries enter the
        batch statistics.

    Returns:
      The normalized input, with the shape of ``x``.
    """
    F.check_layer_config(
      total_epochs=self.total_epochs,
      steps_per_epoch=self.steps_per_epoch,
      ideal_batch_size=self.ideal_batch_size,
      tau0=self.tau0,
      batch_size=self.batch_size,
      epsilon=self.epsilon,
      accumulation_steps=self.accumulation_steps,
    )
    use_running_average = merge_param(
      "use_running_average", self.use_running_average, use_running_average
    )
    return linen_norm_front_end(
      self,
      F.mbn_layer,
      x,
      use_running_average,
      statistics_of(MBN_STATISTICS, self.accumulation_steps),
      step=step,
      momentum=momentum,
      mask=mask,
    )


# Every statistic's initializer: MBN's four; BN and BReN keep the first two.
MBN_STATISTICS = {
  "mean": jnp.zeros,
  "var": jnp.ones,
  "train_mean": jnp.zeros,
  "train_var": jnp.ones,
}
BN_STATISTICS = {"mean": jnp.zeros, "var": jnp.ones}


def statistics_of(statistics: dict, accumulation_steps: int) -> dict:
  """A layer's ``batch_stats``: ``statistics``, plus the deferred accumulator when k > 1."""
  if accumulation_steps > 1:
    return {**statistics, **F.DEFERRED_STATISTICS}
  return statistics


def linen_norm_front_end(module, body, x, use_running_average: bool, statistics: dict, **call):
  """A linen norm's whole ``__call__`` around its pure ``body`` (one for every norm).

  Creates or reads the ``batch_stats`` named in ``statistics`` (float32
  unless ``force_float32_reductions=False``) and ``params/scale``,
  ``params/bias`` of the feature shape, runs
  ``body(module, x, stats, scale, bias, use_running_average=..., initializing=..., **call)``
  and writes the returned statistics back in training (never during ``init``).
  """
  x = jnp.asarray(x)
  feature_axes, _ = F.feature_and_reduction_axes(x.ndim, module.axis)
  F.check_mask(call.get("mask"), x.shape)
  feature_shape = tuple(x.shape[a] for a in feature_axes)
  stat_dtype = jnp.float32 if module.force_float32_reductions else module.param_dtype
  variables = {
    name: module.variable("batch_stats", name, lambda init=init: init(feature_shape, stat_dtype))
    for name, init in statistics.items()
  }
  scale = (
    module.param("scale", module.scale_init, feature_shape, module.param_dtype)
    if module.use_scale
    else None
  )
  bias = (
    module.param("bias", module.bias_init, feature_shape, module.param_dtype)
    if module.use_bias
    else None
  )
  initializing = module.is_initializing()
  y, new_stats = body(
    module,
    x,
    {k: v.value for k, v in variables.items()},
    scale,
    bias,
    use_running_average=use_running_average,
    initializing=initializing,
    **call,
  )
  if not use_running_average and not initializing:
    for name, value in new_stats.items():
      variables[name].value = value
  return y
