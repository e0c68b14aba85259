"""Host <-> device helpers for the pmapped loop (values carry a leading local-device axis)."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import jax
import numpy as np

__all__ = ["all_rows", "first", "local_rows", "replicate", "software_and_machine"]

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
    "cpu_count": os.cpu_count(),
  }


def replicate(tree, n):
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)).copy(), tree)


def local_rows(x) -> np.ndarray:
  """This process's per-device values of a pmapped array, in device order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def first(tree):
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)


def all_rows(tree):
  local = jax.tree.map(local_rows, tree)
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils

  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), local)
