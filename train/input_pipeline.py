"""Input pipeline: TFDS datasets by name, image folders, the bundled digits.

Design (one idea): every dataset is decoded once into host memory as uint8
arrays ``[N, H, W, C]`` (CIFAR-10/100: 150 MB; Mini-ImageNet at 84x84: 1.3 GB),
and batches are then cut by pure NumPy functions of ``(seed, epoch, batch)``:

* the example order of epoch ``e`` is ``permutation(N)`` drawn from
  ``np.random.default_rng([seed, e])``;
* global batch ``i`` of epoch ``e`` is ``order[i*G:(i+1)*G]`` (``G`` the global
  batch; the incomplete last batch is dropped);
* its augmentation (crop offsets, flips) is drawn for the whole global batch
  from ``np.random.default_rng([seed, e, i, 1])``;
* process ``p`` of ``P`` feeds rows ``[p*G/P, (p+1)*G/P)`` of it to its local
  devices, shaped ``[local_devices, m, H, W, C]`` (``m`` the per-device batch).

So resuming in the middle of an epoch is exact, and a run on several hosts
sees exactly the global batches of a one-host run with the same number of
devices. TensorFlow only decodes; it is kept off every accelerator.

Sources (``config.dataset``):

* ``source='tfds'``: any TFDS image classification dataset by ``name``
  (``cifar10``, ``cifar100``, ...), read from ``data_dir``; TFDS split syntax
  (``train[:90%]``) works.
* ``source='image_folder'``: ``root/split/label/image`` (the layout of
  ``tfds.folder_dataset.ImageFolder``: Mini-ImageNet, user data, the CIFAR-10
  JPEGs), classes = sorted sub-folders, files in name order. Splits accept
  TFDS's ``name``, ``name[a:b]`` or ``name[a%:b%]`` slices (read by TFDS).
* ``source='digits'``: scikit-learn's bundled 8x8 digits (1797 images, no
  download), one split called ``train``.

Decoding 50k JPEGs takes a minute: with ``dataset.cache_dir`` set, the decoded
arrays of each split are cached there as ``.npy`` files (keyed by source,
name/root, data_dir, split and image size) and reused by later runs.

Validation: ``eval_split`` names a split, or ``holdout_per_class=k > 0`` carves
the last ``k`` examples of every class (in file order for image folders,
dataset order otherwise) out of ``train_split`` and uses them for evaluation.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Iterator

import numpy as np

__all__ = [
  "DataConfigError",
  "Dataset",
  "DatasetUnavailableError",
  "check_batch_fits",
  "load_dataset",
  "TrainBatches",
  "eval_batches",
  "validate_dataset_config",
  "SOURCES",
]

SOURCES = ("tfds", "image_folder", "digits")
AUGMENTATIONS = ("crop_flip", "flip", "none")


class DatasetUnavailableError(RuntimeError):
  """A dataset is neither on disk nor downloadable."""


class DataConfigError(ValueError):
  """The data cannot be used as configured (an undecodable image, a batch larger than the
  training set, a hold-out larger than a class): the message names the file or field."""


@dataclasses.dataclass
class Dataset:
  train_images: np.ndarray  # uint8 [N, H, W, C]
  train_labels: np.ndarray  # int32 [N]
  eval_images: np.ndarray
  eval_labels: np.ndarray
  num_classes: int
  mean: np.ndarray  # float32 [C], in [0, 1] pixel units
  std: np.ndarray
  description: str

  @property
  def image_shape(self):
    return self.train_images.shape[1:]


def _tf():
  import tensorflow as tf

  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass  # Already initialized or no such device type: nothing to hide.
  return tf


# Channels of the images each source yields, where the config alone tells (TFDS: its info).
SOURCE_CHANNELS = {"digits": 1, "image_folder": 3}


def _check_split(dc, field: str) -> None:
  """Parses ``config.dataset.<field>`` with TFDS's split syntax; a DataConfigError naming it."""
  import tensorflow_datasets as tfds

  spec = dc[field]
  try:
    tfds.core.ReadInstruction.from_spec(spec)
  except (ValueError, AssertionError, TypeError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataConfigError(
      f"config.dataset.{field}={spec!r} is not a split ({reason}): use a name such as 'train', "
      "or a slice such as 'train[:4500]' or 'train[90%:]'."
    ) from None
  if dc.source != "tfds" and "+" in spec:
    raise DataConfigError(
      f"config.dataset.{field}={spec!r} names several splits; {dc.source} data takes one, "
      "e.g. 'train[90%:]'."
    )


def _check_tfds_name(dc) -> None:
  """A TFDS name must name a registered dataset (or one prepared in ``data_dir``)."""
  import difflib

  import tensorflow_datasets as tfds

  base = dc.name.split(":", 1)[0].split("/", 1)[0]
  known = tfds.list_builders(with_community_datasets=False)
  if base in known:
    return
  data_dir = os.path.expanduser(dc.data_dir) if dc.data_dir else None
  if data_dir and os.path.isdir(os.path.join(data_dir, base)):
    return  # prepared there without a registered builder: TFDS reads it from its files
  close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
  raise DataConfigError(
    f"config.dataset.name={dc.name!r} is not a TFDS dataset"
    + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else "")
    + ": use a name of `tfds.list_builders()` (e.g. 'cifar10'), a dataset prepared in "
    "config.dataset.data_dir, or --config.dataset.source=image_folder "
    "--config.dataset.root=DIR for a folder of images."
  )


