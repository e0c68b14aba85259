"""Instance Normalization (per example and channel, over H, W): ``flax.linen.InstanceNorm``.

A thin wrapper with the uniform call; never synchronized over devices (its
statistics are per example). In ``flax.nnx`` use ``flax.nnx.InstanceNorm``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike

from mbn_jax import functional as F
from mbn_jax.norms.base import Capabilities

__all__ = ["InstanceNorm"]


class InstanceNorm(nn.InstanceNorm):
  """``flax.linen.InstanceNorm`` (per example and channel, over H, W), uniform call.

  y = γ (x − μ_nc)/√(σ²_nc + ε) + β. ``use_running_average`` and ``step`` are
  accepted and ignored. Refused: epsilon NaN or <= 0, complex input, and an
  input without spatial extent (e.g. ``(N, C)``: one value per example and
  channel, whose output would be ``bias`` whatever the input).
  """

  capabilities: ClassVar[Capabilities] = Capabilities(normalizer="per_example")

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates epsilon (NaN or <= 0 is refused), naming it."""
    F.check_epsilon(cfg.epsilon)

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    del use_running_average, step
    self.check_fields(self)
    x = F.check_input(x, "InstanceNorm")
    axes = self.feature_axes
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    features = {int(a) % x.ndim for a in axes} if x.ndim else set()
    F.check_per_example_reduction(
      x.shape,
      math.prod(d for i, d in enumerate(x.shape) if i != 0 and i not in features),
      "InstanceNorm",
      "InstanceNorm normalizes each example and channel over its spatial axes: give it "
      "(N, H, W, C) (or use LayerNorm for (N, C) features).",
    )
    return super().__call__(x, mask=None if mask is None else jnp.asarray(mask))
