"""Layer Normalization over (H, W, C) per example, a thin wrapper of ``flax.linen.LayerNorm``.

The LN of the GroupNorm paper (GroupNorm with one group): no batch
statistics. In ``flax.nnx`` use ``flax.nnx.LayerNorm(reduction_axes=(1, 2, 3))``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers
from jax.typing import ArrayLike

from mbn_jax.norms.base import Capabilities

__all__ = ["LayerNorm"]


class LayerNorm(nn.Module):
  """Layer normalization over all non-batch axes (H, W, C), uniform call.

  y = γ (x − μ)/√(σ² + ε) + β, μ and σ² per example over (H, W, C), γ and β
  per channel: the LN of the GroupNorm paper (= GroupNorm with one group).
  (``flax.linen.LayerNorm``'s default would normalize over C only.)
  ``use_running_average`` and ``step`` are accepted and ignored.
  """

  capabilities: ClassVar[Capabilities] = Capabilities(normalizer="per_example")

  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = initializers.zeros
  scale_init: Any = initializers.ones

  @nn.compact
  def __call__(
    self, x: ArrayLike, use_running_average: bool | None = None, *, step: ArrayLike | None = None
  ) -> jax.Array:
    del use_running_average, step
    x = jnp.asarray(x)
    norm = nn.LayerNorm(
      epsilon=self.epsilon,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      use_bias=self.use_bias,
      use_scale=self.use_scale,
      bias_init=self.bias_init,
      scale_init=self.scale_init,
      reduction_axes=tuple(range(1, x.ndim)),
      feature_axes=-1,
      name="layer_norm",
    )
    nn.share_scope(self, norm)
    return norm(x)
