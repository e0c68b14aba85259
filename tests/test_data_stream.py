"""The streamed input pipeline: image folders decoded on the fly (Pillow) read through Grain.

Expectations are independent of the streamed path: the in-memory path (every
image decoded once, batches cut from arrays), the pure sampler functions of
:mod:`train.data_order`, and pixels decoded by TensorFlow 2.21 stored in
``tests/data/decode_reference``.
"""

import pathlib
import time

import numpy as np
import pytest

from configs import default
from tests.test_input_pipeline import batches
from train import data_order
from train import input_pipeline as ip
from train.data_sources import decode_image

REFERENCE = pathlib.Path(__file__).parent / "data" / "decode_reference"


def folder_config(root, **kw):
  dc = default.get_config().dataset
  dc.source, dc.root, dc.eval_split, dc.holdout_per_class = "image_folder", str(root), "", 2
  dc.augment, dc.crop_padding = "crop_flip", 2
  for k, v in kw.items():
    setattr(dc, k, v)
  return dc


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
  """3 classes × 8 JPEGs of 10x12 random pixels (distinct per image)."""
  from PIL import Image

  root = tmp_path_factory.mktemp("jpegs")
  rng = np.random.default_rng(0)
  for name in ("ant", "bee", "cow"):
    d = root / "train" / name
    d.mkdir(parents=True)
    for i in range(8):
      Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(d / f"{i:02d}.jpg")
  return root


def both(root, **kw):
  """The same folder held in memory and streamed from disk."""
  memory = ip.load_dataset(folder_config(root, **kw))
  streamed = ip.load_dataset(folder_config(root, max_in_memory_gb=0.0, **kw))
  assert memory.train.in_memory and not streamed.train.in_memory
  return memory, streamed


def make_batches(data, processes=1, index=0, local_devices=2, seed=5):
  """2 images per device, crop-flip with padding 2 (test_input_pipeline's batches)."""
  return batches(data, processes, index, local_devices, seed=seed)


def test_streamed_batches_equal_the_in_memory_ones(jpeg_folder):
  memory, streamed = both(jpeg_folder)
  assert len(streamed.train_labels) == 18 and len(streamed.eval_labels) == 6
  np.testing.assert_array_equal(memory.mean, streamed.mean)  # every image: sample = whole set
  a, b = make_batches(memory), make_batches(streamed)
  for epoch in (0, 3):
    for x, y in zip(a.epoch(epoch), b.epoch(epoch), strict=True):
      np.testing.assert_array_equal(x["image"], y["image"])
      np.testing.assert_array_equal(x["label"], y["label"])
  kw = dict(per_device_batch_size=4, local_devices=1, process_index=0, process_count=1)
  for x, y in zip(ip.eval_batches(memory, **kw), ip.eval_batches(streamed, **kw), strict=True):
    for k in ("image", "label", "mask"):
      np.testing.assert_array_equal(x[k], y[k])


def test_normalization_is_the_same_sample_in_memory_and_streamed(jpeg_folder, monkeypatch):
  """A set larger than the statistics sample: both paths use the same 5 evenly spaced images
  (so max_in_memory_gb, which may change on resume, never changes the normalization)."""
  monkeypatch.setattr(ip, "STATS_SAMPLE", 5)
  memory, streamed = both(jpeg_folder)
  np.testing.assert_array_equal(memory.mean, streamed.mean)
  np.testing.assert_array_equal(memory.std, streamed.std)
  # Independently: indices 0, 4, 8(.5 → 8), 13, 17 of the 18 training images.
  pick = memory.train_images[[0, 4, 8, 13, 17]].reshape(-1, 3).astype(np.float64) / 255.0
  np.testing.assert_allclose(memory.mean, pick.mean(0), rtol=1e-6)
  np.testing.assert_allclose(memory.std, pick.std(0), rtol=1e-5)


def test_streamed_epoch_is_the_sampler_order_and_resumes_anywhere(jpeg_folder):
  _, streamed = both(jpeg_folder)
  b = make_batches(streamed)
  n, g = 18, 4
  full = list(b.epoch(2))
  assert len(full) == n // g == b.steps_per_epoch
  # Labels follow data_order's permutation of the training examples.
  order = data_order.epoch_order(5, 2, n)
  expected = streamed.train_labels[order[: len(full) * g]].reshape(len(full), 2, 2)
  np.testing.assert_array_equal(np.stack([x["label"] for x in full]), expected)
  for start in range(len(full)):  # resumed at every batch: the same tail
    tail = list(make_batches(streamed).epoch(2, start=start))
    assert len(tail) == len(full) - start
    for x, y in zip(tail, full[start:]):
      np.testing.assert_array_equal(x["image"], y["image"])
  assert b.batches_served == len(full) and b.wait_seconds >= 0.0


