"""The paper's networks with a pluggable norm: :func:`create_model`.

``create_model('resnet18', num_classes=100, norm='mbn', total_epochs=200,
steps_per_epoch=25000)`` builds a ``flax.linen`` module called as
``model.apply(variables, x, train=True, step=step, mutable=['batch_stats'])``
(``train=False`` for inference, no ``mutable`` needed).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from mbn_jax.models import resnet
from mbn_jax.models.resnet import INPUT_VARIANTS, ResNet
from mbn_jax.models.vgg import VGG, VGG_CONFIGS
from mbn_jax.norms import make_norm

__all__ = ["MODEL_NAMES", "INPUT_VARIANTS", "ResNet", "VGG", "centered_conv", "create_model"]

_BUILDERS = {
  "resnet18": resnet.ResNet18,
  "resnet20": resnet.ResNet20,
  "resnet34": resnet.ResNet34,
  "resnet50": resnet.ResNet50,
  "vgg11": lambda **kw: VGG(config=VGG_CONFIGS["vgg11"], **kw),
  "vgg16": lambda **kw: VGG(config=VGG_CONFIGS["vgg16"], **kw),
}
MODEL_NAMES = tuple(sorted(_BUILDERS))


def centered_conv(conv_general_dilated: Callable | None = None) -> Callable:
  """Weight centring (MABN's ``CenConv2d``) as a convolution: W − mean(W) per output channel.

  Returns a function with ``jax.lax.conv_general_dilated``'s signature that
  subtracts from the kernel, for every output feature, its mean over the
  input features and the spatial taps (the reference's mean over (in, kh,
  kw); with ``feature_group_count`` over each group's inputs), then calls
  ``conv_general_dilated`` (None: XLA's). Gradients flow through the centring
  (``jax.grad``), as in the reference. Use it as ``nn.Conv``'s
  ``conv_general_dilated`` field, or through ``create_model(...,
  centered_weights=True)``; the parameters keep their names and shapes.
  """
  conv = jax.lax.conv_general_dilated if conv_general_dilated is None else conv_general_dilated

  def centered(lhs, rhs, *args, dimension_numbers=None, **kwargs):
    dn = jax.lax.conv_dimension_numbers(jnp.shape(lhs), jnp.shape(rhs), dimension_numbers)
    out_axis = dn.rhs_spec[0]
    axes = tuple(a for a in range(jnp.ndim(rhs)) if a != out_axis)
    rhs = rhs - jnp.mean(rhs, axis=axes, keepdims=True)
    return conv(lhs, rhs, *args, dimension_numbers=dimension_numbers, **kwargs)

  centered.centers_weights = True  # type: ignore[attr-defined]
  return centered


def create_model(
  name: str,
  *,
  num_classes: int,
  norm: str,
  input_variant: str = "cifar",
  dtype: Any = jnp.float32,
  conv_general_dilated: Callable | None = None,
  centered_weights: bool = False,
  **norm_options,
) -> nn.Module:
  """Builds one of the paper's networks with the norm named ``norm``.

  Args:
    name: ``'resnet18'``, ``'resnet20'``, ``'resnet34'``, ``'resnet50'``,
      ``'vgg11'`` or ``'vgg16'``.
    num_classes: the number of classes (outputs of the head).
    norm: a :func:`mbn_jax.norms.make_norm` name: ``'bn'``, ``'mbn'``,
      ``'brn'``, ``'gn'``, ``'ln'``, ``'in'`` or ``'none'``.
    input_variant: ``'cifar'`` (32×32; 3×3 stem, no max-pool) or
      ``'mini_imagenet'`` (84×84; 7×7/2 conv + 3×3/2 max-pool stem for the
      ResNets; VGG is unchanged).
    dtype: computation dtype of convs, denses and norms (parameters are
      float32; logits are float32).
    conv_general_dilated: the convolution of every conv layer, with
      ``jax.lax.conv_general_dilated``'s signature (``nn.Conv``'s field of the
      same name); ``None`` (default) uses XLA's. On CPU,
      ``train.cpu_conv.auto_conv(per_device_batch)`` is faster (see
      docs/performance.md); it returns XLA's conv on GPU/TPU.
    centered_weights: every convolution centres its kernel per output
      channel (:func:`centered_conv`, MABN's ``CenConv2d``), with any norm.
      Default False.
    **norm_options: passed to :func:`mbn_jax.norms.make_norm` (every norm
      accepts all of its options and ignores those it does not use).

  Returns:
    A ``flax.linen`` module; ``__call__(x, train=True, step=None)`` on NHWC x.
  """
  if not isinstance(name, str) or name.lower() not in _BUILDERS:
    raise ValueError(
      f"Unknown model name {name!r}: create_model(name=...) takes "
      f"one of {', '.join(map(repr, MODEL_NAMES))}."
    )
  if (
    isinstance(num_classes, bool)
    or not isinstance(num_classes, numbers.Integral)
    or num_classes <= 0
  ):
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
  if input_variant not in INPUT_VARIANTS:
    raise ValueError(f"input_variant must be one of {INPUT_VARIANTS}, got {input_variant!r}.")
  if conv_general_dilated is not None and not callable(conv_general_dilated):
    raise ValueError(
      "conv_general_dilated must be a function with "
      "jax.lax.conv_general_dilated's signature (or None for XLA's), got "
      f"{conv_general_dilated!r}."
    )
  if not isinstance(centered_weights, bool):
    raise ValueError(f"centered_weights must be True or False, got {centered_weights!r}.")
  if centered_weights:
    conv_general_dilated = centered_conv(conv_general_dilated)
  norm_factory = make_norm(norm, dtype=dtype, **norm_options)
  return _BUILDERS[name.lower()](
    num_classes=int(num_classes),
    norm=norm_factory,
    input_variant=input_variant,
    dtype=dtype,
    conv_general_dilated=conv_general_dilated,
  )
