"""Input pipeline: image folders, TFDS datasets, the bundled digits, read through Grain.

Each split is a random-access *source* of ``(uint8 image [H, W, C], label)``
(:mod:`train.data_sources`):

* held in memory, decoded once, when its decoded pixels fit
  ``dataset.max_in_memory_gb`` (the digits, CIFAR, Mini-ImageNet at 84x84:
  faster, measured in docs/performance.md), or
* streamed: an image folder larger than that (ImageNet at 224x224 is about
  190 GB of pixels) is decoded from its files with Pillow as batches are read,
  so memory does not grow with the dataset.

Batches are pure functions of ``(seed, epoch, batch index)``
(:mod:`train.data_order`): epoch ``e``'s order is ``permutation(N)`` from
``default_rng([seed, e])``; global batch ``i`` is ``order[i*G:(i+1)*G]`` (the
incomplete last batch is dropped), augmented (pad-crop offsets, flips) by draws
from ``default_rng([seed, e, i, 1])``; process ``p`` of ``P`` reads only rows
``[p*G/P, (p+1)*G/P)`` of it, shaped ``[local_devices, m, H, W, C]``. Grain
(``grain.MapDataset`` → ``to_iter_dataset`` with ``grain.ReadOptions``) prepares
the batches in threads ahead of the training step (every core when decoding),
in order (:mod:`train.data_batches`). So resuming in the middle of an epoch is
exact, and a run on several hosts sees exactly the global batches of a one-host
run with as many devices.

This module reads ``config.dataset``: it checks it
(:func:`validate_dataset_config`) and builds the :class:`Dataset` of sources
(:func:`load_dataset`); :class:`TrainBatches` and :func:`eval_batches` are
re-exported from :mod:`train.data_batches`.

Sources (``config.dataset``):

* ``source='image_folder'``: ``root/split/label/image`` (the layout of
  ``tfds.folder_dataset.ImageFolder``: Mini-ImageNet, ImageNet, user data, the
  CIFAR-10 JPEGs), classes = sorted sub-folders, files in name order. Splits
  accept TFDS's ``name``, ``name[a:b]`` or ``name[a%:b%]`` slices, taken (like
  ``max_train_examples``/``max_eval_examples``) class by class in turn
  (:func:`class_interleaved_order`), so that every class is in a slice in
  proportion. A separate ``eval_split`` must hold the training split's class
  folders (labels are positions in the sorted class names).
* ``source='tfds'``: any TFDS image classification dataset by ``name``
  (``cifar10``, ``cifar100``, ...), read from ``data_dir``; TFDS split syntax
  (``train[:90%]``) works.
* ``source='digits'``: scikit-learn's bundled 8x8 digits (1797 images, no
  download), one split called ``train``.

With ``dataset.cache_dir`` set, the decoded arrays of each in-memory split are
cached there as ``.npy`` files (keyed by source, name/root, data_dir, split,
image size and decoder) and reused by later runs.

Validation: ``eval_split`` names a split, or ``holdout_per_class=k > 0`` carves
the last ``k`` examples of every class (in file order for image folders,
dataset order otherwise) out of ``train_split`` and uses them for evaluation.
"""

from __future__ import annotations

import os
import uuid

import numpy as np

from train import config_schema
from train.data_batches import Dataset, TrainBatches, check_batch_fits, eval_batches
from train.data_errors import DataConfigError, DatasetUnavailableError
from train.data_sources import ArraySource, FolderSource, decode_threads, to_memory
from train.data_tfds import tfds_source

