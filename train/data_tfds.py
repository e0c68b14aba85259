"""TFDS datasets without TensorFlow: a prepared dataset read through ``tfds.data_source``.

:func:`tfds_source` opens a split of a prepared TFDS image classification
dataset as a random-access :class:`TfdsSource` (array_record files, decoded by
TFDS with Pillow or OpenCV, no TensorFlow). Preparing a dataset (TFDS's
``download_and_prepare``) is the one step that needs TensorFlow: the
``[tfds-prepare]`` extra installs it; prepare with ``file_format='array_record'``.
"""

from __future__ import annotations

import os

import numpy as np

from train.data_errors import DataConfigError, DatasetUnavailableError
from train.data_sources import resize_image

__all__ = ["PREPARE_HINT", "TfdsSource", "tfds_source"]

PREPARE_HINT = (
  "prepare it once (this needs TensorFlow: pip install -e '.[tfds-prepare]'), e.g. "
  "`tfds build {name} --data_dir=DIR --file_format=array_record` on a machine with internet "
  "(for imagenet2012 put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
  "DIR/downloads/manual first)"
)


class TfdsSource:
  """Examples of one split of a TFDS data source: ``(image uint8 [H, W, C], label)``.

  ``image_size``: images resized to that square (Pillow, bilinear); otherwise
  every image must have the dataset's declared shape. ``labels`` are read (with
  their images) on first use only: the sampler needs just the length.
  """

  in_memory = False

  def __init__(self, data_source, shape, image_size: int | None, indices=None, name: str = ""):
    self.data_source = data_source
    self.indices = np.arange(len(data_source)) if indices is None else np.asarray(indices)
    self.image_size = image_size
    self.shape = tuple(shape)
    self.name = name
    self._labels = None

  def __len__(self) -> int:
    return len(self.indices)

  def _example(self, i: int):
    record = self.data_source[int(self.indices[i])]
    image = np.asarray(record["image"], np.uint8)
    if self.image_size is not None:
      image = resize_image(image, self.image_size)
    if image.shape != self.shape:
      raise DataConfigError(
        f"TFDS dataset {self.name!r}: example {int(self.indices[i])} is "
        f"{'x'.join(map(str, image.shape))}, not {'x'.join(map(str, self.shape))}: set "
        "config.dataset.image_size=S to resize every image to S x S."
      )
    return image, np.int32(record["label"])

  def __getitem__(self, i: int):
    return self._example(i)

  def take(self, indices) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices)
    images = np.empty((len(indices), *self.shape), np.uint8)
    labels = np.empty(len(indices), np.int32)
    for row, i in enumerate(indices):
      images[row], labels[row] = self._example(int(i))
    return images, labels

  @property
  def labels(self) -> np.ndarray:
    if self._labels is None:
      self._labels = np.asarray(
        [np.int32(self.data_source[int(i)]["label"]) for i in self.indices], np.int32
      )
    return self._labels

  def subset(self, indices) -> TfdsSource:
    sub = TfdsSource(
      self.data_source, self.shape, self.image_size, self.indices[indices], self.name
    )
    if self._labels is not None:
      sub._labels = self._labels[indices]
    return sub


def _unreachable_download_host(builder, timeout=5.0):
  """'host: error' if the dataset's first download URL's host can't be reached."""
  import socket
  import urllib.parse

  try:
    urls = list((builder.url_infos or {}).keys())
  except Exception:
    return ""  # Unknown URLs: let TFDS try.
  if not urls:
    return ""
  parsed = urllib.parse.urlparse(urls[0])
  if not parsed.hostname:
    return ""
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  try:
    socket.create_connection((parsed.hostname, port), timeout=timeout).close()
  except OSError as e:
    return f"{parsed.hostname}:{port}: {e}"
  return ""


