"""The ``flax.nnx`` front ends of mbn_jax's norms, under their linen names.

Each is defined in its norm's file beside the linen declaration whose fields
it takes (:mod:`mbn_jax.norms`):

* :class:`MomentumBatchNorm` — Momentum Batch Normalization (Eq. 8,
  Algorithm 1); ``nnx.BatchStat`` statistics ``mean``/``var`` (inference, the
  names of ``nnx.BatchNorm``) and ``train_mean``/``train_var`` (Eq. 8);
* :class:`BatchNorm` — BatchNorm with mbn_jax's exact cross-device
  statistics, non-finite guard and deferred accumulation;
* :class:`BatchRenorm` — Batch Renormalization (the paper's BReN);
* :class:`MovingAverageBatchNorm` — MABN (Yan et al., ICLR 2020), with a
  :class:`~mbn_jax.backward_statistics.BackwardProbe` to differentiate and
  fold (:func:`mbn_jax.fold_backward_statistics_nnx`);
* :class:`FrozenBatchNorm` — fixed statistics (detectron2's FrozenBN).

``Layer(num_features, *, rngs, **fields)``: the fields and defaults of the
linen class of the same name (``use_running_average`` defaults to False, as
in ``nnx.BatchNorm``). λ, τ and every momentum weight the *old* value.
"""

from mbn_jax.backward_statistics import BackwardProbe
from mbn_jax.norms.batch_norm import BatchNormNNX as BatchNorm
from mbn_jax.norms.batch_renorm import BatchRenormNNX as BatchRenorm
from mbn_jax.norms.frozen_batch_norm import FrozenBatchNormNNX as FrozenBatchNorm
from mbn_jax.norms.momentum_batch_norm import MomentumBatchNormNNX as MomentumBatchNorm
from mbn_jax.norms.moving_average_batch_norm import (
  MovingAverageBatchNormNNX as MovingAverageBatchNorm,
)

__all__ = [
  "BackwardProbe",
  "BatchNorm",
  "BatchRenorm",
  "FrozenBatchNorm",
  "MomentumBatchNorm",
  "MovingAverageBatchNorm",
]
