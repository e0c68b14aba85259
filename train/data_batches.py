"""Batches of a :class:`Dataset` for one process, read through Grain (see :mod:`train.input_pipeline`).

:class:`TrainBatches` cuts training batches that are pure functions of
``(seed, epoch, batch index)`` (:mod:`train.data_order`), process ``p``
reading only its rows of every global batch; :func:`eval_batches` covers the
evaluation set once, padded. Grain (``grain.MapDataset`` →
``to_iter_dataset`` with ``grain.ReadOptions``) prepares them in threads ahead
of use, in order.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator

import numpy as np

from train.data_errors import DataConfigError
from train.data_order import augment_draws, epoch_order, global_batch_indices, process_rows
from train.data_sources import ArraySource, FolderSource, decode_threads, to_memory
from train.data_tfds import TfdsSource

__all__ = ["Dataset", "TrainBatches", "check_batch_fits", "eval_batches"]


@dataclasses.dataclass
class Dataset:
  """The training and evaluation sources (:mod:`train.data_sources`) and their normalization."""

  train: ArraySource | FolderSource | TfdsSource
  eval: ArraySource | FolderSource | TfdsSource
  num_classes: int
  mean: np.ndarray  # float32 [C], in [0, 1] pixel units
  std: np.ndarray
  description: str

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train.shape)

  @property
  def train_labels(self) -> np.ndarray:
    return self.train.labels

  @property
  def eval_labels(self) -> np.ndarray:
    return self.eval.labels

  @property
  def train_images(self) -> np.ndarray:
    """Every training image, decoded (in memory already, or decoded now)."""
    return to_memory(self.train).images

  @property
  def eval_images(self) -> np.ndarray:
    """Every evaluation image, decoded (in memory already, or decoded now)."""
    return to_memory(self.eval).images


def _normalize(images, mean, std):
  return ((images.astype(np.float32) / 255.0) - mean) / std


def _apply_augment(images, flips, offsets, pad):
  n, h, w, _ = images.shape
  if offsets is not None:
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    images = np.stack([padded[i, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
  if flips is not None:
    images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
  return images


def check_batch_fits(dataset: Dataset, batch: int, what: str) -> None:
  """A DataConfigError naming ``what`` when ``batch`` images exceed the training set."""
  n = len(dataset.train)
  if batch > n:
    raise DataConfigError(
      f"{what} ({batch} images) is larger than the training set ({n} images): use a smaller "
      "batch, or more training data."
    )


def _threads(source) -> int:
  """Grain threads preparing batches: every core for decoding, two for cutting arrays."""
  return decode_threads() if not source.in_memory else min(2, decode_threads())


def _grain_batches(make, indices: range, source, prefetch: int) -> Iterator[dict]:
  """``make(i)`` for ``i`` in ``indices``, in order, prepared by Grain threads ahead of use.

  Each element is a pure function of its index, so the threads change nothing
  but the speed; ``prefetch <= 0``: prepared in the calling thread.
  """
  if prefetch <= 0:
    yield from (make(i) for i in indices)
    return
  import grain

  threads = _threads(source)
  ds = grain.MapDataset.range(indices.start, indices.stop).map(make)
  read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(prefetch, threads))
  yield from ds.to_iter_dataset(read)


class TrainBatches:
  """Deterministic training batches for one process (:mod:`train.data_order`), read through Grain.

  Process ``process_index`` reads only its own rows of every global batch.
  ``wait_seconds`` adds up the time the consumer of :meth:`epoch` waited for a
  batch (``batches_served`` counts them).
  """

  def __init__(
    self,
    dataset: Dataset,
    *,
    per_device_batch_size: int,
    local_devices: int,
    process_index: int,
    process_count: int,
    seed: int,
    augment: str,
    pad: int,
    micro_batches_per_step: int = 1,
  ):
    self.ds = dataset
    self.m = per_device_batch_size
    self.local_devices = local_devices
    self.local_batch = per_device_batch_size * local_devices
    self.global_batch = self.local_batch * process_count
    self.process_index = process_index
    self.rows = process_rows(process_index, self.local_batch)
    self.seed = seed
    self.augment = augment
    self.pad = pad
    self.wait_seconds = 0.0
    self.batches_served = 0
    # Batches (micro-batches with gradient accumulation) per epoch: a whole number
    # of optimizer steps of k micro-batches each; the rest of the permutation is dropped.
    k = micro_batches_per_step
    self.steps_per_epoch = len(dataset.train) // (self.global_batch * k) * k
    if self.steps_per_epoch == 0:
      devices = self.local_devices * process_count
      raise DataConfigError(
        f"The optimizer batch ({self.global_batch * k} images: config.per_device_batch_size="
        f"{self.m} × {devices} devices{f' × config.grad_accum_steps={k}' if k > 1 else ''}) "
        f"is larger than the training set ({len(dataset.train)} images): use a smaller "
        "config.per_device_batch_size"
        + (" or config.grad_accum_steps" if k > 1 else "")
        + ", fewer devices, or more training images (config.dataset.max_train_examples, "
        "train_per_class, the split)."
      )

  def order(self, epoch: int) -> np.ndarray:
    return epoch_order(self.seed, epoch, len(self.ds.train))

  def batch(self, epoch: int, index: int, order=None) -> dict:
    """Batch ``index`` of ``epoch`` for this process: [local_devices, m, ...]."""
    if order is None:
      order = self.order(epoch)
    idx = global_batch_indices(order, index, self.global_batch)[self.rows]
    images, labels = self.ds.train.take(idx)
    flips, offsets = augment_draws(
      self.seed, epoch, index, self.global_batch, self.augment, self.pad
    )
    if flips is not None:
      images = _apply_augment(
        images, flips[self.rows], None if offsets is None else offsets[self.rows], self.pad
      )
    images = _normalize(images, self.ds.mean, self.ds.std)
    shape = (self.local_devices, self.m)
    return {"image": images.reshape(shape + images.shape[1:]), "label": labels.reshape(shape)}

  def batches_at(self, pairs, prefetch: int = 2) -> Iterator[dict]:
    """Batches ``(epoch, index)`` for each of ``pairs``, in order, prepared by Grain threads."""
    pairs = list(pairs)
    orders = {e: self.order(e) for e in {e for e, _ in pairs}}
    return _grain_batches(
      lambda j: self.batch(pairs[j][0], pairs[j][1], orders[pairs[j][0]]),
      range(len(pairs)),
      self.ds.train,
      prefetch,
    )

  def epoch(self, epoch: int, start: int = 0, prefetch: int = 2) -> Iterator[dict]:
    """Batches ``start, start+1, ...`` of ``epoch``, prepared by Grain threads (``prefetch`` ahead)."""
    order = self.order(epoch)
    batches = _grain_batches(
      functools.partial(self.batch, epoch, order=order),
      range(start, self.steps_per_epoch),
      self.ds.train,
      prefetch,
    )
    while True:
      t = time.perf_counter()
      try:
        item = next(batches)
      except StopIteration:
        return
      self.wait_seconds += time.perf_counter() - t
      self.batches_served += 1
      yield item


def eval_batches(
  dataset: Dataset,
  *,
  per_device_batch_size: int,
  local_devices: int,
  process_index: int,
  process_count: int,
  prefetch: int = 2,
) -> Iterator[dict]:
  """The whole evaluation set in global batches, padded; ``mask`` marks real rows.

  Process ``process_index`` reads only its rows of each global batch.
  """
  local = per_device_batch_size * local_devices
  g = local * process_count
  n = len(dataset.eval)
  rows = process_rows(process_index, local)
  shape = (local_devices, per_device_batch_size)

  def make(i: int) -> dict:
    idx = np.arange(i * g, (i + 1) * g)[rows]
    mask = idx < n
    images, labels = dataset.eval.take(np.where(mask, idx, 0))
    images = _normalize(images, dataset.mean, dataset.std)
    return {
      "image": images.reshape(shape + images.shape[1:]),
      "label": labels.reshape(shape),
      "mask": mask.reshape(shape),
    }

  yield from _grain_batches(make, range(0, -(-n // g)), dataset.eval, prefetch)
