"""Instance Normalization (per example and channel, over H, W): ``flax.linen.InstanceNorm``.

A thin wrapper with the uniform call; never synchronized over devices (its
statistics are per example). In ``flax.nnx`` use ``flax.nnx.InstanceNorm``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike

from mbn_jax.norms.base import Capabilities

__all__ = ["InstanceNorm"]


class InstanceNorm(nn.InstanceNorm):
  """``flax.linen.InstanceNorm`` (per example and channel, over H, W), uniform call.

  y = γ (x − μ_nc)/√(σ²_nc + ε) + β. ``use_running_average`` and ``step`` are
  accepted and ignored.
  """

  capabilities: ClassVar[Capabilities] = Capabilities(normalizer="per_example")

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    del use_running_average, step
    return super().__call__(x, mask=None if mask is None else jnp.asarray(mask))