def _check_mean_std(dc, channels: int | None) -> None:
  """``dataset.mean``/``std``: both or neither, finite, std > 0, one value per channel."""
  if (dc.mean is None) != (dc.std is None):
    given, missing = ("mean", "std") if dc.std is None else ("std", "mean")
    raise DataConfigError(
      f"config.dataset.{given} is set but config.dataset.{missing} is not: set both (one value "
      "per channel, in [0, 1] pixel units) or neither (both from the training set)."
    )
  if dc.mean is None:
    return
  for name in ("mean", "std"):
    values = dc[name]
    try:
      array = np.asarray(values, np.float64)
    except (TypeError, ValueError):
      array = None
    if array is None or array.ndim != 1 or not np.all(np.isfinite(array)):
      raise DataConfigError(
        f"config.dataset.{name}={values!r} must be a tuple of finite numbers, one per channel."
      )
    if name == "std" and np.any(array <= 0):
      raise DataConfigError(
        f"config.dataset.std={values!r} must be > 0 per channel (pixels are divided by it)."
      )
    if channels is not None and len(array) != channels:
      raise DataConfigError(
        f"config.dataset.{name}={values!r} has {len(array)} value(s), but the "
        f"{dc.source} images have {channels} channel(s): give one value per channel (or None: "
        "computed from the training set)."
      )


