"""TFDS datasets read through ``tfds.data_source`` (no TensorFlow), on TFDS's mocked data.

``tfds.testing.mock_data`` stands in for a prepared dataset (nothing can be
downloaded here); the expectation is what ``tfds.data_source`` itself returns.
"""

import numpy as np
import pytest

from configs import default
from train import data_order
from train import input_pipeline as ip


def tfds_config(tmp_path, **kw):
  dc = default.get_config().dataset
  dc.source, dc.name, dc.data_dir = "tfds", "cifar10", str(tmp_path)
  dc.holdout_per_class, dc.eval_split, dc.check_download_host = 0, "test", False
  for k, v in kw.items():
    setattr(dc, k, v)
  return dc


def test_tfds_examples_are_the_data_sources_in_memory_or_streamed(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    direct = tfds.data_source("cifar10", split="train", data_dir=str(tmp_path))
    expected = [direct[i] for i in range(len(direct))]
    dc = tfds_config(tmp_path, augment="none")
    memory = ip.load_dataset(dc)
    dc.max_in_memory_gb = 0.0
    streamed = ip.load_dataset(dc)
    assert memory.train.in_memory and not streamed.train.in_memory
    assert len(streamed.train) == len(expected) == 12 and streamed.num_classes == 10
    batches = [
      ip.TrainBatches(
        d,
        per_device_batch_size=2,
        local_devices=2,
        process_index=0,
        process_count=1,
        seed=1,
        augment="none",
        pad=0,
      )
      for d in (memory, streamed)
    ]
    order = data_order.epoch_order(1, 0, 12)
    for i, (x, y) in enumerate(zip(*(b.epoch(0) for b in batches), strict=True)):
      np.testing.assert_array_equal(x["image"], y["image"])
      idx = order[4 * i : 4 * i + 4]
      want = np.stack([expected[j]["image"] for j in idx]).astype(np.float32) / 255
      want = (want - streamed.mean) / streamed.std
      np.testing.assert_allclose(y["image"].reshape(want.shape), want, rtol=1e-6, atol=1e-6)
      np.testing.assert_array_equal(y["label"].ravel(), [expected[j]["label"] for j in idx])


def test_tfds_resize_and_holdout_by_labels(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=100):
    direct = tfds.data_source("cifar10", split="train", data_dir=str(tmp_path))
    labels = np.asarray([direct[i]["label"] for i in range(len(direct))])
    k = 1
    dc = tfds_config(tmp_path, holdout_per_class=k, image_size=16, max_in_memory_gb=0.0)
    assert np.bincount(labels).min() > k  # every class can give k away
    data = ip.load_dataset(dc)
    assert data.image_shape == (16, 16, 3)
    # The held-out examples are the last k of every class, in dataset order.
    held = np.concatenate([np.flatnonzero(labels == c)[-k:] for c in np.unique(labels)])
    np.testing.assert_array_equal(np.sort(data.eval_labels), np.sort(labels[held]))
    assert len(data.train) == len(labels) - len(held)


def test_an_unprepared_tfds_dataset_says_what_to_run(tmp_path):
  dc = tfds_config(tmp_path, download=False)
  with pytest.raises(ip.DatasetUnavailableError) as e:
    ip.load_dataset(dc)
  msg = str(e.value)
  for needle in (
    "'cifar10' is not prepared",
    "tfds-prepare",
    "--file_format=array_record",
    "image_folder",
  ):
    assert needle in msg, needle


def test_the_imagenet_configs_tfds_source_streams_resized_examples(tmp_path):
  """configs/imagenet_resnet50.py:tfds on mocked imagenet2012 (images of varying size)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from PIL import Image

  from configs import imagenet_resnet50

  dc = imagenet_resnet50.get_config("tfds").dataset
  dc.data_dir, dc.image_size, dc.mean, dc.std = str(tmp_path), 16, (0.0,) * 3, (1.0,) * 3
  dc.download, dc.check_download_host, dc.augment = True, False, "none"  # mock_data prepares
  dc.max_in_memory_gb = 0.0  # ImageNet itself streams by its size; 6 mocked images would fit
  with tfds.testing.mock_data(num_examples=6):
    direct = tfds.data_source("imagenet2012", split="validation", data_dir=str(tmp_path))
    data = ip.load_dataset(dc)
    assert not data.train.in_memory and data.num_classes == 1000
    assert data.image_shape == (16, 16, 3) and len(data.eval) == len(direct) == 6
    got = next(
      ip.eval_batches(
        data, per_device_batch_size=6, local_devices=1, process_index=0, process_count=1
      )
    )
    for row in range(6):
      record = direct[row]
      want = Image.fromarray(record["image"]).resize((16, 16), Image.Resampling.BILINEAR)
      np.testing.assert_allclose(
        got["image"][0, row], np.asarray(want, np.float32) / 255, rtol=0, atol=1e-6
      )
      assert got["label"][0, row] == record["label"]