def test_processes_read_disjoint_shares_that_make_the_global_batch(jpeg_folder):
  _, streamed = both(jpeg_folder)
  whole = list(make_batches(streamed, local_devices=2).epoch(1))
  parts = [list(make_batches(streamed, 2, p, local_devices=1).epoch(1)) for p in range(2)]
  for i, w in enumerate(whole):
    labels = [parts[p][i]["label"] for p in range(2)]
    for k in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([parts[p][i][k] for p in range(2)]), w[k])
    # Disjoint examples: the global batch's indices split into two halves with no overlap.
    idx = data_order.global_batch_indices(data_order.epoch_order(5, 1, 18), i, 4)
    halves = [set(idx[data_order.process_rows(p, 2)]) for p in range(2)]
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 4
    np.testing.assert_array_equal(np.concatenate(labels).ravel(), streamed.train_labels[idx])


def test_pillow_decoding_is_close_to_tensorflows():
  """Pillow vs TensorFlow 2.21's decode_image / resize(antialias=True) on stored files.

  JPEG decoders differ by a few levels (of 255) on some pixels; PNGs decode
  identically; resizing adds at most one level.
  """
  ref = np.load(REFERENCE / "tensorflow_2.21_decoded.npz")
  for key in ref.files:
    name, size = key.split(":")
    pixels = decode_image(str(REFERENCE / name), None if size == "full" else int(size))
    assert pixels.shape == ref[key].shape and pixels.dtype == np.uint8
    diff = np.abs(pixels.astype(int) - ref[key].astype(int))
    if name.endswith(".png"):
      assert diff.max() <= (0 if size == "full" else 1), key
    else:
      assert diff.max() <= 6 and diff.mean() <= 1.5, key


def test_streamed_bad_image_is_named_when_read(jpeg_folder, tmp_path):
  import shutil

  root = tmp_path / "copy"
  shutil.copytree(jpeg_folder, root)
  bad = root / "train" / "bee" / "03.jpg"
  bad.write_bytes(b"not a jpeg")
  with pytest.raises(ip.DataConfigError, match=r"Cannot decode image .*bee/03\.jpg"):
    ip.load_dataset(folder_config(root))  # in memory: decoded up front
  streamed = ip.load_dataset(
    folder_config(root, max_in_memory_gb=0.0, mean=(0.5,) * 3, std=(0.2,) * 3)
  )
  with pytest.raises(ip.DataConfigError, match=r"Cannot decode image .*bee/03\.jpg"):
    for _ in make_batches(streamed).epoch(0):
      pass


def test_streamed_image_of_another_size_is_named(jpeg_folder, tmp_path):
  import shutil

  from PIL import Image

  root = tmp_path / "copy"
  shutil.copytree(jpeg_folder, root)
  Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(root / "train" / "cow" / "05.jpg")
  dc = folder_config(root, max_in_memory_gb=0.0, mean=(0.5,) * 3, std=(0.2,) * 3)
  streamed = ip.load_dataset(dc)
  with pytest.raises(ip.DataConfigError, match=r"cow/05\.jpg' is 7x7.*image_size"):
    for _ in make_batches(streamed).epoch(0):
      pass
  # With image_size every image is resized: no error, the shape is the configured one.
  dc.image_size = 6
  resized = ip.load_dataset(dc)
  assert resized.image_shape == (6, 6, 3)
  assert next(make_batches(resized).epoch(0))["image"].shape == (2, 2, 6, 6, 3)


def test_batches_at_are_the_batches_of_those_epochs_and_indices(jpeg_folder):
  """Any (epoch, index) pairs, through Grain's threads: each equals the batch read directly."""
  _, streamed = both(jpeg_folder)
  b = make_batches(streamed)
  pairs = [(3, 1), (0, 2), (3, 0), (7, 3)]
  got = list(b.batches_at(pairs))
  assert len(got) == len(pairs)
  for (epoch, index), x in zip(pairs, got):
    want = make_batches(streamed).batch(epoch, index)
    np.testing.assert_array_equal(x["image"], want["image"])
    np.testing.assert_array_equal(x["label"], want["label"])


def test_to_memory_reads_labels_with_the_images_and_stops_at_a_bad_chunk():
  """Labels come from the same reads as the images (a TFDS record decodes both: its .labels
  would decode every image again), and a failing chunk drops the chunks not started yet."""
  from train.data_sources import to_memory

  class Counting:
    shape, in_memory = (1, 1, 1), False

    def __init__(self, bad_start=None):
      self.starts, self.bad_start = [], bad_start

    def __len__(self):
      return 40

    @property
    def labels(self):
      raise AssertionError("labels must come from take()")

    def take(self, indices):
      self.starts.append(int(indices[0]))
      if indices[0] == self.bad_start:
        raise ip.DataConfigError("bad chunk")
      if self.bad_start is not None:
        time.sleep(0.05)  # a chunk's decoding takes a while: the error is seen during chunk 1
      return np.asarray(indices, np.uint8).reshape(-1, 1, 1, 1), np.asarray(indices) % 3

  src = Counting()
  got = to_memory(src, threads=1, chunk=4)
  np.testing.assert_array_equal(got.labels, np.arange(40) % 3)
  np.testing.assert_array_equal(got.images[:, 0, 0, 0], np.arange(40))
  bad = Counting(bad_start=0)
  with pytest.raises(ip.DataConfigError, match="bad chunk"):
    to_memory(bad, threads=1, chunk=4)
  assert len(bad.starts) < 10  # not all ten chunks were decoded before the error came out
