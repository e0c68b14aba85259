"""What every norm of mbn_jax is made of: a capability declaration and two front ends.

A norm lives in one file (``mbn_jax/norms/<name>.py``) holding

* its pure body ``body(cfg, x, stats, scale, bias, *, use_running_average,
  initializing, **call) -> (y, new_stats)`` (``cfg``: anything with the
  layer's fields — the linen module or the nnx module itself);
* its ``flax.linen`` class: the **declaration** — the dataclass fields (names,
  defaults), :class:`Capabilities`, the initial ``batch_stats``
  (classmethod ``statistics_for(cfg)``) and the argument checks (classmethod
  ``check_fields(cfg)``; ``cfg`` has the fields as attributes);
* its ``flax.nnx`` class, a :class:`NNXNorm` that takes every field of the
  linen declaration (same names, same defaults; ``use_running_average``
  defaults to False as in ``nnx.BatchNorm``) plus ``num_features`` and
  ``rngs``, and runs the same body.

:func:`linen_front_end` and :func:`nnx_front_end` are the one place where
variables are read and written around a body. Tools never ask a norm's name:
they ask :func:`capabilities_of` (the class's ``capabilities``).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx
from flax.linen.module import merge_param

from mbn_jax import functional as F
from mbn_jax.backward_statistics import BACKWARD_PROBES, BackwardProbe, probe_name

__all__ = [
  "BATCH_NORM_CAPABILITIES",
  "BatchStatisticsFields",
  "Capabilities",
  "NNXNorm",
  "capabilities_of",
  "declared_fields",
  "affine_is_learned",
  "feature_shape_of",
  "linen_call",
  "linen_front_end",
  "nnx_arguments",
  "nnx_front_end",
  "promote_like_nnx",
  "register_capabilities",
  "statistics_with_accumulator",
]


NORMALIZERS = ("batch", "moving", "renormalized", "moving_average", "frozen", "per_example", "none")


@dataclasses.dataclass(frozen=True)
class Capabilities:
  """What a normalization layer can do; every tool decides by these, never by a name.

  Attributes:
    normalizer: what training normalizes with — ``"batch"`` (the current
      batch's statistics: BN), ``"moving"`` (moving averages of them: MBN),
      ``"renormalized"`` (batch statistics corrected towards the running
      ones: BReN), ``"moving_average"`` (simple moving averages of the last
      K iterations' statistics, forward and backward: MABN), ``"frozen"``
      (fixed statistics that training never moves: FrozenBN),
      ``"per_example"`` (GN, LN, IN) or ``"none"``.
    running_statistics: keeps inference statistics in ``batch_stats`` (its
      evaluation depends on them; devices' copies are averaged before
      evaluation).
    batch_statistics: normalizes with statistics of the current batch in
      training (what :mod:`mbn_jax.analysis.capture` records).
    precise_statistics: its ``mean``/``var`` can be re-estimated by
      :func:`mbn_jax.precise_batch_stats` (needs the BatchNorm fields ``axis``,
      ``epsilon``, ``dtype``, ``axis_name``, ``axis_index_groups``,
      ``use_fast_variance``, ``use_scale``, ``use_bias``). **The one
      capability every tool reads to decide whether to re-estimate**: False
      for a norm without running statistics, for one whose statistics are
      frozen (FrozenBN) and for one whose inference statistics are not a
      mean and a variance (MABN's second moment).
    takes_step: reads the training ``step`` passed through ``apply``.
    momentum_schedule: normalizes with moving averages whose momentum λ(t)
      follows a schedule (MBN's Eq. 11): the training program logs λ.
    training_statistics: keeps training moving statistics ``train_mean``/
      ``train_var`` apart from the inference ones (MBN).
    deferred_accumulation: takes ``accumulation_steps`` k > 1 (gradient
      accumulation's deferred inference statistics).
    synchronizes: takes ``axis_name`` / ``axis_index_groups`` to pool its
      statistics over devices.
    backward_statistics: keeps statistics of its backward pass in
      ``batch_stats`` (MABN's ψ buffer). They reach ``batch_stats`` only
      through a probe: the training step must differentiate the loss with
      respect to the ``backward_probes`` collection too and fold the
      cotangents back (:mod:`mbn_jax.backward_statistics`). The class names
      the statistics in ``backward_statistic_names``.
    complex_input: normalizes complex input as ``flax.linen.BatchNorm`` does
      (complex mean, real variance ``E[|x − μ|²]``, the moving averages likewise:
      BN, MBN). Every other norm refuses complex input with a TypeError
      (:func:`mbn_jax.functional.check_input`).
  """

  normalizer: str = "none"
  running_statistics: bool = False
  batch_statistics: bool = False
  precise_statistics: bool = False
  takes_step: bool = False
  momentum_schedule: bool = False
  training_statistics: bool = False
  deferred_accumulation: bool = False
  synchronizes: bool = False
  backward_statistics: bool = False
  complex_input: bool = False

  def __post_init__(self):
    if self.normalizer not in NORMALIZERS:
      raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {self.normalizer!r}.")
    if self.precise_statistics and not self.running_statistics:
      raise ValueError(
        "precise_statistics needs running_statistics (there is nothing to re-estimate)."
      )


NO_CAPABILITIES = Capabilities()
# flax.linen.BatchNorm / flax.nnx.BatchNorm (Flax's own classes, registered below).
BATCH_NORM_CAPABILITIES = Capabilities(
  normalizer="batch",
  running_statistics=True,
  batch_statistics=True,
  precise_statistics=True,
  synchronizes=True,
  complex_input=True,
)
_REGISTERED: dict[type, Capabilities] = {
  nn.BatchNorm: BATCH_NORM_CAPABILITIES,
  nnx.BatchNorm: BATCH_NORM_CAPABILITIES,
}


def register_capabilities(cls: type, capabilities: Capabilities) -> None:
  """Declares the capabilities of a class that is not yours to edit (a third-party norm)."""
  if not isinstance(capabilities, Capabilities):
    raise TypeError(f"capabilities must be a Capabilities, got {capabilities!r}.")
  _REGISTERED[cls] = capabilities


def capabilities_of(module_or_class) -> Capabilities:
  """The :class:`Capabilities` of a norm class or instance (none for other modules).

  A class's own ``capabilities`` attribute wins; otherwise the nearest
  registered base class (``flax.linen.BatchNorm``, ``flax.nnx.BatchNorm``, or
  one given to :func:`register_capabilities`); otherwise no capability.
  """
  cls = module_or_class if isinstance(module_or_class, type) else type(module_or_class)
  own = getattr(cls, "capabilities", None)
  if isinstance(own, Capabilities):
    return own
  for base in cls.__mro__:
    if base in _REGISTERED:
      return _REGISTERED[base]
  return NO_CAPABILITIES


# ----------------------------------------------------------------------------
# Statistics and fields.


def statistics_with_accumulator(statistics: Mapping, accumulation_steps: int) -> dict:
  """A layer's ``batch_stats`` initializers, plus the deferred accumulator when k > 1."""
  if accumulation_steps > 1:
    return {**statistics, **F.DEFERRED_STATISTICS}
  return dict(statistics)


_MODULE_BOOKKEEPING = ("parent", "name")


def declared_fields(linen_cls: type) -> dict[str, Any]:
  """``{field: default}`` of a linen norm class (its dataclass fields; no parent/name)."""
  out = {}
  for f in dataclasses.fields(linen_cls):
    if f.name in _MODULE_BOOKKEEPING or not f.init:
      continue
    if f.default is not dataclasses.MISSING:
      out[f.name] = f.default
    elif f.default_factory is not dataclasses.MISSING:
      out[f.name] = f.default_factory()
    else:
      raise TypeError(f"{linen_cls.__name__}.{f.name} has no default; norm fields need one.")
  return out


def feature_shape_of(num_features, axis) -> tuple[int, ...]:
  """The statistics' shape: ``(num_features,)``, or the tuple itself for tuple axes."""
  shape = (
    (num_features,)
    if isinstance(num_features, numbers.Integral) and not isinstance(num_features, bool)
    else tuple(num_features)
    if isinstance(num_features, (tuple, list))
    else None
  )
  n_axes = 1 if isinstance(axis, numbers.Integral) else len(tuple(axis))
  if (
    shape is None
    or not shape
    or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0 for d in shape)
    or len(shape) != n_axes
  ):
    raise ValueError(
      f"num_features must be a positive int (one feature axis) or a tuple of positive "
      f"ints, one per feature axis of axis={axis!r}; got {num_features!r}."
    )
  return tuple(int(d) for d in shape)


# ----------------------------------------------------------------------------
# flax.linen.


class BatchStatisticsFields(nn.Module):
  """The fields the batch-statistics norms share: ``flax.linen.BatchNorm``'s (all but
  ``momentum``) plus ``guard_nonfinite``. MBN and BReN declare theirs on top of these.

  Attributes:
    use_running_average: True for inference; may also be given to ``__call__``.
    axis: the feature axis (or axes); default -1 (channels last).
    epsilon: added to the variance (default 1e-5, as in Flax).
    dtype: the output dtype (statistics are always float32 or wider).
    param_dtype: dtype of scale and bias.
    use_bias, use_scale, bias_init, scale_init: the affine part, as in Flax.
    axis_name: the ``pmap``/``shard_map`` axis to synchronize statistics over
      (None: per-device statistics, as in the paper).
    axis_index_groups: groups of devices within ``axis_name`` (under ``pmap``;
      on a Mesh, a second mesh axis names the groups instead).
    use_fast_variance: Var = E[x²] − E[x]² in one pass (as in Flax).
    force_float32_reductions: compute statistics in at least float32.
    guard_nonfinite: keep a feature's statistics unchanged when its batch
      statistics are NaN/±inf (default True).
  """

  use_running_average: bool | None = None
  axis: int | tuple[int, ...] = -1
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = nn.initializers.zeros
  scale_init: Any = nn.initializers.ones
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True
  guard_nonfinite: bool = True


def linen_call(module, body, x, use_running_average, **call) -> jax.Array:
  """A declared linen norm's ``__call__``: its checks, the mode, then :func:`linen_front_end`."""
  cls = type(module)
  cls.check_fields(module)
  use_running_average = merge_param(
    "use_running_average", module.use_running_average, use_running_average
  )
  return linen_front_end(module, body, x, use_running_average, cls.statistics_for(module), **call)


def linen_front_end(module, body, x, use_running_average: bool, statistics: dict, **call):
  """A linen norm's whole ``__call__`` around its pure ``body`` (one for every norm).

  Refuses input it cannot normalize (:func:`mbn_jax.functional.check_input`:
  complex or non-numeric) and a ``step`` that is not an integer scalar or
  would wrap in int32 (:func:`mbn_jax.functional.check_step`). Creates or
  reads the ``batch_stats`` named in ``statistics`` (float32
  unless ``force_float32_reductions=False``) and ``params/scale``,
  ``params/bias`` of the feature shape, runs
  ``body(module, x, stats, scale, bias, use_running_average=..., initializing=..., **call)``
  and writes the returned statistics back in training (never during ``init``). A norm
  whose capabilities say ``complex_input`` takes complex ``x``: its mean statistics
  then become complex, as ``flax.linen.BatchNorm``'s do.
  """
  x = F.check_input(x, type(module).__name__, complex_ok=capabilities_of(module).complex_input)
  if "step" in call:
    F.check_step(call["step"])
  feature_axes, _ = F.feature_and_reduction_axes(x.ndim, module.axis)
  F.check_mask(call.get("mask"), x.shape)
  feature_shape = tuple(x.shape[a] for a in feature_axes)
  stat_dtype = jnp.float32 if module.force_float32_reductions else module.param_dtype
  variables = {
    name: module.variable("batch_stats", name, lambda init=init: init(feature_shape, stat_dtype))
    for name, init in statistics.items()
  }
  learned = affine_is_learned(module)
  scale = (
    module.param("scale", module.scale_init, feature_shape, module.param_dtype)
    if module.use_scale and learned
    else None
  )
  bias = (
    module.param("bias", module.bias_init, feature_shape, module.param_dtype)
    if module.use_bias and learned
    else None
  )
  initializing = module.is_initializing()
  if capabilities_of(module).backward_statistics:
    call["probes"] = _linen_probes(module, variables, initializing)
  y, new_stats = body(
    module,
    x,
    {k: v.value for k, v in variables.items()},
    scale,
    bias,
    use_running_average=use_running_average,
    initializing=initializing,
    **call,
  )
  if not use_running_average and not initializing:
    for name, value in new_stats.items():
      variables[name].value = value
  return y


def affine_is_learned(module) -> bool:
  """Whether a layer's γ/β are ``params``: True for every norm but one whose declaration
  says otherwise with a classmethod ``affine_is_learned(cfg)`` (FrozenBN with a frozen
  affine part keeps γ/β in ``batch_stats``). ``module``: a linen norm or an nnx front end."""
  declaration = getattr(type(module), "linen", type(module))
  own = getattr(declaration, "affine_is_learned", None)
  return True if own is None else bool(own(module))


def _linen_probes(module, variables: dict, initializing: bool) -> dict:
  """The zero-valued probes of a norm's backward statistics (:mod:`mbn_jax.backward_statistics`).

  Created by ``init``; read when the caller passes the ``backward_probes``
  collection; a constant zero otherwise (a forward pass nobody differentiates
  for them, e.g. precise statistics: the backward statistics then do not move).
  """
  probes = {}
  for name in type(module).backward_statistic_names:
    stat = variables[name].value
    if initializing or module.has_variable(BACKWARD_PROBES, name):
      probes[name] = module.variable(
        BACKWARD_PROBES, name, lambda stat=stat: jnp.zeros(stat.shape, stat.dtype)
      ).value
    else:
      probes[name] = jnp.zeros(stat.shape, stat.dtype)
  return probes


# ----------------------------------------------------------------------------
# flax.nnx.

# nnx defaults that differ from the linen declaration (as flax.nnx.BatchNorm's do).
NNX_DEFAULTS = {"use_running_average": False}


def _no_promotion(args, /, *, dtype=None):
  """``promote_dtype`` of ``flax.nnx.BatchNorm`` before it had one: the arguments unchanged."""
  del dtype
  return args


def _flax_nnx_batch_norm_arguments() -> dict[str, inspect.Parameter]:
  """The arguments of the installed ``flax.nnx.BatchNorm.__init__`` after ``num_features``."""
  params = inspect.signature(nnx.BatchNorm.__init__).parameters
  return {n: p for n, p in params.items() if n not in ("self", "num_features")}


# flax.nnx.BatchNorm's arguments at the installed Flax, and those the nnx front ends
# implement themselves (they are no linen field): the dtype promotion and the
# parameters' metadata (sharding annotations), with Flax's defaults. Flax 0.12.0
# had none of them (and promoted nothing): they are accepted all the same.
FLAX_NNX_ARGUMENTS = _flax_nnx_batch_norm_arguments()
NNX_ARGUMENTS: dict[str, Any] = {
  "promote_dtype": (
    FLAX_NNX_ARGUMENTS["promote_dtype"].default
    if "promote_dtype" in FLAX_NNX_ARGUMENTS
    else _no_promotion
  ),
  "bias_metadata": MappingProxyType({}),
  "scale_metadata": MappingProxyType({}),
}


def nnx_arguments(linen_cls: type) -> dict[str, Any]:
  """``{argument: default}`` an nnx front end takes besides ``num_features``, its linen
  declaration's fields and ``rngs``: every other argument of ``flax.nnx.BatchNorm``.

  * ``promote_dtype``, ``bias_metadata``, ``scale_metadata``: as in
    ``flax.nnx.BatchNorm`` (:data:`NNX_ARGUMENTS`).
  * A Flax argument the declaration has no field of (``momentum`` for MBN and
    FrozenBN): the declaration's ``flax_arguments`` ClassVar says which field it
    sets (MBN: ``momentum`` is τ, the momentum of the inference statistics) or,
    with None, that it has no effect (FrozenBN: its statistics never move); its
    default is that field's (or None).
  * An argument of a newer ``flax.nnx.BatchNorm`` mbn_jax does not know yet:
    accepted with Flax's default; any other value is ignored with a warning.
  """
  declared = declared_fields(linen_cls)
  aliases = getattr(linen_cls, "flax_arguments", {})
  out: dict[str, Any] = {}
  for name, param in FLAX_NNX_ARGUMENTS.items():
    if name in declared or name == "rngs" or param.kind is not inspect.Parameter.KEYWORD_ONLY:
      continue
    if name in NNX_ARGUMENTS:
      out[name] = NNX_ARGUMENTS[name]
    elif name in aliases:
      out[name] = None if aliases[name] is None else declared[aliases[name]]
    else:
      out[name] = None if param.default is inspect.Parameter.empty else param.default
  for name, default in NNX_ARGUMENTS.items():  # also with a Flax that does not have them
    out.setdefault(name, default)
  return out


class NNXNorm(nnx.Module):
  """Base of every nnx front end: the fields come from the linen declaration ``linen``.

  ``Subclass(num_features, *, rngs, **fields)`` takes the dataclass fields of
  ``linen`` (same names and defaults, checked by ``linen.check_fields``) and
  every other argument of ``flax.nnx.BatchNorm`` (:func:`nnx_arguments`:
  ``promote_dtype``, ``scale_metadata``/``bias_metadata`` — given to the
  ``scale``/``bias`` variables, e.g. ``{"out_sharding": ("model",)}`` — and
  ``momentum`` where the declaration has none), creates the ``nnx.BatchStat``
  statistics that ``linen.statistics_for`` declares and the ``scale``/``bias``
  params, and ``__call__`` runs ``body`` through :func:`nnx_front_end`.
  ``model.eval()`` / ``model.train()`` (``set_view``) toggle
  ``use_running_average``.
  """

  linen: ClassVar[type]
  body: ClassVar[Callable]
  capabilities: ClassVar[Capabilities] = NO_CAPABILITIES  # set from ``linen`` per subclass

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if (
      "linen" in cls.__dict__
    ):  # a concrete front end: the declaration's signature and capabilities
      cls.capabilities = capabilities_of(cls.linen)
      fields = {**declared_fields(cls.linen), **NNX_DEFAULTS}
      keyword = inspect.Parameter.KEYWORD_ONLY
      params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("num_features", inspect.Parameter.POSITIONAL_OR_KEYWORD),
      ] + [inspect.Parameter(n, keyword, default=d) for n, d in fields.items()]
      extra = nnx_arguments(cls.linen)
      after_rngs = ("bias_metadata", "scale_metadata")  # where flax.nnx.BatchNorm has them
      params += [inspect.Parameter(n, keyword, default=d) for n, d in extra.items()]
      params = [p for p in params if p.name not in after_rngs]
      params.append(inspect.Parameter("rngs", keyword))
      params += [inspect.Parameter(n, keyword, default=extra[n]) for n in after_rngs]
      if "__init__" not in cls.__dict__:  # its own __init__, so the signature is its own

        def __init__(self, num_features, *, rngs: nnx.Rngs, **fields):
          NNXNorm.__init__(self, num_features, rngs=rngs, **fields)

        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = __init__
      cls.__init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]

  def __init__(self, num_features, *, rngs: nnx.Rngs, **fields):
    cls = type(self)
    declared = {**declared_fields(cls.linen), **NNX_DEFAULTS}
    extra = nnx_arguments(cls.linen)
    unknown = sorted(set(fields) - set(declared) - set(extra))
    if unknown:
      raise TypeError(
        f"{cls.__name__}() got unknown argument(s) {unknown}: it takes num_features, rngs, "
        f"the fields of {cls.linen.__module__}.{cls.linen.__name__}: {sorted(declared)}, "
        f"and flax.nnx.BatchNorm's {sorted(extra)}."
      )
    fields = dict(fields)
    nnx_only = {n: fields.pop(n, d) for n, d in extra.items()}
    promote = nnx_only.pop("promote_dtype")
    if not callable(promote):
      raise TypeError(
        f"promote_dtype must be a function ((x, mean, var, scale, bias), *, dtype) -> the "
        f"same tuple, as in flax.nnx.BatchNorm; got {promote!r}."
      )
    metadata = {n: dict(nnx_only.pop(f"{n}_metadata") or {}) for n in ("scale", "bias")}
    _route_flax_arguments(cls, nnx_only, fields, extra)
    values = {**declared, **fields}
    for name, value in values.items():
      setattr(self, name, value)
    self.num_features = num_features
    self.promote_dtype = promote
    cls.linen.check_fields(self)
    shape = feature_shape_of(num_features, values["axis"])
    stat_dtype = jnp.float32 if values["force_float32_reductions"] else values["param_dtype"]
    learned = affine_is_learned(self)
    for name, init in cls.linen.statistics_for(self).items():
      meta = metadata[name] if not learned and name in metadata else {}  # FrozenBN's γ/β
      setattr(self, name, nnx.BatchStat(init(shape, stat_dtype), **meta))
    if cls.capabilities.backward_statistics:
      for name in cls.linen.backward_statistic_names:
        stat = getattr(self, name)[...]
        setattr(self, probe_name(name), BackwardProbe(jnp.zeros(stat.shape, stat.dtype)))
    param_dtype = values["param_dtype"]
    if learned:
      self.scale = (
        nnx.Param(values["scale_init"](rngs.params(), shape, param_dtype), **metadata["scale"])
        if values["use_scale"]
        else None
      )
      self.bias = (
        nnx.Param(values["bias_init"](rngs.params(), shape, param_dtype), **metadata["bias"])
        if values["use_bias"]
        else None
      )
    else:  # γ/β are statistics (FrozenBN), or absent
      for name in ("scale", "bias"):
        if not hasattr(self, name):
          setattr(self, name, None)

  @property
  def probes(self) -> dict:
    """The values of this layer's :class:`~mbn_jax.backward_statistics.BackwardProbe` s."""
    if not type(self).capabilities.backward_statistics:
      return {}
    return {n: getattr(self, probe_name(n))[...] for n in type(self).linen.backward_statistic_names}

  @property
  def statistic_names(self) -> tuple[str, ...]:
    """The names of this layer's ``nnx.BatchStat`` statistics."""
    return tuple(type(self).linen.statistics_for(self))

  def set_view(self, use_running_average: bool | None = None):
    """Used by ``nnx.view``/``model.eval()``: sets ``use_running_average``."""
    if use_running_average is not None:
      self.use_running_average = use_running_average


def _route_flax_arguments(cls, given: dict, fields: dict, defaults: dict) -> None:
  """Puts the Flax arguments an nnx front end got (``given``) where they belong.

  An argument the declaration's ``flax_arguments`` maps to a field sets that
  field (unless None; given together with the field itself they must agree); one
  mapped to None is accepted without effect; one mbn_jax does not know (a
  newer Flax's) warns when it is not Flax's default.
  """
  aliases = getattr(cls.linen, "flax_arguments", {})
  for name, value in given.items():
    if name in aliases:
      target = aliases[name]
      if target is None or value is None:
        continue
      if target in fields and fields[target] != value:
        raise ValueError(
          f"{cls.__name__} got {name}={value!r} and {target}={fields[target]!r}: {name} "
          f"(flax.nnx.BatchNorm's name) is {target} here; pass one."
        )
      fields[target] = value
    elif value is not defaults[name] and value != defaults[name]:
      warnings.warn(
        f"{cls.__name__} ignores {name}={value!r}: flax.nnx.BatchNorm's argument {name!r} "
        "is newer than this mbn_jax and has no effect here.",
        UserWarning,
        stacklevel=4,
      )


def promote_like_nnx(module, x, stats: dict, scale, bias, use_running_average: bool):
  """``flax.nnx.BatchNorm``'s dtype promotion, before a body runs.

  ``module.promote_dtype((x, mean, var, scale, bias), dtype=module.dtype)`` with
  the declaration's inference statistics (``inference_statistics``: ``("mean",
  "var")`` unless it says otherwise; MABN's ``(None, "running_var")``) and γ/β
  (params, or FrozenBN's fixed statistics). The body gets the promoted ``x`` and
  γ/β, and the promoted mean/var where it normalizes with them (inference);
  moving averages are updated from the stored statistics (as nnx.BatchNorm does).
  Returns ``(x, stats, scale, bias)``.
  """
  promote = getattr(module, "promote_dtype", None)
  if promote is None:
    return x, stats, scale, bias
  mean_name, var_name = getattr(type(module).linen, "inference_statistics", ("mean", "var"))
  learned = affine_is_learned(module)
  affine = (scale, bias) if learned else (stats.get("scale"), stats.get("bias"))
  pick = lambda name: stats.get(name) if name is not None else None
  x, mean, var, new_scale, new_bias = promote(
    (x, pick(mean_name), pick(var_name), *affine), dtype=module.dtype
  )
  promoted = {mean_name: mean, var_name: var}
  if not learned:
    promoted.update(scale=new_scale, bias=new_bias)
  else:
    scale, bias = new_scale, new_bias
  if use_running_average:
    stats = {**stats, **{n: v for n, v in promoted.items() if n in stats and v is not None}}
  return x, stats, scale, bias


def _write_statistic(variable, value) -> None:
  """``variable[...] = value``, or its value replaced when the dtype changes (a complex
  input's mean: ``flax.linen.BatchNorm`` keeps it complex, where ``flax.nnx.BatchNorm``
  would silently drop its imaginary part)."""
  if jnp.result_type(value) == variable[...].dtype:
    variable[...] = value
  elif hasattr(variable, "set_value"):
    variable.set_value(value)
  else:  # Flax before set_value
    variable.value = value


def nnx_front_end(module: Any, x, use_running_average, **call) -> jax.Array:
  """An nnx norm's whole ``__call__`` around its pure ``body`` (the linen layer's body).

  Checks ``x`` and ``step`` as :func:`linen_front_end` does, reads the
  ``nnx.BatchStat`` statistics and the params, applies ``module.promote_dtype``
  as ``flax.nnx.BatchNorm`` does (:func:`promote_like_nnx`), runs
  ``body(module, x, stats, scale, bias, use_running_average=..., **call)`` and
  writes the statistics back in training.
  """
  layer = type(module).__name__
  value = module.use_running_average if use_running_average is None else use_running_average
  if value is None:
    raise ValueError(
      f"{layer} needs use_running_average: pass it to the constructor or to __call__ "
      "(True for inference, False for training)."
    )
  x = F.check_input(x, layer, complex_ok=type(module).capabilities.complex_input)
  if "step" in call:
    F.check_step(call["step"])
  names = module.statistic_names
  axis = module.axis  # a field of every declaration (set in NNXNorm.__init__)
  feature_axes, _ = F.feature_and_reduction_axes(x.ndim, axis)
  feature_shape = getattr(module, names[0])[...].shape
  got = tuple(x.shape[a] for a in feature_axes)
  if got != tuple(feature_shape):
    raise ValueError(
      f"{layer}(num_features={feature_shape if len(feature_shape) > 1 else feature_shape[0]}) "
      f"got an input with {got} features along axis={axis}: set num_features to the "
      "input's feature size or fix axis."
    )
  F.check_mask(call.get("mask"), x.shape)
  stats = {name: getattr(module, name)[...] for name in names}
  learned = affine_is_learned(module)
  scale = module.scale[...] if learned and module.scale is not None else None
  bias = module.bias[...] if learned and module.bias is not None else None
  x, stats, scale, bias = promote_like_nnx(module, x, stats, scale, bias, value)
  if type(module).capabilities.backward_statistics:
    call["probes"] = module.probes
  y, new_stats = type(module).body(module, x, stats, scale, bias, use_running_average=value, **call)
  if not value:
    for name, new in new_stats.items():
      _write_statistic(getattr(module, name), new)
  return y
