"""The ``flax.nnx`` front ends of mbn_jax's norms, under their linen names.

Each is defined in its norm's file beside the linen declaration whose fields
it takes (:mod:`mbn_jax.norms`):

* :class:`MomentumBatchNorm` — Momentum Batch Normalization (Eq. 8,
  Algorithm 1); ``nnx.BatchStat`` statistics ``mean``/``var`` (inference, the
  names of ``nnx.BatchNorm``) and ``train_mean``/``train_var`` (Eq. 8);
* :class:`BatchNorm` — BatchNorm with mbn_jax's exact cross-device
  statistics, non-finite guard and deferred accumulation;
* :class:`BatchRenorm` — Batch Renormalization (the paper's BReN).

``Layer(num_features, *, rngs, **fields)``: the fields and defaults of the
linen class of the same name (``use_running_average`` defaults to False, as
in ``nnx.BatchNorm``). λ, τ and every momentum weight the *old* value.
"""

from mbn_jax.norms.batch_norm import BatchNormNNX as BatchNorm
from mbn_jax.norms.batch_renorm import BatchRenormNNX as BatchRenorm
from mbn_jax.norms.momentum_batch_norm import MomentumBatchNormNNX as MomentumBatchNorm

__all__ = ["BatchNorm", "BatchRenorm", "MomentumBatchNorm"]