def validate_dataset_config(dc) -> None:
  """Checks of ``config.dataset`` that need no data: names, splits, sizes, ranges.

  Raises ValueError (or its subclass :class:`DataConfigError`) naming the field,
  or :class:`DatasetUnavailableError` for a missing image folder.
  """
  if dc.source not in SOURCES:
    raise ValueError(f"config.dataset.source={dc.source!r} is not one of {SOURCES}.")
  if dc.source == "tfds" and not dc.name:
    raise ValueError("config.dataset.name must name a TFDS dataset (e.g. 'cifar10').")
  if dc.source == "image_folder":
    if not dc.root:
      raise ValueError("config.dataset.root must point at an image folder root/split/label/image.")
    if not os.path.isdir(os.path.expanduser(dc.root)):
      raise DatasetUnavailableError(
        f"Image folder config.dataset.root={dc.root!r} does not exist "
        f"(resolved from the current directory {os.getcwd()!r}). Point "
        "--config.dataset.root at a folder laid out as root/split/label/image."
      )
  if dc.augment not in AUGMENTATIONS:
    raise ValueError(f"config.dataset.augment={dc.augment!r} is not one of {AUGMENTATIONS}.")
  if dc.holdout_per_class < 0:
    raise ValueError(f"config.dataset.holdout_per_class must be >= 0, got {dc.holdout_per_class}.")
  if dc.holdout_per_class == 0 and not dc.eval_split:
    raise ValueError("Set config.dataset.eval_split or config.dataset.holdout_per_class > 0.")
  if dc.image_size is not None and dc.image_size <= 0:
    raise ValueError(f"config.dataset.image_size must be positive, got {dc.image_size}.")
  if dc.max_train_examples is not None and dc.max_train_examples <= 0:
    raise ValueError("config.dataset.max_train_examples must be positive or None.")
  if dc.train_per_class is not None and dc.train_per_class <= 0:
    raise ValueError("config.dataset.train_per_class must be positive or None.")
  if dc.max_eval_examples is not None and dc.max_eval_examples <= 0:
    raise ValueError("config.dataset.max_eval_examples must be positive or None.")
  if _classes(dc):
    if dc.source != "image_folder":
      raise ValueError(
        f"config.dataset.classes selects class folders of an image folder; source "
        f"{dc.source!r} has none: leave config.dataset.classes empty."
      )
    if len(set(_classes(dc))) != len(_classes(dc)):
      raise ValueError(f"config.dataset.classes names a class twice: {dc.classes!r}.")
  pad = dc.crop_padding
  if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
    raise ValueError(
      f"config.dataset.crop_padding must be an int >= 0 (pixels of padding before the random "
      f"crop; 0: no crop), got {pad!r}."
    )
  _check_mean_std(dc, SOURCE_CHANNELS.get(dc.source))
  _check_split(dc, "train_split")
  if dc.holdout_per_class == 0:
    _check_split(dc, "eval_split")
  if dc.source == "tfds":
    _check_tfds_name(dc)


# ----------------------------------------------------------------------------
# Reading sources into memory.


def _to_numpy(ds, image_size, channels, split=""):
  """Decodes a tf.data dataset of (image, label) into uint8/int32 arrays."""
  tf = _tf()

  def prep(image, label):
    image = tf.convert_to_tensor(image)
    if channels is not None and image.shape[-1] == 1 and channels == 3:
      image = tf.image.grayscale_to_rgb(image)
    if image_size is not None:
      image = tf.image.resize(image, (image_size, image_size), antialias=True)
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image, tf.cast(label, tf.int32)

  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  images, labels = [], []
  for image, label in ds.batch(1024).prefetch(2).as_numpy_iterator():
    images.append(image)
    labels.append(label)
  if not images:
    raise DataConfigError(f"The split {split!r} is empty: check its slice (e.g. 'train[:100]').")
  return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _slice_split(spec: str, n: int):
  """'name', 'name[a:b]' or 'name[a%:b%]' (TFDS split syntax, read by TFDS) → (name, slice)."""
  import tensorflow_datasets as tfds

  name = spec.split("[", 1)[0].strip()
  try:
    instruction = tfds.core.ReadInstruction.from_spec(spec)
    parts = instruction.to_absolute(
      {name: tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)}
    )
  except (ValueError, KeyError, AssertionError) as e:
    raise DataConfigError(
      f"Cannot parse split {spec!r} ({e}): use 'train', 'train[:4500]' or 'train[90%:]'."
    ) from None
  if len(parts) != 1:
    raise DataConfigError(f"Split {spec!r} names {len(parts)} splits; use one, e.g. 'train[90%:]'.")
  return name, slice(parts[0].from_, parts[0].to)


def _classes(dc) -> tuple[str, ...]:
  """``config.dataset.classes`` as a tuple of names ('' or None: every class)."""
  value = dc.get("classes") or ""
  return tuple(c.strip() for c in value.split(",") if c.strip())


