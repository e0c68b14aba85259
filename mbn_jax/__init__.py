"""mbn_jax: Momentum Batch Normalization (Yong et al., ECCV 2020) for JAX/Flax.

Public API:

* :func:`train_momentum` — λ(step), Eq. 11 (1-based epochs, every edge defined).
* :func:`inference_momentum` — τ = τ0^(m/m0), Eq. 12.
* :class:`MomentumBatchNorm` — the ``flax.linen`` layer (Eq. 8, Algorithm 1);
  ``mbn_jax.nnx.MomentumBatchNorm`` is its ``flax.nnx`` twin.
* :mod:`mbn_jax.noise` — the noise model of Sections 3-4, Monte-Carlo checked.
* :mod:`mbn_jax.functional` — the pure functions the layers are made of.

Every momentum in mbn_jax weights the *old* value (Flax's convention).
"""

from mbn_jax import functional, noise
from mbn_jax.layers import MomentumBatchNorm
from mbn_jax.schedules import inference_momentum, train_momentum

__version__ = "0.1.0"

__all__ = [
    "MomentumBatchNorm",
    "functional",
    "inference_momentum",
    "noise",
    "train_momentum",
]
