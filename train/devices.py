"""What a run's numbers depend on beyond its config: package versions and the machine.

(Placing values on the devices and reading them back is :mod:`train.parallel`'s job.)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform

import jax

__all__ = ["software_and_machine"]

RECORDED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "tensorflow-cpu", "tensorflow")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _cpu_id() -> str:
  """The CPU beyond its marketing name: family, model, stepping and a hash of its instruction-set
  flags (two machines both called "AMD EPYC" can compute different XLA floats)."""
  fields: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("cpu family", "model", "stepping", "flags") and key not in fields:
          fields[key] = value.strip()
  except OSError:
    return ""
  flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()
  return (
    f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')} stepping "
    f"{fields.get('stepping', '?')} flags {flags[:12]}"
  )


def software_and_machine() -> dict:
  """What a run's numbers depend on beyond its config: package versions and the machine.

  XLA's float results differ between CPU models and library versions, and a
  training run amplifies such differences, so the same config and seed can end
  a few tenths (or points) apart on two machines; summary.json records this so
  that runs can be compared knowingly.
  """
  versions = {}
  for name in RECORDED_PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  device = jax.devices()[0]
  return {
    "python": platform.python_version(),
    "packages": versions,
    "platform": device.platform,
    "device_kind": device.device_kind,
    "cpu": _cpu_model(),
    "cpu_id": _cpu_id(),
    "cpu_count": os.cpu_count(),
  }