def _image_folder_files(root: str, split_name: str, classes=None):
  """(paths, labels, class names) of ``root/split/<class>/<image>``, in (class, file) order.

  Class names are the sorted sub-folders (as ``tfds.folder_dataset.ImageFolder``
  and torchvision's ``ImageFolder``), or ``classes`` (``config.dataset.classes``:
  those sub-folders only, labelled 0, 1, ... in the order given); an empty
  class folder is an error.
  """
  split_dir = os.path.join(root, split_name)
  if not os.path.isdir(split_dir):
    splits = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    raise DatasetUnavailableError(
      f"Image folder {root!r} has no split {split_name!r}; it has {splits} "
      "(layout: root/split/label/image)."
    )
  names = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
  if not names:
    raise DatasetUnavailableError(
      f"{split_dir!r} holds no class folders (layout: root/split/label/image)."
    )
  if classes:
    missing = [c for c in classes if c not in names]
    if missing:
      raise DataConfigError(
        f"config.dataset.classes names {missing}, which {split_dir!r} does not hold; its "
        f"classes are {names}."
      )
    names = list(classes)
  paths, labels = [], []
  for label, name in enumerate(names):
    folder = os.path.join(split_dir, name)
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    for f in files:
      _check_image_path(os.path.join(folder, f))
    if not files:
      raise DatasetUnavailableError(
        f"Class folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}): remove it "
        "or add its images (every class folder must hold at least one)."
      )
    paths += [os.path.join(folder, f) for f in files]
    labels += [label] * len(files)
  return paths, labels, names


def _check_image_path(path: str) -> None:
  """A DataConfigError naming ``path`` unless it is a regular file (or a link to one)."""
  if os.path.islink(path) and not os.path.exists(path):
    raise DataConfigError(
      f"{path!r} is a dangling symbolic link (to {os.readlink(path)!r}, which does not exist): "
      "remove it or restore its target."
    )
  if os.path.isdir(path):
    raise DataConfigError(
      f"{path!r} is a directory, not an image (its name ends in an image extension): rename or "
      "remove it (class folders hold image files only)."
    )
  if not os.path.isfile(path):
    raise DataConfigError(f"{path!r} is not a regular file: remove it or replace it by an image.")


def _image_shape(tf, path: str) -> tuple:
  """(height, width, ...) of an image file (JPEGs from their header, others decoded)."""
  data = tf.io.read_file(path)
  if path.lower().endswith((".jpg", ".jpeg")):
    return tuple(int(d) for d in tf.io.extract_jpeg_shape(data).numpy())
  return tuple(tf.io.decode_image(data, channels=3, expand_animations=False).shape)


def _read_image_folder(dc, split_spec):
  tf = _tf()
  root = os.path.expanduser(dc.root)
  split_name = split_spec.split("[", 1)[0].strip()
  paths, labels, names = _image_folder_files(root, split_name, _classes(dc))
  _, sl = _slice_split(split_spec, len(paths))
  paths, labels = paths[sl], labels[sl]

  def load(path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return image, label

  ds = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
    load, num_parallel_calls=tf.data.AUTOTUNE
  )
  try:
    if dc.image_size is None:
      # Batching needs one shape: take the first image's (decoding it may fail too).
      first = next(iter(ds.take(1)))[0].shape

      def check(image, label):
        tf.debugging.assert_equal(
          tf.shape(image), first, message="Images differ in size: set config.dataset.image_size."
        )
        return tf.ensure_shape(image, first), label

      ds = ds.map(check)
    images, labels = _to_numpy(ds, dc.image_size, 3, split_spec)
  except tf.errors.InvalidArgumentError as e:
    message = _first_bad_image(paths)
    if not message and dc.image_size is None:
      message = _first_of_another_size(tf, paths)
    raise DataConfigError(message or f"An image could not be read: {e}") from None
  return images, labels, len(names)


def _first_of_another_size(tf, paths) -> str:
  """A message naming the first image whose size differs from the first one's ('' if none)."""
  first = _image_shape(tf, paths[0])
  for path in paths[1:]:
    shape = _image_shape(tf, path)
    if shape[:2] != first[:2]:
      return (
        f"Image {path!r} is {shape[0]}x{shape[1]}, but the first image ({paths[0]!r}) is "
        f"{first[0]}x{first[1]}: set config.dataset.image_size=S to resize every image to "
        "S x S (e.g. --config.dataset.image_size="
        f"{first[0]}), or make the images one size."
      )
  return ""