__all__ = [
  "ArraySource",
  "FolderSource",
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

SOURCES = config_schema.choices("dataset.source")  # declared once, in the schema
AUGMENTATIONS = config_schema.choices("dataset.augment")


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
  """Checks of ``config.dataset`` that need no data and more than one field: names, splits.

  Each field's type and range (``source``, ``augment``, ``crop_padding``,
  ``image_size``, ...) is :mod:`train.config_schema`'s, checked before this.
  Raises ValueError (or its subclass :class:`DataConfigError`) naming the field,
  or :class:`DatasetUnavailableError` for a missing image folder.
  """
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
  if dc.holdout_per_class == 0 and not dc.eval_split:
    raise ValueError("Set config.dataset.eval_split or config.dataset.holdout_per_class > 0.")
  if _classes(dc):
    if dc.source != "image_folder":
      raise ValueError(
        f"config.dataset.classes selects class folders of an image folder; source "
        f"{dc.source!r} has none: leave config.dataset.classes empty."
      )
    if len(set(_classes(dc))) != len(_classes(dc)):
      raise ValueError(f"config.dataset.classes names a class twice: {dc.classes!r}.")
  if dc.source == "digits" and dc.image_size is not None:
    raise ValueError(
      f"config.dataset.image_size={dc.image_size} resizes image folders and TFDS images; the "
      "digits are 8×8 and are not resized: leave config.dataset.image_size None."
    )
  _check_mean_std(dc, SOURCE_CHANNELS.get(dc.source))
  _check_split(dc, "train_split")
  if dc.holdout_per_class == 0:
    _check_split(dc, "eval_split")
  if dc.source == "tfds":
    _check_tfds_name(dc)


# ----------------------------------------------------------------------------
# Sources.


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _split_name(spec: str) -> str:
  """The split a spec names: 'train' of 'train', 'train[:90%]' or ' train [a:b]'."""
  return spec.split("[", 1)[0].strip()


def _slice_split(spec: str, n: int):
  """'name', 'name[a:b]' or 'name[a%:b%]' (TFDS split syntax, read by TFDS) → (name, slice)."""
  import tensorflow_datasets as tfds

  name = _split_name(spec)
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
  names = _image_folder_class_names(root, split_name)
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


def class_interleaved_order(labels) -> np.ndarray:
  """Indices of ``labels`` class by class in turn: the first example of every class (in class
  order), then the second of every class, and so on (a class's examples keep their order).

  An image folder lists its files class after class, so its slices ('train[:90%]') and its
  first k examples (``max_train_examples``) are taken in this order instead: every class is
  represented in proportion, and complementary slices stay disjoint.
  """
  labels = np.asarray(labels)
  rank = np.zeros(len(labels), np.int64)  # an example's position within its class
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    rank[members] = np.arange(len(members))
  return np.lexsort((labels, rank))  # by position within the class, then by class


def _take_interleaved(labels, sl: slice) -> np.ndarray:
  """The indices a slice of :func:`class_interleaved_order` selects, in their listed order."""
  return np.sort(class_interleaved_order(labels)[sl])


def _image_folder_class_names(root: str, split_name: str) -> list[str]:
  split_dir = os.path.join(root, split_name)
  return sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))


def _check_eval_classes(dc) -> None:
  """An image folder's evaluation split must hold the training split's class folders.

  Labels are the positions of the class names (sorted, or ``config.dataset.classes``) in
  each split separately, so a class folder missing from one split, or extra in it, would
  give the same label to different classes in training and in evaluation.
  """
  if dc.source != "image_folder" or dc.holdout_per_class > 0 or _classes(dc):
    return  # one split, or classes named explicitly (each split must hold them all)
  root = os.path.expanduser(dc.root)
  train_name, eval_name = _split_name(dc.train_split), _split_name(dc.eval_split)
  if train_name == eval_name or not all(
    os.path.isdir(os.path.join(root, name)) for name in (train_name, eval_name)
  ):
    return  # one split; or a split missing, which loading it names
  train_classes = _image_folder_class_names(root, train_name)
  eval_classes = _image_folder_class_names(root, eval_name)
  if train_classes != eval_classes:
    missing = sorted(set(train_classes) - set(eval_classes))
    extra = sorted(set(eval_classes) - set(train_classes))
    raise DataConfigError(
      f"config.dataset.eval_split={dc.eval_split!r}: its class folders differ from those of "
      f"config.dataset.train_split={dc.train_split!r}"
      + (f" (missing there: {missing[:5]}{' ...' if len(missing) > 5 else ''})" if missing else "")
      + (f" (not in training: {extra[:5]}{' ...' if len(extra) > 5 else ''})" if extra else "")
      + ", so the same label would name different classes: give both splits the same class "
      "folders, or name the classes to use with config.dataset.classes='a,b,...'."
    )


def _image_folder_source(dc, split_spec):
  """The split's files as a :class:`FolderSource` (nothing decoded but the first image).

  A slice of the split ('train[:90%]') is taken in :func:`class_interleaved_order`.
  """
  root = os.path.expanduser(dc.root)
  split_name = _split_name(split_spec)
  paths, labels, names = _image_folder_files(root, split_name, _classes(dc))
  _, sl = _slice_split(split_spec, len(paths))
  if sl != slice(0, len(paths)):
    keep = _take_interleaved(labels, sl)
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
  if not paths:
    raise DataConfigError(
      f"The split {split_spec!r} of {root!r} is empty: check its slice (e.g. 'train[:100]')."
    )
  return FolderSource(paths, labels, dc.image_size), len(names)


