"""mbn_jax: Momentum Batch Normalization (Yong et al., ECCV 2020) for JAX/Flax.

Public API:

* :func:`train_momentum` — λ(step), Eq. 11 (1-based epochs, every edge defined);
  :func:`momentum_schedule` — the same as a value (an optax-style
  ``step -> λ`` function, :class:`MomentumSchedule`), built once and shared.
* :func:`inference_momentum` — τ = τ0^(m/m0), Eq. 12.
* :class:`MomentumBatchNorm` — the ``flax.linen`` layer (Eq. 8, Algorithm 1);
  ``mbn_jax.nnx.MomentumBatchNorm`` is its ``flax.nnx`` front end (same fields).
* :mod:`mbn_jax.noise` — the noise model of Sections 3-4, Monte-Carlo checked.
* :mod:`mbn_jax.functional` — the pure pieces every norm shares (moments,
  exact pooling, moving averages, checks).
* :func:`make_norm` / :mod:`mbn_jax.norms` — every norm the paper compares
  (bn, mbn, brn, gn, ln, in, none) and the rivals that need no communication
  (mabn: :class:`MovingAverageBatchNorm`; frozen_bn: :class:`FrozenBatchNorm`),
  one file each, behind one call signature; :class:`BatchRenorm` is the BReN
  baseline; each class declares its :class:`Capabilities` (:func:`capabilities_of`).
* :mod:`mbn_jax.backward_statistics` — statistics of a norm's backward pass
  (MABN's): the probes (:data:`BACKWARD_PROBES`, :func:`zero_probes`) and
  :func:`fold_backward_statistics` / :func:`fold_backward_statistics_nnx`.
* :func:`create_model` / :mod:`mbn_jax.models` — the paper's networks.
* :mod:`mbn_jax.convert` — a pretrained network's variables for another norm
  (fine-tuning: BN → FrozenBN, MBN, MABN).
* :func:`precise_batch_stats` (linen) / :func:`precise_batch_stats_nnx` —
  population ("precise") inference statistics, law of total variance.

Every momentum in mbn_jax weights the *old* value (Flax's convention).
"""

from mbn_jax import (
  backward_statistics,
  convert,
  functional,
  models,
  noise,
  norms,
  precise,
)
from mbn_jax.backward_statistics import (
  BACKWARD_PROBES,
  fold_backward_statistics,
  fold_backward_statistics_nnx,
  zero_probes,
)
from mbn_jax.models import centered_conv, create_model
from mbn_jax.norms import (
  BatchRenorm,
  Capabilities,
  FrozenBatchNorm,
  MomentumBatchNorm,
  MovingAverageBatchNorm,
  capabilities_of,
  make_norm,
)
from mbn_jax.precise import precise_batch_stats, precise_batch_stats_nnx
from mbn_jax.schedules import (
  MomentumSchedule,
  inference_momentum,
  momentum_schedule,
  train_momentum,
)

__version__ = "0.1.0"

__all__ = [
  "BACKWARD_PROBES",
  "BatchRenorm",
  "Capabilities",
  "FrozenBatchNorm",
  "MomentumBatchNorm",
  "MomentumSchedule",
  "MovingAverageBatchNorm",
  "backward_statistics",
  "capabilities_of",
  "centered_conv",
  "convert",
  "create_model",
  "fold_backward_statistics",
  "fold_backward_statistics_nnx",
  "functional",
  "make_norm",
  "models",
  "norms",
  "inference_momentum",
  "momentum_schedule",
  "noise",
  "precise",
  "precise_batch_stats",
  "precise_batch_stats_nnx",
  "train_momentum",
  "zero_probes",
]
