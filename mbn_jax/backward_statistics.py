"""Statistics that only the backward pass can produce, carried into ``batch_stats``.

Some norms keep moving statistics of their *backward* pass: MABN (Yan et al.,
ICLR 2020) averages ψ_t = mean(g·z) over its last K iterations. ``model.apply``
cannot write such a statistic — it is born inside ``jax.grad``, after the
forward pass has returned. mbn_jax carries it out through a **probe**:

* the layer reads a zero-valued variable of the collection
  :data:`BACKWARD_PROBES` (same module path, same name, same shape as the
  ``batch_stats`` entry it feeds) and passes it into its ``jax.custom_vjp``;
  the probe changes nothing in the forward pass;
* the layer's backward pass returns, as the probe's cotangent, the **update**
  of that statistic (new value − old value);
* the training step differentiates the loss with respect to the parameters
  *and* the probes (the probes' cotangents are per device: never ``pmean``
  them) and adds each probe's cotangent to its statistic:
  :func:`fold_backward_statistics` (linen) / :func:`fold_backward_statistics_nnx`.

A linen training step with probes::

    probes = mbn_jax.zero_probes(variables)            # {} for a model without such norms

    def loss_fn(params, probes):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats,
                                     mbn_jax.BACKWARD_PROBES: probes}, x, train=True,
                                    mutable=["batch_stats"])
      return loss(logits), updates

    (loss, updates), (grads, probe_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, probes)
    batch_stats = mbn_jax.fold_backward_statistics(updates["batch_stats"], probe_grads)

A step that differentiates only the parameters still trains, but the
backward statistics never move (MABN's ψ buffer stays at its initial zeros,
so after its warm-up it divides the current ψ_t by K): fold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, traverse_util

__all__ = [
  "BACKWARD_PROBES",
  "BackwardProbe",
  "fold_backward_statistics",
  "fold_backward_statistics_nnx",
  "probe_name",
  "zero_probes",
]

BACKWARD_PROBES = "backward_probes"  # the linen collection of the probes


class BackwardProbe(nnx.Variable):
  """An nnx norm's zero-valued probe: its cotangent is the update of a backward statistic.

  Differentiate it with ``nnx.grad(..., argnums=nnx.DiffState(0, (nnx.Param,
  BackwardProbe)))`` and fold the result with :func:`fold_backward_statistics_nnx`.
  """


def probe_name(statistic: str) -> str:
  """The nnx attribute of the probe of statistic ``statistic``: ``<statistic>_probe``."""
  return f"{statistic}_probe"


def zero_probes(variables: Mapping) -> dict:
  """Zeros shaped like ``variables[BACKWARD_PROBES]`` ({} when the model has no such norm).

  ``variables`` is what ``model.init`` returned (or its ``jax.eval_shape``:
  ``ShapeDtypeStruct`` leaves work too).
  """
  probes = variables.get(BACKWARD_PROBES, {})
  return jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), dict(probes))


def fold_backward_statistics(batch_stats: Mapping, probe_grads: Mapping) -> dict:
  """``batch_stats`` with each probed statistic moved by its probe's cotangent.

  new[path] = batch_stats[path] + probe_grads[path] for every leaf of
  ``probe_grads`` (the cotangents of :data:`BACKWARD_PROBES`, whose paths
  mirror ``batch_stats``); every other statistic is returned unchanged.

  Raises:
    ValueError: a probe without a statistic of the same path and shape.
  """
  probe_grads = dict(probe_grads or {})
  if not jax.tree.leaves(probe_grads):
    return dict(batch_stats)
  flat: dict[Any, Any] = traverse_util.flatten_dict(dict(batch_stats))
  deltas: dict[Any, Any] = traverse_util.flatten_dict(probe_grads)
  for path, delta in deltas.items():
    if path not in flat or jnp.shape(flat[path]) != jnp.shape(delta):
      raise ValueError(
        f"fold_backward_statistics: the probe {'/'.join(map(str, path))} (shape "
        f"{jnp.shape(delta)}) has no batch_stats entry of the same path and shape: pass the "
        "batch_stats of the same model (the updates of its training apply) and the cotangents "
        f"of its '{BACKWARD_PROBES}' collection."
      )
    flat[path] = flat[path] + jnp.asarray(delta, jnp.result_type(flat[path]))
  return traverse_util.unflatten_dict(flat)


def fold_backward_statistics_nnx(model: nnx.Module, grads) -> None:
  """Adds the :class:`BackwardProbe` cotangents in ``grads`` to the statistics of ``model``.

  ``grads``: the ``nnx.State`` that ``nnx.grad`` returned for a
  ``DiffState`` that includes :class:`BackwardProbe`. In place, as nnx
  updates are.
  """
  flat: dict[Any, Any] = dict(nnx.to_flat_state(grads)) if not isinstance(grads, dict) else grads
  for path, delta in flat.items():
    name = str(path[-1]) if path else ""
    if not name.endswith("_probe"):
      continue
    layer: Any = model
    for key in path[:-1]:
      layer = layer[key] if isinstance(key, int) else getattr(layer, str(key))
    value = delta[...] if isinstance(delta, nnx.Variable) else delta
    target = getattr(layer, name[: -len("_probe")])
    target[...] = target[...] + jnp.asarray(value, target[...].dtype)
