"""The comparison set of the paper: "the same model, another norm", one file per norm.

===============  ================================  ===================================  ================================
name             linen class                       nnx class                            file
===============  ================================  ===================================  ================================
``'bn'``         :class:`BatchNorm`                :class:`BatchNormNNX`                ``batch_norm.py``
``'mbn'``        :class:`MomentumBatchNorm`        :class:`MomentumBatchNormNNX`        ``momentum_batch_norm.py``
``'brn'``        :class:`BatchRenorm`              :class:`BatchRenormNNX`              ``batch_renorm.py``
``'gn'``         :class:`GroupNorm`                ``flax.nnx.GroupNorm``               ``group_norm.py``
``'ln'``         :class:`LayerNorm`                ``flax.nnx.LayerNorm``               ``layer_norm.py``
``'in'``         :class:`InstanceNorm`             ``flax.nnx.InstanceNorm``            ``instance_norm.py``
``'mabn'``       :class:`MovingAverageBatchNorm`   :class:`MovingAverageBatchNormNNX`   ``moving_average_batch_norm.py``
``'frozen_bn'``  :class:`FrozenBatchNorm`          :class:`FrozenBatchNormNNX`          ``frozen_batch_norm.py``
``'none'``       :class:`Identity`                 —                                    ``identity.py``
===============  ================================  ===================================  ================================

:func:`make_norm` builds any of them by name; every module it builds is
called the same way, ``module(x, use_running_average, *, step=None)``, so a
model never branches on the norm's name. Each class declares what it can do
(:class:`Capabilities`, read with :func:`capabilities_of`), and every tool
— precise statistics, the statistics capture, the training program — asks
that, never a name. The shared pieces (moments, exact pooling, moving
averages, checks) are :mod:`mbn_jax.functional`; the front ends and the
declaration machinery are :mod:`mbn_jax.norms.base`.

**Adding a norm** touches its own file (body, linen declaration with
``capabilities``, ``statistics_for`` and ``check_fields``, and an
:class:`~mbn_jax.norms.base.NNXNorm` front end), one line of
:data:`NORM_CLASSES` here (or :func:`register_norm` from your own code), and
its tests. A norm with statistics of its *backward* pass (MABN) needs nothing
more: it declares ``Capabilities(backward_statistics=True)`` and the names in
``backward_statistic_names``, its body takes ``probes``, and the front ends
create and pass the probes (:mod:`mbn_jax.backward_statistics`); the
training step and the tools fold them by that capability.

Momentum convention (as everywhere in mbn_jax and in ``flax.linen.BatchNorm``):
a momentum weights the *old* value, ``running <- momentum * running +
(1 - momentum) * batch``. PyTorch's ``momentum=p`` is ``1 - p`` here.
"""

from __future__ import annotations

import types
from collections.abc import Callable

from flax import linen as nn

from mbn_jax.norms.base import (
  Capabilities,
  NNXNorm,
  capabilities_of,
  declared_fields,
  register_capabilities,
)
from mbn_jax.norms.batch_norm import BatchNorm, BatchNormNNX
from mbn_jax.norms.batch_renorm import (
  BRN_MINI_IMAGENET_OPTIONS,
  BatchRenorm,
  BatchRenormNNX,
  renorm_correction,
  renorm_limits,
)
from mbn_jax.norms.frozen_batch_norm import FrozenBatchNorm, FrozenBatchNormNNX
from mbn_jax.norms.group_norm import GroupNorm, group_count
from mbn_jax.norms.identity import Identity
from mbn_jax.norms.instance_norm import InstanceNorm
from mbn_jax.norms.layer_norm import LayerNorm
from mbn_jax.norms.momentum_batch_norm import MomentumBatchNorm, MomentumBatchNormNNX
from mbn_jax.norms.moving_average_batch_norm import (
  MovingAverageBatchNorm,
  MovingAverageBatchNormNNX,
)