def _prepare(dc, builder) -> None:
  """Prepares an unprepared dataset (TFDS's download_and_prepare) or explains how to."""
  msg = (
    f"Dataset {dc.name!r} is not prepared in data_dir={str(builder.data_dir_root)!r}"
    f"{' and could not be downloaded' if dc.download else ' (download disabled)'}.\n"
    "Ways out:\n"
    f"  * --config.dataset.data_dir=DIR where DIR holds a prepared {dc.name}: "
    + PREPARE_HINT.format(name=dc.name)
    + ", or\n"
    "  * an image folder root/split/label/image: --config.dataset.source=image_folder "
    "--config.dataset.root=DIR (e.g. ../shared/data/cifar10-jpeg with "
    "--config.dataset.holdout_per_class=500)."
  )
  if not dc.download:
    raise DatasetUnavailableError(msg)
  unreachable = _unreachable_download_host(builder) if dc.check_download_host else ""
  if unreachable:  # TFDS would retry for minutes; fail at once instead.
    raise DatasetUnavailableError(f"{msg}\nIts download host is unreachable: {unreachable}")
  try:
    builder.download_and_prepare(file_format="array_record")
  except ModuleNotFoundError as e:
    raise DatasetUnavailableError(
      f"{msg}\nPreparing it needs {e.name or 'TensorFlow'}, which is not installed: "
      "pip install -e '.[tfds-prepare]'."
    ) from None
  except Exception as e:  # Any network or extraction failure.
    raise DatasetUnavailableError(
      f"{msg}\nThe download failed with: {type(e).__name__}: {e}"
    ) from None


def tfds_source(dc, split_spec: str) -> tuple[TfdsSource, int]:
  """(source, number of classes) of split ``split_spec`` of TFDS dataset ``dc.name``."""
  import tensorflow_datasets as tfds

  data_dir = os.path.expanduser(dc.data_dir) if dc.data_dir else None
  try:
    builder = tfds.builder(dc.name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends.
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataConfigError(
      f"Unknown TFDS dataset config.dataset.name={dc.name!r} ({reason}): for a folder of "
      "images use --config.dataset.source=image_folder --config.dataset.root=DIR."
    ) from None
  if not builder.is_prepared():
    _prepare(dc, builder)
  features = builder.info.features
  named = dict(features.items()) if isinstance(features, tfds.features.FeaturesDict) else {}
  image, label = named.get("image"), named.get("label")
  if image is None or not isinstance(label, tfds.features.ClassLabel):
    raise DataConfigError(
      f"TFDS dataset {dc.name!r} has no 'image' and 'label' features: config.dataset.name "
      "must name an image classification dataset."
    )
  # tfds infers FeatureConnector.shape from dm-tree (untyped): a union of containers.
  shape = tuple(image.shape)  # pyright: ignore[reportArgumentType]
  if dc.image_size is not None:
    shape = (dc.image_size, dc.image_size, shape[-1])
  elif None in shape:
    raise DataConfigError(
      f"TFDS dataset {dc.name!r} has images of varying size {shape}: set "
      "config.dataset.image_size=S to resize every image to S x S (e.g. 224)."
    )
  try:
    source = builder.as_data_source(split=split_spec)  # pyright: ignore[reportCallIssue]
  except (ValueError, KeyError, AssertionError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataConfigError(
      f"TFDS dataset {dc.name!r} has no split {split_spec!r} ({reason}): its splits are "
      f"{sorted(builder.info.splits)}."
    ) from None
  except NotImplementedError as e:  # prepared as tfrecord: data_source reads array_record
    raise DataConfigError(
      f"TFDS dataset {dc.name!r} is prepared in a format tfds.data_source cannot read ({e}): "
      + PREPARE_HINT.format(name=dc.name)
      + "."
    ) from None
  if len(source) == 0:
    raise DataConfigError(
      f"The split {split_spec!r} is empty: check its slice (e.g. 'train[:100]')."
    )
  return TfdsSource(source, shape, dc.image_size, name=dc.name), int(label.num_classes or 0)
