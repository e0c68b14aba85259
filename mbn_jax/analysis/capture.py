"""Capture the batch statistics each norm layer sees during training.

Usage (inside a jitted train step, or anywhere ``model.apply`` runs)::

    with capture_norm_statistics():
      out, updates = model.apply(variables, x, train=True, step=step,
                                 mutable=["batch_stats", NORM_STATS])
    stats = collect(updates[NORM_STATS])   # {layer path: {"batch_mean": (C,), ...}}

For every module that normalizes with batch statistics — its class says so
(:func:`mbn_jax.capabilities_of`: ``batch_statistics``; ``flax.linen.BatchNorm``
and mbn_jax's BN, MBN, BReN) — called in training mode, it sows into the ``norm_stats`` collection the batch mean μ_B and the
*biased* batch variance σ²_B of the layer's input, per feature, in float32,
over the same axes the layer reduces (per device, as the layer sees them).

Cost: zero when not used. The interceptor is only installed inside the
``with`` block, and ``sow`` is a no-op unless ``norm_stats`` is mutable.
"""

from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mbn_jax import functional as F
from mbn_jax.norms.base import capabilities_of
from mbn_jax.precise import linen_training_mode

NORM_STATS = "norm_stats"

__all__ = ["NORM_STATS", "capture_norm_statistics", "collect", "is_batch_norm"]


def is_batch_norm(module) -> bool:
  """True for layers that normalize with batch statistics in training (their class says so)."""
  return capabilities_of(module).batch_statistics


@contextlib.contextmanager
def capture_norm_statistics(is_norm=is_batch_norm):
  """Context manager: sow every batch-norm layer's input statistics."""

  active: list[int] = []  # modules inside their own __call__ (super() re-entry)

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not is_norm(module) or not args or id(module) in active:
      return next_fun(*args, **kwargs)
    active.append(id(module))
    try:
      if linen_training_mode(module, args, kwargs) and not module.is_initializing():
        x = jnp.asarray(args[0])
        _, reduction_axes = F.feature_and_reduction_axes(x.ndim, getattr(module, "axis", -1))
        mean, var = F.batch_statistics(x, reduction_axes, mask=kwargs.get("mask"))
        module.sow(NORM_STATS, "batch_mean", mean)
        module.sow(NORM_STATS, "batch_var", var)
      return next_fun(*args, **kwargs)
    finally:
      active.pop()

  with nn.intercept_methods(interceptor):
    yield


def collect(norm_stats) -> dict[str, dict[str, jnp.ndarray]]:
  """Flattens a ``norm_stats`` collection to ``{"a/b/LayerName": {stat: array}}``.

  ``sow`` stores tuples (one entry per call); a layer called once per step
  gives one entry, which is unwrapped.
  """
  out: dict[str, dict[str, Any]] = {}

  def walk(tree, path):
    if isinstance(tree, dict) and any(isinstance(v, tuple) for v in tree.values()):
      out["/".join(path)] = {
        k: (v[0] if isinstance(v, tuple) and len(v) == 1 else v) for k, v in tree.items()
      }
      return
    for k, v in tree.items():
      walk(v, path + [k])

  walk(dict(norm_stats), [])
  return out
