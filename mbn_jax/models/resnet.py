"""ResNets for CIFAR (32×32) and Mini-ImageNet (84×84), any norm.

The architecture of the paper's backbones (PyTorch, He et al. 2016), as in
the widely used ``kuangliu/pytorch-cifar`` ResNets:

* ResNet18/34: :class:`BasicBlock` (two 3×3 convs), stages of 64/128/256/512
  channels with [2, 2, 2, 2] / [3, 4, 6, 3] blocks;
* ResNet50: :class:`Bottleneck` (1×1, 3×3, 1×1 with 4× expansion, the stride
  on the 3×3 conv), [3, 4, 6, 3] blocks;
* ResNet20: the small CIFAR ResNet of He et al. 2016 (Sec. 4.2): 16/32/64
  channels, 3 stages × 3 basic blocks;
* shortcuts: identity, or a 1×1 strided conv + norm where the shape changes
  (He et al.'s option B; for ResNet20 this gives 272,474 parameters, option A
  would give 269,722 — both "0.27M");
* convs have no bias (a norm follows each); He-normal (fan-out) init;
* global average pooling, then one ``Dense(num_classes)``.

Stems (``input_variant``):

* ``'cifar'``: 3×3 conv, stride 1, no max-pool (32×32 stays 32×32);
* ``'mini_imagenet'``: the ImageNet stem, 7×7 conv stride 2 + norm + ReLU +
  3×3 max-pool stride 2 (84×84 → 21×21 before the first stage).

Inputs are NHWC. Every norm is built by the ``norm`` factory of
:func:`mbn_jax.norms.make_norm` and called as
``norm(x, not train, step=step)``; the model never looks at which norm it is.

Every convolution goes through ``conv_general_dilated`` (a field of each
module; ``None`` = ``jax.lax.conv_general_dilated``), e.g.
``train.cpu_conv.auto_conv(batch)`` for the faster CPU path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "INPUT_VARIANTS"]

INPUT_VARIANTS = ("cifar", "mini_imagenet")


def check_images(x, input_variant: str, model: str):
  """Raises a ValueError for an unknown ``input_variant`` or non-NHWC ``x``."""
  if input_variant not in INPUT_VARIANTS:
    raise ValueError(f"input_variant must be one of {INPUT_VARIANTS}, got {input_variant!r}.")
  if jnp.ndim(x) != 4:
    raise ValueError(f"{model} expects NHWC images (rank 4), got shape {jnp.shape(x)}.")


# He et al. 2015 init, fan-out, as torchvision's ResNet.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features, kernel, strides=1, *, dtype, name, conv_general_dilated=None):
  """A bias-free k×k conv, padding k // 2, He init; ``conv_general_dilated`` as nn.Conv's."""
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    (strides, strides),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    dtype=dtype,
    kernel_init=conv_init,
    conv_general_dilated=conv_general_dilated,
    name=name,
  )


class BasicBlock(nn.Module):
  """relu(norm(conv3×3(relu(norm(conv3×3(x))))) + shortcut(x))."""

  filters: int
  strides: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool, step=None):
    conv = functools.partial(
      _conv, dtype=self.dtype, conv_general_dilated=self.conv_general_dilated
    )
    y = conv(self.filters, 3, self.strides, name="conv1")(x)
    y = nn.relu(self.norm(name="norm1")(y, not train, step=step))
    y = conv(self.filters, 3, name="conv2")(y)
    y = self.norm(name="norm2")(y, not train, step=step)
    if self.strides != 1 or x.shape[-1] != self.filters:
      x = conv(self.filters, 1, self.strides, name="shortcut_conv")(x)
      x = self.norm(name="shortcut_norm")(x, not train, step=step)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """relu(norm(conv1×1(relu(norm(conv3×3(relu(norm(conv1×1(x))))))))) + shortcut(x))."""

  filters: int
  strides: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool, step=None):
    conv = functools.partial(
      _conv, dtype=self.dtype, conv_general_dilated=self.conv_general_dilated
    )
    out = self.filters * self.expansion
    y = conv(self.filters, 1, name="conv1")(x)
    y = nn.relu(self.norm(name="norm1")(y, not train, step=step))
    y = conv(self.filters, 3, self.strides, name="conv2")(y)
    y = nn.relu(self.norm(name="norm2")(y, not train, step=step))
    y = conv(out, 1, name="conv3")(y)
    y = self.norm(name="norm3")(y, not train, step=step)
    if self.strides != 1 or x.shape[-1] != out:
      x = conv(out, 1, self.strides, name="shortcut_conv")(x)
      x = self.norm(name="shortcut_norm")(x, not train, step=step)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """A ResNet; see the module docstring. Call ``(x, train=True, step=None)``.

  Attributes:
    stage_sizes: blocks per stage.
    block_cls: :class:`BasicBlock` or :class:`Bottleneck`.
    num_classes: outputs of the final Dense layer.
    norm: a norm factory from :func:`mbn_jax.norms.make_norm`.
    stage_filters: channels of each stage (before the block expansion).
    input_variant: ``'cifar'`` or ``'mini_imagenet'`` (the stem).
    dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay
      float32 and the logits are returned in float32.
    conv_general_dilated: the convolution every conv uses (``nn.Conv``'s
      field); ``None`` means ``jax.lax.conv_general_dilated``.
  """

  stage_sizes: Sequence[int]
  block_cls: type
  num_classes: int
  norm: Callable[..., nn.Module]
  stage_filters: Sequence[int] = (64, 128, 256, 512)
  input_variant: str = "cifar"
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None

  @nn.compact
  def __call__(self, x, train: bool = True, step=None):
    check_images(x, self.input_variant, "ResNet")
    x = jnp.asarray(x, self.dtype)
    conv = functools.partial(
      _conv, dtype=self.dtype, conv_general_dilated=self.conv_general_dilated
    )
    if self.input_variant == "cifar":
      x = conv(self.stage_filters[0], 3, 1, name="stem_conv")(x)
      x = nn.relu(self.norm(name="stem_norm")(x, not train, step=step))
    else:
      x = conv(self.stage_filters[0], 7, 2, name="stem_conv")(x)
      x = nn.relu(self.norm(name="stem_norm")(x, not train, step=step))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # pyright: ignore[reportArgumentType]
    for i, (blocks, filters) in enumerate(zip(self.stage_sizes, self.stage_filters)):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(
          filters=filters,
          strides=strides,
          norm=self.norm,
          dtype=self.dtype,
          conv_general_dilated=self.conv_general_dilated,
          name=f"stage{i + 1}_block{j + 1}",
        )(x, train, step)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return jnp.asarray(x, jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet20 = functools.partial(
  ResNet, stage_sizes=(3, 3, 3), block_cls=BasicBlock, stage_filters=(16, 32, 64)
)
