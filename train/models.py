"""Model lookup for the training program.

The paper's networks come from ``mbn_jax.models.create_model``; this module
adds two tiny networks for 8x8-16x16 inputs (the quickstart and the tests).
Every model takes its normalization layers from ``mbn_jax.norms.make_norm``
and is called as ``model.apply(variables, x, train=..., step=...,
mutable=['batch_stats'])``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from mbn_jax import models as paper_models
from mbn_jax import norms

TINY_MODELS = ("tiny_cnn", "mlp")


def norm_names() -> tuple[str, ...]:
  """Every name ``make_norm`` takes now (the package's and any :func:`register_norm`-ed)."""
  return tuple(norms.NORM_CLASSES)


def model_names() -> tuple[str, ...]:
  return TINY_MODELS + tuple(paper_models.MODEL_NAMES)


class TinyCNN(nn.Module):
  """conv3x3(16)-norm-relu, conv3x3(32, stride 2)-norm-relu, mean pool, dense."""

  num_classes: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None  # None: jax.lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool = False, step=None):
    x = x.astype(self.dtype)
    for i, (features, stride) in enumerate(((16, 1), (32, 2))):
      x = nn.Conv(
        features,
        (3, 3),
        strides=stride,
        use_bias=False,
        dtype=self.dtype,
        conv_general_dilated=self.conv_general_dilated,
        name=f"conv{i}",
      )(x)
      x = self.norm(name=f"norm{i}")(x, not train, step=step)
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


class MLP(nn.Module):
  """flatten, dense(64)-norm-relu, dense."""

  num_classes: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, step=None):
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    x = nn.Dense(64, use_bias=False, dtype=self.dtype, name="dense0")(x)
    x = nn.relu(self.norm(name="norm0")(x, not train, step=step))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def create_model(
  name: str,
  *,
  num_classes: int,
  norm: str,
  input_variant: str = "cifar",
  dtype=jnp.float32,
  conv_general_dilated: Callable | None = None,
  **norm_options,
) -> nn.Module:
  """``mbn_jax.models.create_model`` plus the tiny models above.

  ``conv_general_dilated`` is the convolution of every conv layer (None:
  XLA's); the MLP has none and ignores it.
  """
  if name in TINY_MODELS:
    norm_factory = norms.make_norm(norm, dtype=dtype, **norm_options)
    if name == "tiny_cnn":
      return TinyCNN(
        num_classes=num_classes,
        norm=norm_factory,
        dtype=dtype,
        conv_general_dilated=conv_general_dilated,
      )
    return MLP(num_classes=num_classes, norm=norm_factory, dtype=dtype)
  return paper_models.create_model(
    name,
    num_classes=num_classes,
    norm=norm,
    input_variant=input_variant,
    dtype=dtype,
    conv_general_dilated=conv_general_dilated,
    **norm_options,
  )
