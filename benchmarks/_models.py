"""Model construction for the benchmarks, with a pluggable convolution.

``mbn_jax.models.create_model(..., conv_general_dilated=conv_fn(variant, batch))``:
the same hook the training program uses (``config.conv``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from mbn_jax.models import create_model
from train import cpu_conv as fast_conv

CONV_VARIANTS = ("lax", "fast", "auto", "taps", "chunked8")

# mbn options so that Eq. 11 is evaluated at a traced step.
MBN_OPTIONS = dict(total_epochs=200, steps_per_epoch=100)


def conv_fn(variant: str, batch_size: int | None = None):
  if variant == "lax":
    return lax.conv_general_dilated
  if variant == "auto":  # what mbn_jax recommends: fast path on CPU only
    return fast_conv.auto_conv(batch_size)
  if variant == "fast":
    return fast_conv.conv_general_dilated
  if variant.startswith("chunked"):
    return fast_conv.make_conv_general_dilated("chunked", chunk_size=int(variant[7:] or 8))
  return fast_conv.make_conv_general_dilated(variant)


class Model:
  """A benchmark network: ``Model(...).module`` is ``create_model``'s, with its convs set."""

  def __init__(
    self, name, norm, conv_variant="lax", batch_size=None, dtype=jnp.float32, num_classes=10
  ):
    opts = dict(MBN_OPTIONS) if norm == "mbn" else {}
    fn = conv_fn(conv_variant, batch_size)
    self.module = create_model(
      name,
      num_classes=num_classes,
      norm=norm,
      input_variant="cifar",
      dtype=dtype,
      conv_general_dilated=fn,
      **opts,
    )
