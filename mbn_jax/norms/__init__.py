"""The comparison set of the paper: "the same model, another norm", one file per norm.

==========  ==========================  =============================  ==========================
name        linen class                 nnx class                      file
==========  ==========================  =============================  ==========================
``'bn'``    :class:`BatchNorm`          :class:`BatchNormNNX`          ``batch_norm.py``
``'mbn'``   :class:`MomentumBatchNorm`  :class:`MomentumBatchNormNNX`  ``momentum_batch_norm.py``
``'brn'``   :class:`BatchRenorm`        :class:`BatchRenormNNX`        ``batch_renorm.py``
``'gn'``    :class:`GroupNorm`          ``flax.nnx.GroupNorm``         ``group_norm.py``
``'ln'``    :class:`LayerNorm`          ``flax.nnx.LayerNorm``         ``layer_norm.py``
``'in'``    :class:`InstanceNorm`       ``flax.nnx.InstanceNorm``      ``instance_norm.py``
``'none'``  :class:`Identity`           —                              ``identity.py``
==========  ==========================  =============================  ==========================

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
its tests.

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
from mbn_jax.norms.group_norm import GroupNorm, group_count
from mbn_jax.norms.identity import Identity
from mbn_jax.norms.instance_norm import InstanceNorm
from mbn_jax.norms.layer_norm import LayerNorm
from mbn_jax.norms.momentum_batch_norm import MomentumBatchNorm, MomentumBatchNormNNX

__all__ = [
  "BRN_MINI_IMAGENET_OPTIONS",
  "BatchNorm",
  "BatchNormNNX",
  "BatchRenorm",
  "BatchRenormNNX",
  "Capabilities",
  "GroupNorm",
  "Identity",
  "InstanceNorm",
  "LayerNorm",
  "MomentumBatchNorm",
  "MomentumBatchNormNNX",
  "NNXNorm",
  "NORM_CLASSES",
  "NORM_NAMES",
  "NORM_OPTIONS",
  "capabilities_of",
  "group_count",
  "make_norm",
  "norm_class",
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
  "none": Identity,
}
NORM_NAMES = tuple(NORM_CLASSES)

# make_norm's defaults where they differ from the classes' (PyTorch's BN
# momentum 0.1, the paper's framework, is 0.9 in Flax's convention).
_FACTORY_DEFAULTS: dict[str, dict] = {"bn": {"momentum": 0.9}, "brn": {"momentum": 0.9}}

# The options make_norm takes (every norm accepts all and ignores those it does
# not use). Each routes to the module field of the same name where the norm's
# class has one; ``bn_momentum`` is an alias of ``momentum`` (bn and brn).
NORM_OPTIONS = (
  "accumulation_steps",
  "axis_name",
  "axis_index_groups",
  "batch_size",
  "bn_momentum",
  "d_max",
  "dtype",
  "epsilon",
  "guard_nonfinite",
  "ideal_batch_size",
  "momentum",
  "momentum_schedule",
  "num_groups",
  "param_dtype",
  "r_max",
  "steps_per_epoch",
  "tau0",
  "total_epochs",
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
      ``'in'`` (:class:`InstanceNorm`), ``'none'`` (:class:`Identity`), or a
      name given to :func:`register_norm`.
    **options: any of :data:`NORM_OPTIONS` — ``axis_name``,
      ``axis_index_groups`` (norms that synchronize), ``dtype``,
      ``param_dtype``, ``epsilon``, ``momentum`` / its alias ``bn_momentum``
      (bn, brn; default 0.9, weight on the OLD value), ``total_epochs``,
      ``steps_per_epoch``, ``ideal_batch_size``, ``tau0``, ``batch_size``,
      ``momentum_schedule`` (mbn), ``r_max``, ``d_max``, ``warmup_steps``
      (brn), ``num_groups`` (gn), ``accumulation_steps`` (bn, mbn: k > 1
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
  if "bn_momentum" in options:
    alias = options.pop("bn_momentum")
    if "momentum" in options and options["momentum"] != alias:
      raise ValueError(
        f"make_norm got momentum={options['momentum']!r} and bn_momentum="
        f"{alias!r}: they are the same option; pass one."
      )
    options["momentum"] = alias
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