__all__ = [
  "BRN_MINI_IMAGENET_OPTIONS",
  "BatchNorm",
  "BatchNormNNX",
  "BatchRenorm",
  "BatchRenormNNX",
  "Capabilities",
  "FrozenBatchNorm",
  "FrozenBatchNormNNX",
  "GroupNorm",
  "Identity",
  "InstanceNorm",
  "LayerNorm",
  "MomentumBatchNorm",
  "MomentumBatchNormNNX",
  "MovingAverageBatchNorm",
  "MovingAverageBatchNormNNX",
  "NNXNorm",
  "NORM_CLASSES",
  "NORM_NAMES",
  "NORM_OPTIONS",
  "capabilities_of",
  "group_count",
  "make_norm",
  "norm_class",
  "option_aliases",
  "register_capabilities",
  "register_norm",
  "renorm_correction",
  "renorm_limits",
]

# name -> linen class: the factory's table (add a line for a new norm of the package).
NORM_CLASSES: dict[str, type[nn.Module]] = {
  "bn": BatchNorm,
  "mbn": MomentumBatchNorm,
  "brn": BatchRenorm,
  "gn": GroupNorm,
  "ln": LayerNorm,
  "in": InstanceNorm,
  "mabn": MovingAverageBatchNorm,
  "frozen_bn": FrozenBatchNorm,
  "none": Identity,
}
NORM_NAMES = tuple(NORM_CLASSES)

# make_norm's defaults where they differ from the classes' (PyTorch's BN
# momentum 0.1, the paper's framework, is 0.9 in Flax's convention).
_FACTORY_DEFAULTS: dict[str, dict] = {"bn": {"momentum": 0.9}, "brn": {"momentum": 0.9}}

# The options make_norm takes (every norm accepts all and ignores those it does
# not use). Each routes to the module field of the same name where the norm's
# class has one, or to the field its class's ``option_aliases`` names
# (``bn_momentum`` → bn's and brn's ``momentum``, ``mabn_momentum`` → mabn's).
NORM_OPTIONS = (
  "accumulation_steps",
  "axis_name",
  "axis_index_groups",
  "batch_size",
  "bn_momentum",
  "buffer_size",
  "d_max",
  "dtype",
  "epsilon",
  "guard_nonfinite",
  "ideal_batch_size",
  "mabn_momentum",
  "momentum",
  "momentum_schedule",
  "num_groups",
  "param_dtype",
  "r_clip",
  "r_clip_start",
  "r_max",
  "steps_per_epoch",
  "tau0",
  "total_epochs",
  "train_affine",
  "warmup_iters",
  "warmup_steps",
)
_SYNC_OPTIONS = ("axis_name", "axis_index_groups")