def _read_digits(dc, split_spec, field: str):
  from sklearn.datasets import load_digits

  flat, target = load_digits(return_X_y=True)  # the 8×8 images, flattened
  images = np.round(np.reshape(flat, (-1, 8, 8)) * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = np.asarray(target).astype(np.int32)
  name, sl = _slice_split(split_spec, len(labels))
  if name != "train":
    raise DataConfigError(
      f"config.dataset.{field}={split_spec!r}: the digits dataset has one split, 'train': "
      "evaluate on a slice of it (eval_split='train[90%:]' with train_split='train[:90%]') or "
      "on held-out images (holdout_per_class=k with eval_split='')."
    )
  return images[sl], labels[sl], 10


def _fits_in_memory(dc, source) -> bool:
  """Whether the decoded pixels of ``source`` fit ``config.dataset.max_in_memory_gb``."""
  limit = dc.get("max_in_memory_gb", 4.0)
  return len(source) * int(np.prod(source.shape)) <= limit * 1e9


def _cache_path(dc, split_spec) -> str:
  """Where the decoded arrays of a split are cached (keyed by what determines them)."""
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
    + ([list(_classes(dc))] if _classes(dc) else [])
    # decoded without TensorFlow since issue 33: arrays it decoded are not reused
    + {"image_folder": ["pillow"], "tfds": ["tfds.data_source"]}.get(dc.source, [])
    # image-folder slices are taken class by class in turn (class_interleaved_order) since
    # issue 36's review: a slice cached before selected other images
    + (["interleaved"] if dc.source == "image_folder" and "[" in split_spec else []),
    sort_keys=True,
  )
  return os.path.join(os.path.expanduser(dc.cache_dir), hashlib.sha1(key.encode()).hexdigest()[:16])


def _load_cached(path: str):
  import json

  try:
    with open(path + ".json") as f:
      num_classes = json.load(f)["num_classes"]
    return ArraySource(np.load(path + ".images.npy"), np.load(path + ".labels.npy")), num_classes
  except (OSError, ValueError, KeyError):
    return None


def _save_cached(path: str, source: ArraySource, num_classes: int) -> None:
  import json

  os.makedirs(os.path.dirname(path), exist_ok=True)
  tag = f".tmp{os.getpid()}.{uuid.uuid4().hex[:12]}"  # hosts sharing cache_dir may share PIDs
  for suffix, array in ((".images.npy", source.images), (".labels.npy", source.labels)):
    with open(path + suffix + tag, "wb") as f:
      np.save(f, array)
    os.replace(path + suffix + tag, path + suffix)
  with open(path + ".json" + tag, "w") as f:  # Written last: marks the entry complete.
    json.dump({"num_classes": int(num_classes)}, f)
  os.replace(path + ".json" + tag, path + ".json")


def _source(dc, split_spec, field: str = "train_split"):
  """(source, number of classes) of a split: in memory if it fits, else streamed from disk.

  The digits are in memory; an image folder or a TFDS dataset is held in memory
  (decoded once, in threads; cached in ``dataset.cache_dir`` if set) when its
  decoded pixels fit ``dataset.max_in_memory_gb``, else decoded on every read.
  """
  if dc.source == "digits":
    images, labels, num_classes = _read_digits(dc, split_spec, field)
    return ArraySource(images, labels), num_classes
  path = _cache_path(dc, split_spec) if dc.cache_dir else None
  cached = _load_cached(path) if path else None
  if cached is not None:
    return cached
  if dc.source == "tfds":
    source, num_classes = tfds_source(dc, split_spec)
  else:
    source, num_classes = _image_folder_source(dc, split_spec)
  if not _fits_in_memory(dc, source):
    return source, num_classes
  source = to_memory(source)
  if path:
    _save_cached(path, source, num_classes)
  return source, num_classes


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


