"""VGG for CIFAR (the ``kuangliu/pytorch-cifar`` VGG), any norm.

Each conv is 3×3, padding 1, with bias (as published), followed by the norm
and a ReLU; 'M' is a 2×2 max-pool, stride 2. Then global average pooling and
a single ``Dense(num_classes)`` head (Linear(512, classes)): VGG11 has
9,231,114 and VGG16 14,728,266 parameters with BatchNorm and 10 classes.

On 32×32 inputs the last feature map is 1×1, so the pooling is the
flatten of the published model. The same network serves Mini-ImageNet
(84×84 → 2×2 after five pools, averaged): ``input_variant`` is accepted for a
uniform :func:`mbn_jax.models.create_model` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from mbn_jax.models.resnet import check_images, conv_init

__all__ = ["VGG", "VGG_CONFIGS"]

VGG_CONFIGS = {
  "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
  "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
  """VGG: [conv3×3 → norm → ReLU | max-pool]* → global mean → Dense.

  Attributes:
    config: channel counts and ``'M'`` (max-pool), e.g. ``VGG_CONFIGS['vgg16']``.
    num_classes: outputs of the head.
    norm: a norm factory from :func:`mbn_jax.norms.make_norm`.
    input_variant: ``'cifar'`` or ``'mini_imagenet'`` (same network).
    dtype: computation dtype; parameters float32, logits float32.
    conv_general_dilated: the convolution every conv uses (``nn.Conv``'s
      field); ``None`` means ``jax.lax.conv_general_dilated``.
  """

  config: Sequence[Any]
  num_classes: int
  norm: Callable[..., nn.Module]
  input_variant: str = "cifar"
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None

  @nn.compact
  def __call__(self, x, train: bool = True, step=None):
    check_images(x, self.input_variant, "VGG")
    x = jnp.asarray(x, self.dtype)
    i = 0
    for v in self.config:
      if v == "M":
        x = nn.max_pool(x, (2, 2), (2, 2))
        continue
      i += 1
      x = nn.Conv(
        v,
        (3, 3),
        padding=((1, 1), (1, 1)),
        dtype=self.dtype,
        kernel_init=conv_init,
        conv_general_dilated=self.conv_general_dilated,
        name=f"conv{i}",
      )(x)
      x = nn.relu(self.norm(name=f"norm{i}")(x, not train, step=step))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return jnp.asarray(x, jnp.float32)
