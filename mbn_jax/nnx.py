"""Momentum Batch Normalization for ``flax.nnx`` (Eq. 8, Algorithm 1).

The same layer and the same arithmetic as :class:`mbn_jax.MomentumBatchNorm`
(both are thin shells around :mod:`mbn_jax.functional`); the four statistics
are ``nnx.BatchStat`` variables: ``mean``/``var`` (inference, the names of
``nnx.BatchNorm``) and ``train_mean``/``train_var`` (training, Eq. 8).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mbn_jax import functional as F
from mbn_jax import schedules

__all__ = ["MomentumBatchNorm"]


class MomentumBatchNorm(nnx.Module):
  r"""Momentum Batch Normalization (Yong et al., ECCV 2020), ``flax.nnx``.

  Training: μ ← λ μ + (1 − λ) μ_B, σ² ← λ σ² + (1 − λ) σ²_B (Eq. 8), output
  γ (x − μ)/√(σ² + ε) + β; inference statistics mean ← τ mean + (1 − τ) μ_B,
  var ← τ var + (1 − τ) σ²_B. Inference normalizes with ``mean``/``var``.
  λ = ``momentum`` if given, else :func:`mbn_jax.train_momentum` (Eq. 11) at
  ``step``; τ = :func:`mbn_jax.inference_momentum` (Eq. 12). **Both weight
  the old value** (Flax convention; PyTorch's ``momentum`` is 1 − τ).
  See :class:`mbn_jax.MomentumBatchNorm` for every argument; ``num_features``
  and ``rngs`` are as in ``nnx.BatchNorm``. ``model.eval()`` /
  ``model.train()`` (or ``nnx.view``) toggle ``use_running_average``.
  """

  def __init__(
      self,
      num_features: int,
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
      total_epochs: int | None = None,
      steps_per_epoch: int | None = None,
      ideal_batch_size: int = 32,
      tau0: float = 0.85,
      batch_size: int | None = None,
      rngs: nnx.Rngs,
  ):
    schedules.validate_positive_int(num_features, "num_features")
    F.check_layer_config(
        total_epochs=total_epochs, steps_per_epoch=steps_per_epoch,
        ideal_batch_size=ideal_batch_size, tau0=tau0, batch_size=batch_size,
        epsilon=epsilon)
    shape = (num_features,)
    self.mean = nnx.BatchStat(jnp.zeros(shape, jnp.float32))
    self.var = nnx.BatchStat(jnp.ones(shape, jnp.float32))
    self.train_mean = nnx.BatchStat(jnp.zeros(shape, jnp.float32))
    self.train_var = nnx.BatchStat(jnp.ones(shape, jnp.float32))
    self.scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype)) if use_scale else None
    self.bias = nnx.Param(bias_init(rngs.params(), shape, param_dtype)) if use_bias else None
    self.num_features = num_features
    self.use_running_average = use_running_average
    self.axis = axis
    self.epsilon = epsilon
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.axis_name = axis_name
    self.axis_index_groups = axis_index_groups
    self.use_fast_variance = use_fast_variance
    self.total_epochs = total_epochs
    self.steps_per_epoch = steps_per_epoch
    self.ideal_batch_size = ideal_batch_size
    self.tau0 = tau0
    self.batch_size = batch_size

  def __call__(self, x, use_running_average: bool | None = None, *, step=None,
               momentum=None, mask=None):
    """Normalizes ``x``; arguments as in :class:`mbn_jax.MomentumBatchNorm`."""
    if use_running_average is None:
      use_running_average = self.use_running_average
    if use_running_average is None:
      raise ValueError(
          "MomentumBatchNorm needs use_running_average: pass it to the "
          "constructor or to __call__ (True for inference, False for training).")
    x = jnp.asarray(x)
    feature_axes, reduction_axes = F.feature_and_reduction_axes(x.ndim, self.axis)
    feature_shape = tuple(x.shape[a] for a in feature_axes)
    if feature_shape != (self.num_features,):
      raise ValueError(
          f"MomentumBatchNorm(num_features={self.num_features}) got an input "
          f"with {feature_shape} features along axis={self.axis}: set "
          "num_features to the input's feature size or fix axis.")
    F.check_mask(mask, x.shape)
    if use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      batch_mean, batch_var = F.batch_statistics(
          x, reduction_axes, dtype=self.dtype, axis_name=self.axis_name,
          axis_index_groups=self.axis_index_groups,
          use_fast_variance=self.use_fast_variance, mask=mask)
      m = F.statistics_batch_size(
          x, axis_name=self.axis_name, axis_index_groups=self.axis_index_groups,
          batch_size=self.batch_size)
      lam = F.resolve_train_momentum(
          step=step, momentum=momentum, batch_size=m,
          total_epochs=self.total_epochs, steps_per_epoch=self.steps_per_epoch,
          ideal_batch_size=self.ideal_batch_size)
      mean, var = F.momentum_normalizer_statistics(
          batch_mean, batch_var, self.train_mean[...], self.train_var[...], lam)
      tau = schedules.inference_momentum(
          m, ideal_batch_size=self.ideal_batch_size, tau0=self.tau0)
      self.train_mean[...] = jax.lax.stop_gradient(mean)
      self.train_var[...] = jax.lax.stop_gradient(var)
      self.mean[...] = jax.lax.stop_gradient(
          F.moving_average(self.mean[...], batch_mean, tau))
      self.var[...] = jax.lax.stop_gradient(
          F.moving_average(self.var[...], batch_var, tau))
    scale = self.scale[...] if self.scale is not None else None
    bias = self.bias[...] if self.bias is not None else None
    return F.normalize(x, mean, var, scale, bias, feature_axes, self.epsilon, self.dtype)

  def set_view(self, use_running_average: bool | None = None):
    """Used by ``nnx.view``/``model.eval()``: sets ``use_running_average``."""
    if use_running_average is not None:
      self.use_running_average = use_running_average
