"""FrozenBN: BatchNorm whose statistics (and, by default, affine part) never move.

One home: the pure body :func:`frozen_batch_norm`, the ``flax.linen``
declaration :class:`FrozenBatchNorm` (``make_norm('frozen_bn')``) and its
``flax.nnx`` front end :class:`FrozenBatchNormNNX`
(``mbn_jax.nnx.FrozenBatchNorm``).

In training and in evaluation alike::

  y = γ (x − mean) / √(var + ε) + β

with ``mean``/``var`` fixed in ``batch_stats`` — detectron2's
``FrozenBatchNorm2d``, its default when it fine-tunes a pretrained backbone
at 2 images per GPU: the layer is an affine map per channel, so the batch
size does not matter at all. Its statistics come from a pretrained network
(:func:`mbn_jax.convert_norm_variables`, or copy ``mean``/``var`` yourself);
from scratch they are 0 and 1 and stay so.

``train_affine`` (default False, as detectron2) says whether γ and β train:
False keeps them in ``batch_stats`` as ``scale``/``bias`` (fixed, out of
the optimizer's reach — weight decay cannot move them); True makes them
``params``, as in ``flax.linen.BatchNorm``.
"""

from __future__ import annotations

from typing import Any, ClassVar

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

__all__ = ["FrozenBatchNorm", "FrozenBatchNormNNX", "frozen_batch_norm", "frozen_statistics"]


def frozen_statistics(cfg) -> dict:
  """FrozenBN's ``batch_stats``: ``mean`` 0, ``var`` 1, and with a frozen affine part
  ``scale`` (γ = 1) and ``bias`` (β = 0) where ``use_scale``/``use_bias``."""
  stats: dict[str, Any] = {"mean": jnp.zeros, "var": jnp.ones}
  if not cfg.train_affine:
    if cfg.use_scale:
      stats["scale"] = lambda shape, dtype: cfg.scale_init(jax.random.key(0), shape, dtype)
    if cfg.use_bias:
      stats["bias"] = lambda shape, dtype: cfg.bias_init(jax.random.key(0), shape, dtype)
  return stats


def frozen_batch_norm(
  cfg, x, stats: dict, scale, bias, *, use_running_average: bool, initializing: bool = False
):
  """y = γ (x − mean)/√(var + ε) + β with the fixed statistics, in every mode.

  γ, β are the ``params`` (``cfg.train_affine``) or the fixed ``batch_stats``
  entries ``scale``/``bias``. The statistics come back unchanged: training
  never moves them, and no gradient reaches them.
  """
  del use_running_average, initializing  # the same affine map in every mode
  feature_axes, _ = F.feature_and_reduction_axes(x.ndim, cfg.axis)
  if not cfg.train_affine:
    scale = jax.lax.stop_gradient(stats["scale"]) if "scale" in stats else None
    bias = jax.lax.stop_gradient(stats["bias"]) if "bias" in stats else None
  mean = jax.lax.stop_gradient(stats["mean"])
  var = jax.lax.stop_gradient(stats["var"])
  return F.normalize(x, mean, var, scale, bias, feature_axes, cfg.epsilon, cfg.dtype), stats


class FrozenBatchNorm(BatchStatisticsFields):
  """BatchNorm with fixed statistics: y = γ (x − mean)/√(var + ε) + β in training and evaluation.

  detectron2's ``FrozenBatchNorm2d`` (see the module). ``batch_stats`` holds
  ``mean``/``var`` (and γ/β as ``scale``/``bias`` unless ``train_affine``),
  never updated; ``step`` and ``use_running_average`` change nothing; a
  ``mask`` is accepted and ignored (nothing is estimated). ``axis_name`` is
  refused: there is nothing to synchronize.

  Besides the fields of :class:`~mbn_jax.norms.base.BatchStatisticsFields`:

  Attributes:
    train_affine: γ and β are trained ``params`` (True) or fixed
      ``batch_stats`` (False, default, as detectron2).
  """

  capabilities: ClassVar[Capabilities] = Capabilities(
    normalizer="frozen", running_statistics=True, precise_statistics=False
  )

  # flax.nnx.BatchNorm's momentum is accepted by the nnx front end and has no effect.
  flax_arguments: ClassVar[dict[str, str | None]] = {"momentum": None}

  train_affine: bool = False

  @classmethod
  def statistics_for(cls, cfg) -> dict:
    """The initial ``batch_stats`` (:func:`frozen_statistics`)."""
    return frozen_statistics(cfg)

  @classmethod
  def affine_is_learned(cls, cfg) -> bool:
    """γ/β are ``params`` only with ``train_affine``."""
    return bool(cfg.train_affine)

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates epsilon, train_affine and axis_name, naming the offending field."""
    F.check_epsilon(cfg.epsilon)
    if not isinstance(cfg.train_affine, bool):
      raise ValueError(f"train_affine must be True or False, got {cfg.train_affine!r}.")
    if getattr(cfg, "axis_name", None) is not None:
      raise ValueError(
        f"FrozenBatchNorm has no statistics to synchronize: leave axis_name=None, got "
        f"{cfg.axis_name!r}."
      )

  @nn.compact
  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    del step, mask  # fixed statistics: nothing is scheduled or estimated
    if use_running_average is None and self.use_running_average is None:
      use_running_average = True  # the mode changes nothing; need not be given
    return linen_call(self, frozen_batch_norm, x, use_running_average)


class FrozenBatchNormNNX(NNXNorm):
  """FrozenBN for ``flax.nnx`` (``mbn_jax.nnx.FrozenBatchNorm``): the linen fields and body.

  ``FrozenBatchNormNNX(num_features, *, rngs, **fields)``; ``nnx.BatchStat``
  ``mean``/``var`` (and ``scale``/``bias`` unless ``train_affine``). It also takes
  ``flax.nnx.BatchNorm``'s arguments: ``momentum`` without effect (nothing moves),
  ``promote_dtype`` and ``scale_metadata``/``bias_metadata`` (given to γ/β, params
  or fixed statistics) as in Flax. The mode changes nothing.
  """

  linen = FrozenBatchNorm
  body = staticmethod(frozen_batch_norm)

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x`` with the fixed statistics; arguments as in :class:`FrozenBatchNorm`."""
    del step, mask, use_running_average  # the same affine map in every mode
    return nnx_front_end(self, x, True)
