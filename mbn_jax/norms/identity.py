"""No normalization (``make_norm('none')``): the identity with the uniform call."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike

from mbn_jax.norms.base import Capabilities

__all__ = ["Identity"]


class Identity(nn.Module):
  """No normalization (``'none'``): returns ``x``; every argument is ignored."""

  capabilities: ClassVar[Capabilities] = Capabilities()  # normalizes nothing

  @nn.compact
  def __call__(
    self, x: ArrayLike, use_running_average: bool | None = None, *, step: ArrayLike | None = None
  ) -> jax.Array:
    del use_running_average, step
    return jnp.asarray(x)
