"""Turn a network trained with one norm into the same network with another (fine-tuning).

Most users meet 2 images per device when they fine-tune a backbone pretrained
at a large batch with BatchNorm. :func:`convert_norm_variables` (linen) and
:func:`convert_norm_state_nnx` (nnx) carry every parameter and statistic of
the pretrained network into the variables of the *same* network built with
another norm — FrozenBN, MBN, MABN or BN — and say what they could not map.

The target defines what is needed: build the new network, ``init`` it (or
``jax.eval_shape`` its ``init``), and every leaf of the target is filled from
the source where a rule says how; the rest keep the target's initial values
and are reported. Per norm layer (a module whose statistics include ``mean``
and ``var`` in the source), with μ = source ``mean``, σ² = source ``var``,
γ/β = source ``scale``/``bias`` (``params``, or FrozenBN's ``batch_stats``):

================================  ======================================================
target statistic                  value
================================  ======================================================
``mean``, ``var``                 μ, σ² (BN, BReN, FrozenBN, MBN's inference statistics)
``train_mean``, ``train_var``     μ, σ² (MBN's training statistics: its normalizer starts
                                  at the pretrained statistics instead of plain BN)
``running_var`` (MABN)            σ² + μ², the second moment E[x²] MABN normalizes with
``buffer_x2`` (MABN)              σ² + μ² in every one of its K rows
``scale``, ``bias``               γ, β (FrozenBN with a frozen affine part keeps them in
                                  ``batch_stats``; every other norm in ``params``)
anything else                     the target's initial value (MABN's ``buffer_gz`` 0 and
                                  ``iters`` 0: it warms up again), reported
================================  ======================================================

Every other parameter (convolutions, dense layers) is copied when its path and
shape match the target's; a leaf of another shape (a classifier head for
another number of classes) keeps the target's value and is reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

__all__ = ["ConversionReport", "convert_layer", "convert_norm_variables", "convert_norm_state_nnx"]

Path = tuple[str, ...]


@dataclasses.dataclass
class ConversionReport:
  """What :func:`convert_norm_variables` did.

  Attributes:
    copied: target leaves copied unchanged from the same path of the source.
    derived: target leaves computed from the source's statistics (the table).
    kept: target leaves left at their initial value (nothing in the source maps to them).
    dropped: source leaves that no target leaf took.
    mismatched: leaves present in both with different shapes (kept at the target's value).
  """

  copied: list[str] = dataclasses.field(default_factory=list)
  derived: list[str] = dataclasses.field(default_factory=list)
  kept: list[str] = dataclasses.field(default_factory=list)
  dropped: list[str] = dataclasses.field(default_factory=list)
  mismatched: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> dict:
    """Counts and the unmapped names, JSON-ready (what a run's summary.json records)."""
    return {
      "copied": len(self.copied),
      "derived": len(self.derived),
      "kept_initial": sorted(self.kept),
      "dropped": sorted(self.dropped),
      "shape_mismatch": sorted(self.mismatched),
    }


def _name(path: Path) -> str:
  return "/".join(str(p) for p in path)


def convert_layer(source: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[dict, set[str]]:
  """One norm layer: the target's leaves from the source's ``mean``/``var``/``scale``/``bias``.

  ``source`` and ``target`` map leaf names to arrays (a layer's statistics and
  affine parameters together). Returns ``(values, derived)``: values for the
  target leaves the table above defines, and the names among them computed
  rather than copied.
  """
  out: dict[str, Any] = {}
  derived: set[str] = set()
  mean, var = source.get("mean"), source.get("var")
  if mean is not None and var is not None:
    second = jnp.asarray(var) + jnp.square(jnp.asarray(mean))
    for name in ("mean", "var"):
      if name in target:
        out[name] = source[name]
    rows = jnp.shape(target["buffer_x2"])[0] if "buffer_x2" in target else 0
    rules = {
      "train_mean": mean,
      "train_var": var,
      "running_var": second,
      "buffer_x2": jnp.broadcast_to(second, (rows,) + jnp.shape(second)),
    }
    for name, value in rules.items():
      if name in target:
        out[name] = value
        derived.add(name)
  for name in ("scale", "bias"):
    if name in target and name in source:
      out[name] = source[name]
  return out, derived


def _layers(flat: Mapping[Path, Any]) -> dict[Path, dict[str, Any]]:
  """``{module path: {leaf name: value}}`` of a flat tree whose paths end in a leaf name."""
  layers: dict[Path, dict[str, Any]] = {}
  for path, value in flat.items():
    layers.setdefault(path[:-1], {})[str(path[-1])] = value
  return layers


def _convert_flat(
  source: Mapping[Path, Any], target: Mapping[Path, Any]
) -> tuple[dict[Path, Any], ConversionReport]:
  """The core on flat ``{path: leaf}`` trees whose last two path entries are (layer, leaf)."""
  report = ConversionReport()
  out = dict(target)
  taken: set[Path] = set()
  src_layers, tgt_layers = _layers(source), _layers(target)
  for layer, tgt in tgt_layers.items():
    src = src_layers.get(layer, {})
    values, derived = convert_layer(src, tgt) if "mean" in src and "var" in src else ({}, set())
    for name, tgt_value in tgt.items():
      path = layer + (name,)
      if name in values:
        value = values[name]
      elif name in src:
        value = src[name]
      else:
        report.kept.append(_name(path))
        continue
      if jnp.shape(value) != jnp.shape(tgt_value):
        report.mismatched.append(_name(path))
        continue
      out[path] = jnp.asarray(value, jnp.result_type(tgt_value))
      (report.derived if name in derived else report.copied).append(_name(path))
      if name in src:
        taken.add(layer + (name,))
    if "mean" in src and "var" in src:  # the statistics that fed derived values were used
      taken.update(layer + (n,) for n in ("mean", "var", "scale", "bias") if n in src)
  report.dropped = [_name(p) for p in source if p not in taken]
  return out, report


def convert_norm_variables(source: Mapping, target: Mapping) -> tuple[dict, ConversionReport]:
  """A linen network's variables for another norm: ``(variables, report)``.

  Args:
    source: the trained network's variables (``{"params": ..., "batch_stats": ...}``),
      e.g. trained with BatchNorm.
    target: the variables of the same network built with the new norm (its
      ``init``, or ``jax.eval_shape`` of it: ``ShapeDtypeStruct`` leaves are
      replaced by zeros where nothing maps to them).

  Returns:
    ``(variables, report)``: the target's collections (``params``,
    ``batch_stats``, and any other the target has, such as MABN's
    ``backward_probes``), filled per the module's table, and a
    :class:`ConversionReport` naming what was copied, derived, kept at its
    initial value, dropped, or left because of a shape mismatch.
  """
  flat_src: dict[Path, Any] = {}
  for collection in ("params", "batch_stats"):
    for path, v in traverse_util.flatten_dict(dict(source.get(collection, {}))).items():
      flat_src[tuple(map(str, path))] = v
  flat_tgt: dict[Path, Any] = {}
  where: dict[Path, str] = {}
  for collection in ("params", "batch_stats"):
    for path, v in traverse_util.flatten_dict(dict(target.get(collection, {}))).items():
      key = tuple(map(str, path))
      flat_tgt[key] = _concrete(v)
      where[key] = collection
  converted, report = _convert_flat(flat_src, flat_tgt)
  out: dict[str, Any] = {
    name: jax.tree.map(_concrete, dict(value))
    for name, value in target.items()
    if name not in ("params", "batch_stats")
  }
  collections: dict[str, dict[Path, Any]] = {"params": {}, "batch_stats": {}}
  for path, value in converted.items():
    collections[where[path]][path] = value
  for name, flat in collections.items():
    if name in target:
      out[name] = traverse_util.unflatten_dict(flat)
  return out, report


def convert_norm_state_nnx(source: Mapping, target: Mapping) -> tuple[dict, ConversionReport]:
  """The nnx counterpart: pure-dict states (``nnx.to_pure_dict(nnx.state(model))``).

  ``source`` is the trained model's pure dict, ``target`` the new model's
  (parameters and statistics of a layer side by side, as nnx keeps them).
  Returns ``(pure_dict, report)``; apply it with
  ``nnx.replace_by_pure_dict(state, pure_dict); nnx.update(model, state)``.
  """
  flat_src = {tuple(map(str, p)): v for p, v in traverse_util.flatten_dict(dict(source)).items()}
  keys = {tuple(map(str, p)): p for p in traverse_util.flatten_dict(dict(target))}
  flat_tgt = {k: _concrete(v) for k, v in traverse_util.flatten_dict(dict(target)).items()}
  flat_tgt = {tuple(map(str, p)): v for p, v in flat_tgt.items()}
  converted, report = _convert_flat(flat_src, flat_tgt)
  return traverse_util.unflatten_dict({keys[p]: v for p, v in converted.items()}), report


def _concrete(v):
  return jnp.zeros(v.shape, v.dtype) if isinstance(v, jax.ShapeDtypeStruct) else v
