"""The training program's models: lookup, two tiny networks, and the configured network of a run.

The paper's networks come from ``mbn_jax.models.create_model``; this module
adds two tiny networks for 8x8-16x16 inputs (the quickstart and the tests).
Every model takes its normalization layers from ``mbn_jax.norms.make_norm``
and is called as ``model.apply(variables, x, train=..., step=...,
mutable=['batch_stats'])``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from mbn_jax import models as paper_models
from mbn_jax import norms
from train import config_schema

TINY_MODELS = ("tiny_cnn", "mlp")


def norm_names() -> tuple[str, ...]:
  """Every name ``make_norm`` takes now (the package's and any :func:`register_norm`-ed)."""
  return tuple(norms.NORM_CLASSES)


def model_names() -> tuple[str, ...]:
  return TINY_MODELS + tuple(paper_models.MODEL_NAMES)


class TinyCNN(nn.Module):
  """conv3x3(16)-norm-relu, conv3x3(32, stride 2)-norm-relu, mean pool, dense."""

  num_classes: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None  # None: jax.lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool = False, step=None):
    x = x.astype(self.dtype)
    for i, (features, stride) in enumerate(((16, 1), (32, 2))):
      x = nn.Conv(
        features,
        (3, 3),
        strides=stride,
        use_bias=False,
        dtype=self.dtype,
        conv_general_dilated=self.conv_general_dilated,
        name=f"conv{i}",
      )(x)
      x = self.norm(name=f"norm{i}")(x, not train, step=step)
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


class MLP(nn.Module):
  """flatten, dense(64)-norm-relu, dense."""

  num_classes: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, step=None):
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    x = nn.Dense(64, use_bias=False, dtype=self.dtype, name="dense0")(x)
    x = nn.relu(self.norm(name="norm0")(x, not train, step=step))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def create_model(
  name: str,
  *,
  num_classes: int,
  norm: str,
  input_variant: str = "cifar",
  dtype=jnp.float32,
  conv_general_dilated: Callable | None = None,
  **norm_options,
) -> nn.Module:
  """``mbn_jax.models.create_model`` plus the tiny models above.

  ``conv_general_dilated`` is the convolution of every conv layer (None:
  XLA's); the MLP has none and ignores it.
  """
  if name in TINY_MODELS:
    norm_factory = norms.make_norm(norm, dtype=dtype, **norm_options)
    if name == "tiny_cnn":
      return TinyCNN(
        num_classes=num_classes,
        norm=norm_factory,
        dtype=dtype,
        conv_general_dilated=conv_general_dilated,
      )
    return MLP(num_classes=num_classes, norm=norm_factory, dtype=dtype)
  return paper_models.create_model(
    name,
    num_classes=num_classes,
    norm=norm,
    input_variant=input_variant,
    dtype=dtype,
    conv_general_dilated=conv_general_dilated,
    **norm_options,
  )


# ----------------------------------------------------------------------------
# The configured network of a run.

DTYPES = {name: getattr(jnp, name) for name in config_schema.choices("dtype")}
CONVS = config_schema.choices("conv")


def conv_function(conv: str, per_device_batch: int):
  """``config.conv`` → the convolution of every conv layer (None: XLA's).

  ``'auto'``: :func:`train.cpu_conv.auto_conv` — the fast path on CPU
  (chunked weight gradients, matmul convs for tiny layers), XLA's conv on
  GPU/TPU; ``'xla'``: always XLA's; ``'fast'``: the fast path on any backend.
  """
  from train import cpu_conv

  if conv == "xla":
    return None
  if conv == "fast":
    return cpu_conv.conv_general_dilated
  if conv == "auto":
    return cpu_conv.auto_conv(per_device_batch)
  raise ValueError(f"config.conv must be one of {CONVS}, got {conv!r}.")


def accumulation_steps_of(config) -> int:
  """The norms' ``accumulation_steps``: k with deferred statistics, else 1 (sequential)."""
  k = config.grad_accum_steps
  return k if config.grad_accum_stats == "deferred" else 1


def norm_options_of(config, per_device_batch: int | None = None) -> dict:
  """``make_norm`` option → the config's value, for every field the schema marks ``norm_option``.

  A field marked ``derived_when_zero`` whose value is 0 is derived from the
  run: MABN's ``buffer_size`` K = m0/m (the reference's ``real_B // B`` with
  m0 = ``ideal_batch_size`` and m = ``per_device_batch``, at least 1); with
  ``per_device_batch`` None (only checking the options) it is None, the
  norm's default.
  """
  options = {}
  for option, spec in config_schema.norm_option_fields().items():
    value = config[spec.name]
    if spec.derived_when_zero and value == 0:
      value = None if per_device_batch is None else _derived(option, config, per_device_batch)
    options[option] = value
  return options


def _derived(option: str, config, per_device_batch: int):
  if option == "buffer_size":
    return max(1, config.ideal_batch_size // per_device_batch)
  raise NotImplementedError(f"no derivation of norm option {option!r} from 0")


def momentum_schedule_of(config, statistics_batch_size: int, steps_per_epoch: int):
  """MBN's λ(t) (Eq. 11) of a run: m = the statistics batch m·G, T = ``mbn_total_epochs``,
  optimizer ``steps_per_epoch``, m0 = ``ideal_batch_size``.

  Built once per run and shared by the norms (``make_norm(momentum_schedule=...)``),
  the logged λ and :mod:`tools.finished_run`.
  """
  from mbn_jax import schedules

  return schedules.momentum_schedule(
    batch_size=statistics_batch_size,
    total_epochs=config.mbn_total_epochs,
    steps_per_epoch=steps_per_epoch,
    ideal_batch_size=config.ideal_batch_size,
    ramp=config.mbn_lambda_ramp,
  )


def build_model(
  config,
  *,
  num_classes: int,
  steps_per_epoch: int,
  per_device_batch: int | None = None,
  momentum_schedule=None,
  sync: dict | None = None,
):
  """The configured network, its norms built from the config's norm options.

  ``steps_per_epoch`` counts optimizer steps (what the norms' ``step`` counts);
  ``momentum_schedule`` (:func:`momentum_schedule_of`) is MBN's λ(t); ``sync``
  the norms' ``axis_name``/``axis_index_groups`` (from
  :meth:`train.parallel.Parallel.norm_options`; None: per-device statistics).
  The model's dtype reaches its norms through ``create_model(dtype=...)``; its
  convolutions are ``config.conv``'s (:func:`conv_function` for
  ``per_device_batch``, default ``config.per_device_batch_size``), centred
  per output channel with ``config.centered_weights``
  (:func:`mbn_jax.models.centered_conv`; the MLP has no convolution).
  """
  norm_options = dict(
    **norm_options_of(config, per_device_batch or config.per_device_batch_size),
    **(sync or {}),
    accumulation_steps=accumulation_steps_of(config),
    steps_per_epoch=steps_per_epoch,
    momentum_schedule=momentum_schedule,
  )
  conv = conv_function(config.conv, per_device_batch or config.per_device_batch_size)
  if config.centered_weights:
    conv = paper_models.centered_conv(conv)
  return create_model(
    config.model,
    num_classes=num_classes,
    norm=config.norm,
    input_variant=config.input_variant,
    dtype=DTYPES[config.dtype],
    conv_general_dilated=conv,
    **norm_options,
  )