def register_norm(name: str, cls: type[nn.Module], *, defaults: dict | None = None) -> None:
  """Makes ``make_norm(name)`` build ``cls`` (a norm defined outside this package).

  ``cls`` is a linen module called as ``cls(...)(x, use_running_average, *,
  step=None)``; declare its :class:`Capabilities` as a class attribute
  ``capabilities`` so that the tools know what it can do. ``defaults``:
  field values make_norm uses unless the caller gives them.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"register_norm: name must be a non-empty str, got {name!r}.")
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise TypeError(f"register_norm: cls must be a flax.linen.Module class, got {cls!r}.")
  NORM_CLASSES[name.lower()] = cls
  _FACTORY_DEFAULTS[name.lower()] = dict(defaults or {})


def norm_class(name: str) -> type[nn.Module]:
  """The linen class ``make_norm(name)`` builds; a ValueError listing the names otherwise."""
  if not isinstance(name, str) or name.lower() not in NORM_CLASSES:
    raise ValueError(
      f"Unknown norm name {name!r}: make_norm(name=...) takes one of "
      f"{', '.join(repr(n) for n in NORM_CLASSES)}."
    )
  return NORM_CLASSES[name.lower()]


def option_aliases(cls) -> dict[str, str]:
  """``{option: field}``: options of :data:`NORM_OPTIONS` that set a field of another name.

  A class declares them as ``option_aliases`` (BN, BReN: ``bn_momentum`` →
  ``momentum``; MABN: ``mabn_momentum`` → ``momentum``), so one options dict
  sets each norm's own ``momentum`` without the caller asking which norm it is.
  """
  return dict(getattr(cls, "option_aliases", {}))


def _resolve_aliases(cls, options: dict) -> dict:
  options = dict(options)
  for alias, field in option_aliases(cls).items():
    if alias not in options:
      continue
    value = options.pop(alias)
    if field in options and options[field] != value:
      raise ValueError(
        f"make_norm got {field}={options[field]!r} and {alias}={value!r}: for "
        f"{cls.__name__} they are the same option; pass one."
      )
    options[field] = value
  return options


def _routes(cls) -> tuple[str, ...]:
  """The options a norm class takes: those that name one of its fields."""
  fields = declared_fields(cls) if hasattr(cls, "__dataclass_fields__") else {}
  sync = capabilities_of(cls).synchronizes
  return tuple(o for o in NORM_OPTIONS if o in fields and (sync or o not in _SYNC_OPTIONS))


def make_norm(name: str, **options) -> Callable[..., nn.Module]:
  """A factory of normalization layers, picked by name.

  Args:
    name: one of ``'bn'`` (:class:`BatchNorm`: ``flax.linen.BatchNorm``'s
      fields and arithmetic), ``'mbn'`` (:class:`mbn_jax.MomentumBatchNorm`),
      ``'brn'`` (:class:`BatchRenorm`), ``'gn'`` (:class:`GroupNorm`, 32
      groups, see :func:`group_count`), ``'ln'`` (:class:`LayerNorm`),
      ``'in'`` (:class:`InstanceNorm`), ``'mabn'``
      (:class:`MovingAverageBatchNorm`), ``'frozen_bn'``
      (:class:`FrozenBatchNorm`), ``'none'`` (:class:`Identity`), or a
      name given to :func:`register_norm`.
    **options: any of :data:`NORM_OPTIONS` — ``axis_name``,
      ``axis_index_groups`` (norms that synchronize), ``dtype``,
      ``param_dtype``, ``epsilon``, ``momentum`` / its alias ``bn_momentum``
      (bn, brn; default 0.9, weight on the OLD value), ``total_epochs``,
      ``steps_per_epoch``, ``ideal_batch_size``, ``tau0``, ``batch_size``,
      ``momentum_schedule`` (mbn), ``r_max``, ``d_max``, ``warmup_steps``
      (brn), ``num_groups`` (gn), ``buffer_size``, ``warmup_iters``,
      ``r_clip``, ``r_clip_start``, ``mabn_momentum`` (mabn; default 0.98),
      ``train_affine``
      (frozen_bn), ``accumulation_steps`` (bn, mbn: k > 1
      defers the inference statistics to once per k micro-batches, gradient
      accumulation). **Every norm accepts every option and ignores those it
      does not use**, so a training program can always pass one dict; an
      option set to None means "the default". An unknown option name is an
      error (it catches typos), and so is a bad value (checked here, by the
      class's own ``check_fields``).

  Returns:
    ``norm_factory(name=None, **kwargs) -> flax.linen.Module``; ``kwargs``
    are module fields that override the options (ignored for ``'none'``).
    Every module is called as ``module(x, use_running_average, *, step=None)``;
    layers that do not use ``step`` or ``use_running_average`` ignore them.

  Raises:
    ValueError: unknown ``name`` (lists the valid names), unknown option
      names, conflicting ``momentum``/``bn_momentum``, or a value the norm
      refuses.
  """
  cls = norm_class(name)
  name = name.lower()
  unknown = sorted(set(options) - set(NORM_OPTIONS))
  if unknown:
    raise ValueError(
      f"make_norm got unknown option(s) {unknown}; valid options (every norm "
      f"accepts all and ignores those it does not use): {list(NORM_OPTIONS)}."
    )
  options = {k: v for k, v in options.items() if v is not None}
  options = _resolve_aliases(cls, options)
  fields = dict(_FACTORY_DEFAULTS.get(name, {}))
  fields.update({opt: options[opt] for opt in _routes(cls) if opt in options})
  check = getattr(cls, "check_fields", None)
  if check is not None:  # bad values fail here, not at the first call
    check(types.SimpleNamespace(**{**declared_fields(cls), **fields}))

  def norm_factory(name: str | None = None, **kwargs) -> nn.Module:
    if cls is Identity:
      return Identity(name=name)
    return cls(name=name, **{**fields, **kwargs})

  return norm_factory