def _first_bad_image(paths) -> str:
  """A message naming the first file of ``paths`` that does not decode as an image ('' if none)."""
  tf = _tf()
  for path in paths:
    try:
      tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
      reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
      return (
        f"Cannot decode image {path!r} ({reason}): remove or replace the file "
        "(truncated or not an image)."
      )
  return ""


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


def _read_tfds(dc, split_spec):
  _tf()
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
    msg = (
      f"Dataset {dc.name!r} is not prepared in data_dir={str(builder.data_dir_root)!r}"
      f"{' and could not be downloaded' if dc.download else ' (download disabled)'}.\n"
      "Ways out:\n"
      f"  * --config.dataset.data_dir=DIR where DIR holds a prepared {dc.name} "
      "(e.g. made with `tfds build` on a machine with internet), or\n"
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
      builder.download_and_prepare()
    except Exception as e:  # Any network or extraction failure.
      raise DatasetUnavailableError(
        f"{msg}\nThe download failed with: {type(e).__name__}: {e}"
      ) from None
  features = builder.info.features
  named = dict(features.items()) if isinstance(features, tfds.features.FeaturesDict) else {}
  image, label = named.get("image"), named.get("label")
  if image is None or not isinstance(label, tfds.features.ClassLabel):
    raise DataConfigError(
      f"TFDS dataset {dc.name!r} has no 'image' and 'label' features: config.dataset.name "
      "must name an image classification dataset."
    )
  num_classes = label.num_classes
  # tfds infers FeatureConnector.shape from dm-tree (untyped): a union of containers.
  channels = image.shape[-1]  # pyright: ignore[reportIndexIssue]
  try:
    ds = builder.as_dataset(
      # tfds wraps as_dataset with wrapt, whose annotations drop its ``split`` parameter.
      split=split_spec,  # pyright: ignore[reportCallIssue]
      shuffle_files=False,
      as_supervised=True,
    )
  except (ValueError, KeyError, AssertionError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataConfigError(
      f"TFDS dataset {dc.name!r} has no split {split_spec!r} ({reason}): its splits are "
      f"{sorted(builder.info.splits)}."
    ) from None
  images, labels = _to_numpy(ds, dc.image_size, 3 if channels == 3 else None, split_spec)
  return images, labels, num_classes


def _read_digits(dc, split_spec):
  from sklearn.datasets import load_digits

  flat, target = load_digits(return_X_y=True)  # the 8×8 images, flattened
  images = np.round(np.reshape(flat, (-1, 8, 8)) * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = np.asarray(target).astype(np.int32)
  name, sl = _slice_split(split_spec, len(labels))
  if name != "train":
    raise DataConfigError(f"The digits dataset has one split, 'train'; got {split_spec!r}.")
  return images[sl], labels[sl], 10


def _read(dc, split_spec):
  reader = {"tfds": _read_tfds, "image_folder": _read_image_folder, "digits": _read_digits}[
    dc.source
  ]
  cache_dir = dc.cache_dir
  if not cache_dir or dc.source == "digits":
    return reader(dc, split_spec)
  # Decoded arrays cached as .npy files, keyed by what determines them.
  import hashlib
  import json

  root = os.path.abspath(os.path.expanduser(dc.root)) if dc.source == "image_folder" else None
  key = json.dumps(
    [
      dc.source,
      dc.name if dc.source == "tfds" else None,
      root,
      dc.data_dir,
      split_spec,
      dc.image_size,
    ]
    + ([list(_classes(dc))] if _classes(dc) else []),  # keys of earlier caches stay valid
    sort_keys=True,
  )
  path = os.path.join(os.path.expanduser(cache_dir), hashlib.sha1(key.encode()).hexdigest()[:16])
  try:
    with open(path + ".json") as f:
      num_classes = json.load(f)["num_classes"]
    return np.load(path + ".images.npy"), np.load(path + ".labels.npy"), num_classes
  except (OSError, ValueError, KeyError):
    pass
  images, labels, num_classes = reader(dc, split_spec)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tag = f".tmp{os.getpid()}"
  for suffix, array in ((".images.npy", images), (".labels.npy", labels)):
    with open(path + suffix + tag, "wb") as f:
      np.save(f, array)
    os.replace(path + suffix + tag, path + suffix)
  with open(path + ".json" + tag, "w") as f:  # Written last: marks the entry complete.
    json.dump({"key": key, "num_classes": int(num_classes)}, f)
  os.replace(path + ".json" + tag, path + ".json")
  return images, labels, num_classes


def _holdout(labels, k):
  """Boolean mask of the last k examples of every class."""
  mask = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    if len(idx) <= k:
      raise DataConfigError(
        f"config.dataset.holdout_per_class={k} is too large: class {c} has {len(idx)} examples "
        f"(hold out fewer than {len(idx)})."
      )
    mask[idx[-k:]] = True
  return mask


def _first_per_class(labels, k):
  """Boolean mask of the first k examples of every class (a balanced subset)."""
  mask = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    mask[np.flatnonzero(labels == c)[:k]] = True
  return mask


def _channel_stats(images):
  """Per-channel mean and std of uint8 images, in [0, 1] units (float64 sums)."""
  c = images.shape[-1]
  flat = images.reshape(-1, c)
  s = np.zeros(c)
  s2 = np.zeros(c)
  for start in range(0, len(flat), 1 << 22):
    chunk = flat[start : start + (1 << 22)].astype(np.float64) / 255.0
    s += chunk.sum(0)
    s2 += (chunk**2).sum(0)
  mean = s / len(flat)
  std = np.sqrt(np.maximum(s2 / len(flat) - mean**2, 1e-12))
  return mean.astype(np.float32), std.astype(np.float32)


def load_dataset(dc) -> Dataset:
  """Reads the train and evaluation data described by ``config.dataset``."""
  validate_dataset_config(dc)
  images, labels, num_classes = _read(dc, dc.train_split)
  if dc.holdout_per_class > 0:
    mask = _holdout(labels, dc.holdout_per_class)
    eval_images, eval_labels = images[mask], labels[mask]
    images, labels = images[~mask], labels[~mask]
    eval_desc = f"last {dc.holdout_per_class} per class of {dc.train_split!r}"
  else:
    eval_images, eval_labels, _ = _read(dc, dc.eval_split)
    eval_desc = repr(dc.eval_split)
  if dc.train_per_class:
    keep = _first_per_class(labels, dc.train_per_class)
    images, labels = images[keep], labels[keep]
  if dc.max_train_examples:
    images, labels = images[: dc.max_train_examples], labels[: dc.max_train_examples]
  if dc.max_eval_examples:
    eval_images, eval_labels = (
      eval_images[: dc.max_eval_examples],
      eval_labels[: dc.max_eval_examples],
    )
  _check_mean_std(dc, images.shape[-1])  # the channels now known for every source
  if dc.mean is not None and dc.std is not None:
    mean = np.asarray(dc.mean, np.float32)
    std = np.asarray(dc.std, np.float32)
  else:
    mean, std = _channel_stats(images)
  name = dc.name if dc.source == "tfds" else (dc.root if dc.source == "image_folder" else "digits")
  return Dataset(
    images,
    labels,
    eval_images,
    eval_labels,
    int(num_classes),
    mean,
    std,
    description=(
      f"{dc.source}:{name} train {dc.train_split!r} ({len(labels)} images "
      f"{images.shape[1:]}), eval {eval_desc} ({len(eval_labels)} images), "
      f"{num_classes} classes"
    ),
  )


# ----------------------------------------------------------------------------
# Batches.


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
  n = len(dataset.train_labels)
  if batch > n:
    raise DataConfigError(
      f"{what} ({batch} images) is larger than the training set ({n} images): use a smaller "
      "batch, or more training data."
    )


class TrainBatches:
  """Deterministic training batches for one process; see the module docstring."""

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
    self.seed = seed
    self.augment = augment
    self.pad = pad
    # Batches (micro-batches with gradient accumulation) per epoch: a whole number
    # of optimizer steps of k micro-batches each; the rest of the permutation is dropped.
    k = micro_batches_per_step
    self.steps_per_epoch = len(dataset.train_labels) // (self.global_batch * k) * k
    if self.steps_per_epoch == 0:
      raise DataConfigError(
        f"The optimizer batch ({self.global_batch * k} = per_device_batch_size × devices"
        f"{' × grad_accum_steps' if k > 1 else ''}) is larger than the training set "
        f"({len(dataset.train_labels)} images)."
      )

  def order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.ds.train_labels))

  def batch(self, epoch: int, index: int, order=None) -> dict:
    """Batch ``index`` of ``epoch`` for this process: [local_devices, m, ...]."""
    if order is None:
      order = self.order(epoch)
    g = order[index * self.global_batch : (index + 1) * self.global_batch]
    lo = self.process_index * self.local_batch
    hi = lo + self.local_batch
    idx = g[lo:hi]
    images = self.ds.train_images[idx]
    if self.augment != "none":
      flips, offsets = self._draw(np.random.default_rng([self.seed, epoch, index, 1]))
      images = _apply_augment(
        images, flips[lo:hi], None if offsets is None else offsets[lo:hi], self.pad
      )
    images = _normalize(images, self.ds.mean, self.ds.std)
    shape = (self.local_devices, self.m)
    return {
      "image": images.reshape(shape + images.shape[1:]),
      "label": self.ds.train_labels[idx].reshape(shape),
    }

  def _draw(self, rng):
    n = self.global_batch
    flips = rng.random(n) < 0.5
    offsets = None
    if self.augment == "crop_flip" and self.pad > 0:
      offsets = rng.integers(0, 2 * self.pad + 1, size=(n, 2))
    return flips, offsets

  def epoch(self, epoch: int, start: int = 0, prefetch: int = 2) -> Iterator[dict]:
    """Batches ``start, start+1, ...`` of ``epoch``, prepared in a thread (``prefetch`` ahead)."""
    order = self.order(epoch)
    batches = (self.batch(epoch, i, order) for i in range(start, self.steps_per_epoch))
    if prefetch <= 0:
      yield from batches
    else:
      yield from _in_a_thread(batches, prefetch)


def _in_a_thread(items: Iterator, prefetch: int) -> Iterator:
  """``items``, produced in a daemon thread at most ``prefetch`` ahead of the consumer.

  An error in the producer is raised in the consumer; a consumer that stops
  early (or is closed) stops the producer and drains its queue.
  """
  q: queue.Queue = queue.Queue(maxsize=prefetch)
  stop = threading.Event()

  def work():
    try:
      for item in items:
        if stop.is_set():
          return
        q.put(item)
      q.put(None)
    except BaseException as e:  # Surface errors in the consumer.
      q.put(e)

  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is None:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    while thread.is_alive():
      try:
        q.get_nowait()
      except queue.Empty:
        thread.join(0.01)


def eval_batches(
  dataset: Dataset,
  *,
  per_device_batch_size: int,
  local_devices: int,
  process_index: int,
  process_count: int,
) -> Iterator[dict]:
  """The whole evaluation set in global batches, padded; ``mask`` marks real rows."""
  local = per_device_batch_size * local_devices
  g = local * process_count
  n = len(dataset.eval_labels)
  for start in range(0, n, g):
    idx = np.arange(start, start + g)[process_index * local : (process_index + 1) * local]
    mask = idx < n
    idx = np.where(mask, idx, 0)
    images = _normalize(dataset.eval_images[idx], dataset.mean, dataset.std)
    shape = (local_devices, per_device_batch_size)
    yield {
      "image": images.reshape(shape + images.shape[1:]),
      "label": dataset.eval_labels[idx].reshape(shape),
      "mask": mask.reshape(shape),
    }
