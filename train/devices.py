"""Host <-> device helpers for the pmapped loop (values carry a leading local-device axis)."""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["all_rows", "first", "local_rows", "replicate"]


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
