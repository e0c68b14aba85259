"""Random-access sources of ``(uint8 image [H, W, C], int label)`` examples.

* :class:`ArraySource`: images already decoded into memory (the digits, a small
  image folder, a small TFDS dataset);
* :class:`FolderSource`: image files decoded on the fly with Pillow, one file
  per read (a dataset larger than memory);
* :func:`to_memory` decodes a source once, in threads, into an :class:`ArraySource`.

Every source has ``len``, ``source[i]``, ``take(indices)`` (a batch, stacked),
``subset(indices)`` (a source of those examples) and ``labels`` (int32, read
without decoding an image). Decoding problems are :class:`DataConfigError`
naming the file.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from train.data_errors import DataConfigError

__all__ = [
  "ArraySource",
  "FolderSource",
  "decode_image",
  "decode_threads",
  "resize_image",
  "to_memory",
]


def decode_threads() -> int:
  """Threads for decoding: the CPU cores this process may use (at most 32)."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  return max(1, min(cores, 32))


def _size_message(path: str, shape, first_path: str, first_shape) -> str:
  return (
    f"Image {path!r} is {shape[0]}x{shape[1]}, but the first image ({first_path!r}) is "
    f"{first_shape[0]}x{first_shape[1]}: set config.dataset.image_size=S to resize every image "
    f"to S x S (e.g. --config.dataset.image_size={first_shape[0]}), or make the images one size."
  )


def decode_image(path: str, image_size: int | None = None) -> np.ndarray:
  """The RGB pixels (uint8 ``[H, W, 3]``) of an image file, resized to ``image_size``² if given.

  Pillow decodes (a GIF's first frame; grey, palette and RGBA images become RGB,
  the alpha channel dropped) and resizes with its bilinear filter, which
  antialiases when it shrinks (as ``tf.image.resize(..., antialias=True)``).
  A file that does not decode is a :class:`DataConfigError` naming ``path``.
  """
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(path) as img:
      rgb = img.convert("RGB")  # reads (and checks) the whole file
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    raise DataConfigError(
      f"Cannot decode image {path!r} ({reason}; truncated or not an image): replace it by a "
      "readable image and start the same command again (it resumes from its last checkpoint), "
      "or remove it and start a new run (a resumed run would read the rest of its epoch in "
      "another order: the order is a permutation of the split's size)."
    ) from None
  if image_size is not None and rgb.size != (image_size, image_size):
    rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.asarray(rgb, np.uint8)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """``image`` (uint8 ``[H, W, C]``, C = 1 or 3) resized to ``size``² by Pillow's bilinear filter."""
  from PIL import Image

  if image.shape[:2] == (size, size):
    return image
  grey = image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if grey else image)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
  return out[..., None] if grey else out


class ArraySource:
  """Decoded images in memory: ``images`` uint8 ``[N, H, W, C]``, ``labels`` int32 ``[N]``."""

  in_memory = True

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images = images
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int):
    return self.images[i], self.labels[i]

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.images.shape[1:])

  def take(self, indices) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]

  def subset(self, indices) -> ArraySource:
    return ArraySource(self.images[indices], self.labels[indices])


class FolderSource:
  """Image files decoded on read (:func:`decode_image`); ``shape`` is every image's shape.

  Without ``image_size`` every image must have the first image's size (checked
  as each is read: a :class:`DataConfigError` naming both files).
  """

  in_memory = False

  def __init__(self, paths, labels, image_size: int | None, first_path: str | None = None):
    self.paths = np.asarray(paths, dtype=object)
    self.labels = np.asarray(labels, np.int32)
    self.image_size = image_size
    self.first_path = first_path if first_path is not None else str(self.paths[0])
    if image_size is not None:
      self.shape = (image_size, image_size, 3)
    else:
      self.shape = decode_image(self.first_path).shape

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, i: int) -> np.ndarray:
    """The pixels of example ``i`` (decoded now)."""
    path = str(self.paths[i])
    image = decode_image(path, self.image_size)
    if image.shape != tuple(self.shape):
      raise DataConfigError(_size_message(path, image.shape, self.first_path, self.shape))
    return image

  def __getitem__(self, i: int):
    return self.read(i), self.labels[i]

  def take(self, indices) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices)
    images = np.empty((len(indices), *self.shape), np.uint8)
    for row, i in enumerate(indices):
      images[row] = self.read(int(i))
    return images, self.labels[indices]

  def subset(self, indices) -> FolderSource:
    return FolderSource(self.paths[indices], self.labels[indices], self.image_size, self.first_path)


def to_memory(source, threads: int | None = None, chunk: int = 256) -> ArraySource:
  """Every example of ``source`` decoded once into an :class:`ArraySource`.

  ``threads`` (default :func:`decode_threads`) decode ``chunk`` examples each at a time.
  """
  if isinstance(source, ArraySource):
    return source
  n = len(source)
  images = np.empty((n, *source.shape), np.uint8)
  labels = np.empty(n, np.int32)  # read with the images (a TFDS record holds both)

  def fill(start: int) -> None:
    stop = min(start + chunk, n)
    images[start:stop], labels[start:stop] = source.take(np.arange(start, stop))

  pool = concurrent.futures.ThreadPoolExecutor(threads or decode_threads())
  try:
    for future in [pool.submit(fill, s) for s in range(0, n, chunk)]:
      future.result()  # in order: the first failing chunk's error names its file
  finally:  # on an error, the chunks not started yet are dropped, not decoded first
    pool.shutdown(wait=True, cancel_futures=True)
  return ArraySource(images, labels)
