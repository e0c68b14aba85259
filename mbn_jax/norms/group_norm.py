"""Group Normalization (Wu & He 2018), a thin wrapper of ``flax.linen.GroupNorm``.

Statistics per example and group of channels, so nothing depends on the
batch: no ``batch_stats``, no running averages. :func:`group_count` picks the
groups (32 when 32 divides C). In ``flax.nnx`` use ``flax.nnx.GroupNorm``
with ``num_groups=group_count(C)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers
from jax.typing import ArrayLike

from mbn_jax import functional as F
from mbn_jax.norms.base import Capabilities

__all__ = ["GroupNorm", "group_count"]


def group_count(channels: int, num_groups: int = 32) -> int:
  """The number of GroupNorm groups for ``channels`` channels.

  The largest divisor of ``channels`` that is <= ``num_groups``: 32 groups
  (the paper's setting) whenever 32 divides C; e.g. C=16 → 16, C=48 → 24,
  C=3 → 3. Always >= 1, so GroupNorm is defined for every channel count.
  """
  for name, v in (("channels", channels), ("num_groups", num_groups)):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
      raise ValueError(f"{name} must be a positive int, got {v!r}.")
  return max(g for g in range(1, min(channels, num_groups) + 1) if channels % g == 0)


class GroupNorm(nn.Module):
  """Group normalization (Wu & He 2018) over (H, W, C/G) per example, uniform call.

  y = γ (x − μ_g)/√(σ²_g + ε) + β with statistics per example and group.
  The group count is :func:`group_count` (C, num_groups): 32 when 32 divides
  C, else the largest divisor of C that is <= 32. ``use_running_average`` and
  ``step`` are accepted and ignored. Variables: ``params/scale``,
  ``params/bias`` (those of ``flax.linen.GroupNorm``). Refused (``ValueError``/
  ``TypeError``): epsilon NaN or <= 0, complex input, and an input whose
  groups hold one value each (e.g. ``(N, C)`` with C <= 32 channels: one
  channel per group and no spatial axes), whose output would be ``bias``
  whatever the input.
  """

  capabilities: ClassVar[Capabilities] = Capabilities(normalizer="per_example")

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = initializers.zeros
  scale_init: Any = initializers.ones

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates epsilon and num_groups, naming the offending argument."""
    F.check_epsilon(cfg.epsilon)
    if (
      isinstance(cfg.num_groups, bool)
      or not isinstance(cfg.num_groups, numbers.Integral)
      or cfg.num_groups <= 0
    ):
      raise ValueError(f"num_groups must be a positive int, got {cfg.num_groups!r}.")

  @nn.compact
  def __call__(
    self, x: ArrayLike, use_running_average: bool | None = None, *, step: ArrayLike | None = None
  ) -> jax.Array:
    del use_running_average, step
    self.check_fields(self)
    x = F.check_input(x, "GroupNorm")
    if x.ndim < 2:
      raise ValueError(
        f"GroupNorm needs an input (N, ..., C) with a batch and a channel axis, got shape "
        f"{x.shape}."
      )
    groups = group_count(x.shape[-1], self.num_groups)
    F.check_per_example_reduction(
      x.shape,
      math.prod(x.shape[1:-1]) * (x.shape[-1] // groups),
      "GroupNorm",
      f"Here {groups} groups of {x.shape[-1] // groups} channel(s) and no spatial axes: give it "
      "(N, H, W, C) input, or fewer groups (num_groups), or use LayerNorm for (N, C) features.",
    )
    norm = nn.GroupNorm(
      num_groups=groups,
      epsilon=self.epsilon,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      use_bias=self.use_bias,
      use_scale=self.use_scale,
      bias_init=self.bias_init,
      scale_init=self.scale_init,
      name="group_norm",
    )
    nn.share_scope(self, norm)
    return norm(x)
