"""Layer Normalization over (H, W, C) per example, a thin wrapper of ``flax.linen.LayerNorm``.

The LN of the GroupNorm paper (GroupNorm with one group): no batch
statistics. In ``flax.nnx`` use ``flax.nnx.LayerNorm(reduction_axes=(1, 2, 3))``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers
from jax.typing import ArrayLike

from mbn_jax import functional as F
from mbn_jax.norms.base import Capabilities

__all__ = ["LayerNorm"]


class LayerNorm(nn.Module):
  """Layer normalization over all non-batch axes (H, W, C), uniform call.

  y = γ (x − μ)/√(σ² + ε) + β, μ and σ² per example over (H, W, C), γ and β
  per channel: the LN of the GroupNorm paper (= GroupNorm with one group).
  (``flax.linen.LayerNorm``'s default would normalize over C only.)
  ``use_running_average`` and ``step`` are accepted and ignored. Refused:
  epsilon NaN or <= 0, complex input, and an input with one value per
  example (e.g. shape ``(N,)`` or ``(N, 1)``), whose output would be ``bias``.
  """

  capabilities: ClassVar[Capabilities] = Capabilities(normalizer="per_example")

  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = initializers.zeros
  scale_init: Any = initializers.ones

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates epsilon (NaN or <= 0 is refused), naming it."""
    F.check_epsilon(cfg.epsilon)

  @nn.compact
  def __call__(
    self, x: ArrayLike, use_running_average: bool | None = None, *, step: ArrayLike | None = None
  ) -> jax.Array:
    del use_running_average, step
    self.check_fields(self)
    x = F.check_input(x, "LayerNorm")
    F.check_per_example_reduction(
      x.shape,
      math.prod(x.shape[1:]),
      "LayerNorm",
      "LayerNorm normalizes each example (axis 0) over all its other axes: give it (N, C) "
      "with C > 1, or (N, H, W, C).",
    )
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
