"""Config checks before anything is read or compiled, and the resume guard.

``validate_config`` checks names, sizes, ranges and the device split and
returns the batch layout; ``check_resume_compatible`` refuses to resume a
workdir whose saved config differs in a field that changes the run.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Protocol

import jax
import ml_collections

from mbn_jax import norms as mbn_norms
from train import checks, config_schema, input_pipeline, models
from train.layout import RunLayout

__all__ = [
  "Config",
  "RESUME_MAY_CHANGE",
  "ConfigMismatchError",
  "check_resume_compatible",
  "check_complete",
  "config_json",
  "load_saved_config",
  "validate_config",
]


class Config(Protocol):
  """A run's config (an ``ml_collections.ConfigDict``) as the type checker reads it.

  ml_collections ships no annotations, and pyright infers ``ConfigDict.__getattr__``
  as the union of every type a field can hold (``str | int | float | list | tuple |
  None``), wrong for any one field; a field read through this is ``Any``.
  """

  def __getattr__(self, name: str, /) -> Any: ...


# Config fields a resumed run may change: those train.config_schema marks resume=True.
RESUME_MAY_CHANGE = config_schema.resume_may_change()


class ConfigMismatchError(ValueError):
  """The workdir holds a run whose config differs in a field that matters."""


def _check_writable(directory: str, workdir: str) -> None:
  """Raises PermissionError naming --workdir when ``directory`` does not take a new file."""
  if not os.path.isdir(directory):
    return  # a missing parent is reported below
  try:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".mbn_jax_write_check_"):
      pass
  except OSError as e:
    raise PermissionError(
      f"--workdir={workdir!r}: cannot write in {directory!r} ({e.strerror}); "
      "pick a writable directory."
    ) from None


def resolve_norm_sync_devices(config, devices: int, *, note: bool = False) -> int:
  """G, the devices that share one set of batch statistics, from ``config.norm_sync_devices``.

  -1 means every device (SyncBN); G must divide ``devices`` (its type and range are the
  schema's). The replaced field ``sync_batch_stats`` is still read: True is G = every
  device, False is G = 1 (``note``: say so).
  """
  g = config.norm_sync_devices
  old = config.get("sync_batch_stats")
  if old is not None:
    if g not in (1, -1):
      raise ValueError(
        f"config.sync_batch_stats={old} and config.norm_sync_devices={g} both set the "
        "statistics groups; norm_sync_devices replaces sync_batch_stats: drop sync_batch_stats."
      )
    g = -1 if old else 1
    if note and jax.process_index() == 0:
      print(
        f"note: config.sync_batch_stats={old} is read as norm_sync_devices={g} "
        f"({'every device' if old else 'per device'}); sync_batch_stats is replaced by "
        "norm_sync_devices.",
        flush=True,
      )
  g = devices if g == -1 else g
  if devices % g:
    raise ValueError(
      f"config.norm_sync_devices={g} does not divide the {devices} device(s): statistics groups "
      f"must split the devices evenly (use a divisor of {devices}, 1 or -1 for all)."
    )
  return g


def check_complete(config) -> None:
  """Raises a ValueError naming the schema's fields that ``config`` lacks."""
  missing = sorted({f.name for f in config_schema.fields()} - set(_flatten(config_json(config))))
  if missing:
    raise ValueError(
      f"the config lacks field(s) {', '.join(missing)}: build it from "
      "configs.default.get_config() (every field's default is declared in "
      "train/config_schema.py) and change what differs."
    )


def load_saved_config(saved: dict) -> Config:
  """A run record's config (``config.json``) with the fields it lacks at their defaults.

  A run saved before a field existed ran with its default behaviour, which
  the schema declares; the result has every field of today's program.
  """

  def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
      out[key] = merge(base[key], value) if isinstance(base.get(key), dict) else value
    return out

  return ml_collections.ConfigDict(merge(config_schema.default_config().to_dict(), saved))


def validate_config(config, workdir: str | None = None) -> RunLayout:
  """Checks names, sizes and the device split; returns the batch layout (:class:`RunLayout`).

  Everything here looks only at the config, the workdir and the device count:
  a mistake is reported before any data is read or anything is compiled.
  """
  check_complete(config)
  if workdir is not None:
    _check_workdir(workdir)
  norms = _norms(config)
  if workdir is not None:  # what an earlier run left there (one workdir per norm when comparing)
    for run_dir in [os.path.join(workdir, n) for n in norms] if config.norms else [workdir]:
      checks.check_workdir_files(run_dir)
  checks.check_norm_options(config, norms + [config.norm])  # each norm's own check_fields
  config_schema.check(config)  # every field's type and range, as declared
  _check_model(config)
  _check_accumulation(config, norms)
  input_pipeline.validate_dataset_config(config.dataset)
  devices = jax.device_count()
  m = _per_device_batch(config, devices)
  g = resolve_norm_sync_devices(config, devices, note=True)
  _check_sync_capable(norms + [config.norm], g)
  return RunLayout(
    per_device_batch_size=m,
    devices=devices,
    norm_sync_devices=g,
    grad_accum_steps=config.grad_accum_steps,
    local_devices=jax.local_device_count(),
    process_count=jax.process_count(),
    process_index=jax.process_index(),
    norms=tuple(norms),
  )


def _check_sync_capable(norms: list[str], group: int) -> None:
  """Statistics groups (G > 1) need norms that synchronize: refuse the batch-statistics norms that
  cannot (MABN, FrozenBN), rather than silently training them per device."""
  if group <= 1:
    return
  for name in dict.fromkeys(norms):
    caps = mbn_norms.capabilities_of(mbn_norms.norm_class(name))
    if caps.running_statistics and not caps.synchronizes:
      raise ValueError(
        f"config.norm_sync_devices={group} shares statistics over {group} devices, but norm "
        f"{name!r} never synchronizes its statistics (its capabilities: synchronizes=False). "
        "Use --config.norm_sync_devices=1 for it."
      )


def _check_workdir(workdir: str) -> None:
  """--workdir is a writable directory, or can be made in an existing one."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise NotADirectoryError(
      f"--workdir={workdir!r} is a file, not a directory: pick a "
      "directory (new or one of an earlier run)."
    )
  _check_writable(path if os.path.isdir(path) else os.path.dirname(path), workdir)
  parent = os.path.dirname(os.path.abspath(os.path.expanduser(workdir)))
  if not os.path.isdir(parent):
    raise FileNotFoundError(
      f"The parent directory of --workdir={workdir!r} does not exist ({parent!r}). "
      "Create it first (mkdir -p), or pick another workdir."
    )


def _norms(config) -> list[str]:
  """The norms this command trains (``config.norms`` or ``config.norm``), each a known name."""
  if config.norms:
    norms = [n.strip() for n in config.norms.split(",") if n.strip()]
    if not norms:
      raise ValueError(f"config.norms={config.norms!r} names no norm.")
  else:
    norms = [config.norm]
  valid_norms = models.norm_names()
  for n in norms + [config.norm]:
    if n not in valid_norms:
      raise ValueError(f"Unknown norm {n!r}: choose one of {', '.join(valid_norms)}.")
  return norms


def _check_model(config) -> None:
  """The model is one the program knows (the registry's names; the schema checks the rest)."""
  valid_models = models.model_names()
  if config.model not in valid_models:
    raise ValueError(f"Unknown model {config.model!r}: choose one of {', '.join(valid_models)}.")


def _check_accumulation(config, norms: list[str]) -> None:
  """Deferred statistics only for norms that can defer them."""
  if config.grad_accum_stats == "deferred" and config.grad_accum_steps > 1:
    for n in norms + [config.norm]:
      caps = mbn_norms.capabilities_of(mbn_norms.norm_class(n))
      if caps.running_statistics and not caps.deferred_accumulation:
        able = [
          name
          for name, cls in mbn_norms.NORM_CLASSES.items()
          if mbn_norms.capabilities_of(cls).running_statistics
          and mbn_norms.capabilities_of(cls).deferred_accumulation
        ]
        raise ValueError(
          f"config.grad_accum_stats='deferred' is not defined for norm {n!r} (its "
          "capabilities: deferred_accumulation=False; e.g. Batch Renormalization normalizes "
          "with its running statistics, so deferring them would change training itself). "
          f"Use grad_accum_stats='sequential' (or a norm that defers: {', '.join(able)})."
        )


def _per_device_batch(config, devices: int) -> int:
  """m: ``per_device_batch_size``, or ``global_batch_size`` / devices; checks required_devices."""
  required = config.required_devices
  if required and devices != required:
    raise ValueError(
      f"config.required_devices={required}, but JAX sees {devices} device(s). Run on "
      f"{required} devices (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count="
      f"{required}), or set --config.required_devices=0 to accept any count."
    )
  m = config.per_device_batch_size
  if config.global_batch_size != -1:
    g = config.global_batch_size
    if g % devices:
      raise ValueError(
        f"config.global_batch_size={g} is not divisible among the {devices} devices; "
        f"use a multiple of {devices}, or set per_device_batch_size instead."
      )
    m = g // devices
  return m


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def config_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def _with_sync_groups(flat: dict) -> dict:
  """The replaced ``sync_batch_stats`` read as ``norm_sync_devices`` (True: -1, all devices)."""
  out = dict(flat)
  old = out.pop("sync_batch_stats", None)
  if old is not None and out.get("norm_sync_devices") in (None, 1, -1):  # absent, or no groups
    out["norm_sync_devices"] = -1 if old else 1
  return out


def check_resume_compatible(saved: dict, config) -> None:
  """Raises ConfigMismatchError if a field the schema does not mark ``resume=True`` differs.

  A field that the saved config lacks (added to the program after the run
  started) is compatible when it has its default value (the schema's):
  the run started without it, i.e. with the default behaviour.
  """
  a, b = _with_sync_groups(_flatten(saved)), _with_sync_groups(_flatten(config_json(config)))
  defaults = _flatten(config_json(config_schema.default_config()))
  bad = []
  for key in sorted(set(a) | set(b)):
    if key in RESUME_MAY_CHANGE:
      continue
    if key not in a and key in defaults and b.get(key) == defaults[key]:
      continue
    if a.get(key, "<missing>") != b.get(key, "<missing>"):
      bad.append(
        f"  {key}: workdir has {a.get(key, '<missing>')!r}, now {b.get(key, '<missing>')!r}"
      )
  if bad:
    raise ConfigMismatchError(
      "Refusing to resume: the workdir's config.json differs in fields that change the run:\n"
      + "\n".join(bad)
      + "\nUse a new --workdir, or restore those values. Only these may "
      f"change on resume: {', '.join(RESUME_MAY_CHANGE)}."
    )
