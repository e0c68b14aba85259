"""The index sampler: which examples, with which augmentation, each process reads, as pure functions.

Every quantity is a function of ``(seed, epoch, batch index)`` only, so a run
resumed anywhere reads exactly the batches of an uninterrupted one, and a run
on several processes reads exactly the global batches of a run on one:

* the example order of epoch ``e`` over ``n`` examples is ``permutation(n)``
  drawn from ``np.random.default_rng([seed, e])`` (:func:`epoch_order`);
* global batch ``i`` of epoch ``e`` is ``order[i*G:(i+1)*G]`` (``G`` the global
  batch; the incomplete last batch is dropped);
* its augmentation (flips, then crop offsets) is drawn for the whole global
  batch from ``np.random.default_rng([seed, e, i, 1])`` (:func:`augment_draws`);
* process ``p`` reads rows ``[p*L, (p+1)*L)`` of it (``L`` its local batch,
  :func:`process_rows`), and only those.
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment_draws", "epoch_order", "global_batch_indices", "process_rows"]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The example order of ``epoch``: a permutation of ``range(n)`` drawn from ``[seed, epoch]``."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def process_rows(process_index: int, local_batch: int) -> slice:
  """The rows of every global batch that process ``process_index`` reads."""
  return slice(process_index * local_batch, (process_index + 1) * local_batch)


def global_batch_indices(order: np.ndarray, index: int, global_batch: int) -> np.ndarray:
  """The example indices of global batch ``index`` of an epoch whose order is ``order``."""
  return order[index * global_batch : (index + 1) * global_batch]


def augment_draws(
  seed: int, epoch: int, index: int, global_batch: int, augment: str, pad: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
  """(flips ``[G]`` bool, crop offsets ``[G, 2]`` in ``[0, 2*pad]``) of one global batch.

  ``augment='none'``: (None, None); ``'flip'`` or ``pad == 0``: no offsets.
  """
  if augment == "none":
    return None, None
  rng = np.random.default_rng([seed, epoch, index, 1])
  flips = rng.random(global_batch) < 0.5
  offsets = None
  if augment == "crop_flip" and pad > 0:
    offsets = rng.integers(0, 2 * pad + 1, size=(global_batch, 2))
  return flips, offsets