def _channel_sums(images) -> tuple[np.ndarray, np.ndarray, int]:
  """Per-channel sums of pixel values and of their squares (in [0, 1] units), and their count."""
  c = images.shape[-1]
  flat = images.reshape(-1, c)
  s = np.zeros(c)
  s2 = np.zeros(c)
  for start in range(0, len(flat), 1 << 22):
    chunk = flat[start : start + (1 << 22)].astype(np.float64) / 255.0
    s += chunk.sum(0)
    s2 += (chunk**2).sum(0)
  return s, s2, len(flat)


def _stats_of_sums(s, s2, n):
  mean = s / n
  std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
  return mean.astype(np.float32), std.astype(np.float32)


def _channel_stats(images):
  """Per-channel mean and std of uint8 images, in [0, 1] units (float64 sums)."""
  return _stats_of_sums(*_channel_sums(images))


# Streamed training sets without dataset.mean/std: the statistics of this many images,
# evenly spaced through the training set (every image of a smaller set).
STATS_SAMPLE = 5000


def _source_stats(source):
  """Per-channel mean and std of a training set: of :data:`STATS_SAMPLE` images evenly spaced
  through it (all of a smaller set), whether it is held in memory or streamed, so that
  ``dataset.max_in_memory_gb`` (which may change on resume) never changes the normalization.

  A streamed sample is decoded 32 images per thread at a time, so the memory it takes
  does not grow with it.
  """
  n = len(source)
  sample = np.unique(np.linspace(0, n - 1, min(n, STATS_SAMPLE)).round().astype(np.int64))
  if isinstance(source, ArraySource):
    return _channel_stats(source.images if len(sample) == n else source.images[sample])
  total = [np.zeros(source.shape[-1]), np.zeros(source.shape[-1]), 0]
  step = 32 * decode_threads()
  for start in range(0, len(sample), step):
    images = to_memory(source.subset(sample[start : start + step]), chunk=32).images
    for i, part in enumerate(_channel_sums(images)):
      total[i] += part
  return _stats_of_sums(*total)


def _first(source, k: int, interleave: bool):
  """The first k examples of ``source``; with ``interleave``, in :func:`class_interleaved_order`."""
  if interleave:
    return source.subset(_take_interleaved(source.labels, slice(0, k)))
  return source.subset(np.arange(min(k, len(source))))


def load_dataset(dc) -> Dataset:
  """The train and evaluation sources described by ``config.dataset`` (see the module docstring)."""
  validate_dataset_config(dc)
  _check_eval_classes(dc)  # listings only: refused before any image is decoded
  train, num_classes = _source(dc, dc.train_split)
  if dc.holdout_per_class > 0:
    mask = _holdout(train.labels, dc.holdout_per_class)
    evaluation = train.subset(np.flatnonzero(mask))
    train = train.subset(np.flatnonzero(~mask))
    eval_desc = f"last {dc.holdout_per_class} per class of {dc.train_split!r}"
  else:
    evaluation, _ = _source(dc, dc.eval_split, "eval_split")
    eval_desc = repr(dc.eval_split)
  if dc.train_per_class:
    train = train.subset(np.flatnonzero(_first_per_class(train.labels, dc.train_per_class)))
  interleave = dc.source == "image_folder"  # its files are listed class after class
  if dc.max_train_examples:
    train = _first(train, dc.max_train_examples, interleave)
  if dc.max_eval_examples:
    evaluation = _first(evaluation, dc.max_eval_examples, interleave)
  if tuple(evaluation.shape) != tuple(train.shape):
    raise DataConfigError(
      f"The evaluation images are {tuple(evaluation.shape)} but the training images "
      f"{tuple(train.shape)} (each split takes its size from its first image): set "
      "config.dataset.image_size=S to resize both to S×S."
    )
  _check_mean_std(dc, train.shape[-1])  # the channels now known for every source
  if dc.mean is not None and dc.std is not None:
    mean = np.asarray(dc.mean, np.float32)
    std = np.asarray(dc.std, np.float32)
  else:
    mean, std = _source_stats(train)
  name = dc.name if dc.source == "tfds" else (dc.root if dc.source == "image_folder" else "digits")
  where = "in memory" if train.in_memory else "streamed from disk"
  return Dataset(
    train,
    evaluation,
    int(num_classes),
    mean,
    std,
    description=(
      f"{dc.source}:{name} train {dc.train_split!r} ({len(train)} images "
      f"{tuple(train.shape)}, {where}), eval {eval_desc} ({len(evaluation)} images), "
      f"{num_classes} classes"
    ),
  )
