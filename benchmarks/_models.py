"""Model construction for the benchmarks, with a pluggable convolution.

Uses ``mbn_jax.models.create_model``. If it accepts a convolution hook
(``conv_general_dilated=`` or ``conv=``), that is used; otherwise the
convolution is swapped for the duration of ``init``/``apply`` by replacing
the ``lax`` module that ``flax.linen.Conv`` looks ``conv_general_dilated`` up
in (benchmark-only; see docs/performance.md for the proposed hook).
"""

from __future__ import annotations

import contextlib
import inspect
import types

import flax.linen.linear as _flax_linear
import jax.numpy as jnp
from jax import lax

from mbn_jax import fast_conv
from mbn_jax.models import create_model

CONV_VARIANTS = ("lax", "fast", "auto", "taps", "stack", "chunked8", "im2col")

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


def _hook_name():
  params = inspect.signature(create_model).parameters
  for n in ("conv_general_dilated", "conv"):
    if n in params:
      return n
  return None


@contextlib.contextmanager
def patched_conv(fn):
  """flax.linen.Conv uses ``fn`` instead of lax.conv_general_dilated."""
  if fn is lax.conv_general_dilated:
    yield
    return
  old = _flax_linear.lax
  proxy = types.ModuleType("lax_proxy")
  proxy.__dict__.update(lax.__dict__)
  proxy.conv_general_dilated = fn
  _flax_linear.lax = proxy
  try:
    yield
  finally:
    _flax_linear.lax = old


class Model:
  """(module, conv context): ``with m.ctx(): m.module.apply(...)`` at trace time."""

  def __init__(self, name, norm, conv_variant="lax", batch_size=None, dtype=jnp.float32,
               num_classes=10):
    fn = conv_fn(conv_variant, batch_size)
    opts = dict(MBN_OPTIONS) if norm == "mbn" else {}
    hook = _hook_name()
    self.hooked = hook is not None
    if hook is not None:
      opts[hook] = fn
      self._fn = lax.conv_general_dilated
    else:
      self._fn = fn
    self.module = create_model(name, num_classes=num_classes, norm=norm,
                               input_variant="cifar", dtype=dtype, **opts)

  def ctx(self):
    return patched_conv(self._fn)
