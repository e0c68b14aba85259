"""train/input_pipeline.py: sources, holdouts, deterministic per-process batches, errors."""

import numpy as np
import pytest

from configs import default
from train import input_pipeline as ip


def dataset_config(**kw):
  dc = default.get_config().dataset
  dc.source, dc.name, dc.eval_split, dc.holdout_per_class, dc.augment = (
    "digits",
    "digits",
    "",
    36,
    "none",
  )
  for k, v in kw.items():
    setattr(dc, k, v)
  return dc


def test_digits_holdout_is_last_k_of_each_class():
  from sklearn.datasets import load_digits

  labels = load_digits().target
  data = ip.load_dataset(dataset_config())
  assert data.train_images.shape[1:] == (8, 8, 1) and data.train_images.dtype == np.uint8
  assert len(data.eval_labels) == 360 and len(data.train_labels) == 1797 - 360
  assert np.all(np.bincount(data.eval_labels) == 36)
  # The held-out examples are, per class, the last 36 in dataset order.
  expected = np.concatenate([np.flatnonzero(labels == c)[-36:] for c in range(10)])
  np.testing.assert_array_equal(np.sort(labels[expected]), np.sort(data.eval_labels))
  assert data.num_classes == 10 and data.mean.shape == (1,) and data.std[0] > 0


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  from PIL import Image

  root = tmp_path_factory.mktemp("folder")
  for c, name in enumerate(["cat", "dog", "emu"]):
    d = root / "train" / name
    d.mkdir(parents=True)
    for i in range(6):
      pixels = np.full((8, 8, 3), 10 * i + 100 * c, np.uint8)
      Image.fromarray(pixels).save(d / f"{i:04d}.png")
  return root


def test_image_folder_holdout_per_class_uses_file_order(image_folder):
  data = ip.load_dataset(
    dataset_config(source="image_folder", root=str(image_folder), holdout_per_class=2)
  )
  assert data.num_classes == 3 and data.train_images.shape == (12, 8, 8, 3)
  # Files 0004 and 0005 of every class (pixel 10*i + 100*c) are held out.
  held = sorted(int(v) for v in data.eval_images[:, 0, 0, 0])
  assert held == sorted(10 * i + 100 * c for c in range(3) for i in (4, 5))
  assert sorted(np.unique(data.eval_labels)) == [0, 1, 2]


def test_image_folder_classes_selects_and_relabels_in_the_given_order(image_folder):
  data = ip.load_dataset(
    dataset_config(
      source="image_folder", root=str(image_folder), holdout_per_class=2, classes="emu,cat"
    )
  )
  assert data.num_classes == 2 and data.train_images.shape == (8, 8, 8, 3)
  # emu (pixel 200 + 10 i) is label 0, cat (10 i) label 1; dog is gone.
  for images, labels in (
    (data.train_images, data.train_labels),
    (data.eval_images, data.eval_labels),
  ):
    pixel = images[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(labels, np.where(pixel >= 200, 0, 1))
  with pytest.raises(ip.DataConfigError, match=r"\['gnu'\].*'cat', 'dog', 'emu'"):
    ip.load_dataset(
      dataset_config(source="image_folder", root=str(image_folder), classes="cat,gnu")
    )
  with pytest.raises(ValueError, match="classes selects class folders"):
    ip.validate_dataset_config(dataset_config(classes="cat"))


def pixel_ids(images):
  """The fixture's images by their pixel value 10·i + 100·c (file i of class c)."""
  return sorted(int(v) for v in images[:, 0, 0, 0])


def test_image_folder_split_slices_and_missing_split(image_folder):
  """A slice of an image folder is taken class by class in turn: 'train[:50%]' holds the
  first 3 files of each of the 3 classes (not all of cat and half of dog), 'train[50%:]'
  the rest; together every file once."""
  data = ip.load_dataset(
    dataset_config(
      source="image_folder",
      root=str(image_folder),
      holdout_per_class=0,
      train_split="train[:50%]",
      eval_split="train[50%:]",
    )
  )
  assert pixel_ids(data.train_images) == sorted(
    10 * i + 100 * c for c in range(3) for i in (0, 1, 2)
  )
  assert pixel_ids(data.eval_images) == sorted(
    10 * i + 100 * c for c in range(3) for i in (3, 4, 5)
  )
  assert list(data.train_labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # listed in file order
  with pytest.raises(ip.DatasetUnavailableError, match="no split 'test'"):
    ip.load_dataset(
      dataset_config(
        source="image_folder", root=str(image_folder), holdout_per_class=0, eval_split="test"
      )
    )


def test_class_interleaved_order_takes_each_class_in_turn():
  # Hand-derived: position within the class first, then the class.
  labels = [0, 0, 0, 1, 1, 2]
  np.testing.assert_array_equal(ip.class_interleaved_order(labels), [0, 3, 5, 1, 4, 2])
  np.testing.assert_array_equal(ip.class_interleaved_order([2, 0, 2, 0]), [1, 0, 3, 2])


def test_first_k_of_an_image_folder_has_every_class(image_folder):
  """max_train_examples / max_eval_examples take an image folder class by class in turn."""
  data = ip.load_dataset(
    dataset_config(
      source="image_folder",
      root=str(image_folder),
      holdout_per_class=2,  # eval: files 4, 5 of every class; train: files 0-3
      max_train_examples=4,
      max_eval_examples=3,
    )
  )
  assert pixel_ids(data.train_images) == [0, 10, 100, 200]  # file 0 of each, then cat's file 1
  assert pixel_ids(data.eval_images) == [40, 140, 240]  # file 4 of each class


def test_eval_split_must_hold_the_training_class_folders(image_folder, tmp_path):
  from PIL import Image

  root = tmp_path / "root"
  for split, names in (("train", ["cat", "dog", "emu"]), ("val", ["cat", "emu"])):
    for name in names:
      (root / split / name).mkdir(parents=True)
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / name / "0.png")
  (root / "train" / "dog" / "1.png").write_bytes(b"not an image")  # never decoded: refused first
  config = dataset_config(source="image_folder", root=str(root), holdout_per_class=0)
  config.eval_split = "val"
  # Without the check, val's 'emu' would be label 1, training's 'dog'. It is refused from the
  # folder listings, before the training split is decoded (that would meet dog/1.png).
  with pytest.raises(ip.DataConfigError, match=r"eval_split='val'.*missing there: \['dog'\]"):
    ip.load_dataset(config)
  config.classes = "cat,emu"  # the way out the message names: both splits hold these
  data = ip.load_dataset(config)
  assert data.num_classes == 2 and list(data.eval_labels) == [0, 1]


def test_eval_images_of_another_size_are_refused(tmp_path):
  from PIL import Image

  root = tmp_path / "root"
  for split, size in (("train", 8), ("val", 12)):
    (root / split / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / split / "cat" / "0.png")
  config = dataset_config(source="image_folder", root=str(root), holdout_per_class=0)
  config.eval_split = "val"
  with pytest.raises(ip.DataConfigError, match=r"\(12, 12, 3\).*config.dataset.image_size"):
    ip.load_dataset(config)
  config.image_size = 8
  assert ip.load_dataset(config).eval_images.shape == (1, 8, 8, 3)


def test_digits_refuse_image_size_and_other_splits_by_field():
  with pytest.raises(ValueError, match="config.dataset.image_size=32 .* digits are 8×8"):
    ip.load_dataset(dataset_config(image_size=32))
  with pytest.raises(ip.DataConfigError, match=r"config.dataset.eval_split='test'.*holdout_per"):
    ip.load_dataset(dataset_config(holdout_per_class=0, eval_split="test"))


def test_missing_image_folder_fails_at_once(tmp_path):
  with pytest.raises(ip.DatasetUnavailableError, match="does not exist"):
    ip.load_dataset(dataset_config(source="image_folder", root=str(tmp_path / "nope")))


def test_missing_tfds_dataset_names_it_and_the_ways_out(tmp_path):
  dc = dataset_config(
    source="tfds",
    name="cifar10",
    data_dir=str(tmp_path),
    download=False,
    holdout_per_class=0,
    eval_split="test",
  )
  with pytest.raises(ip.DatasetUnavailableError) as e:
    ip.load_dataset(dc)
  msg = str(e.value)
  assert "'cifar10'" in msg and "data_dir" in msg and "image_folder" in msg


def test_unknown_tfds_name(tmp_path):
  dc = dataset_config(
    source="tfds",
    name="no_such_dataset_xyz",
    data_dir=str(tmp_path),
    holdout_per_class=0,
    eval_split="test",
  )
  with pytest.raises(ValueError, match="no_such_dataset_xyz"):
    ip.load_dataset(dc)


def small_data(n=40):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  labels = np.arange(n, dtype=np.int32)  # Label = index: shows which example is where.
  return ip.Dataset(
    ip.ArraySource(images, labels),
    ip.ArraySource(images[:10], labels[:10]),
    n,
    np.zeros(3, np.float32),
    np.ones(3, np.float32),
    "test",
  )


def batches(data, processes, index, local_devices, augment="crop_flip", seed=3):
  return ip.TrainBatches(
    data,
    per_device_batch_size=2,
    local_devices=local_devices,
    process_index=index,
    process_count=processes,
    seed=seed,
    augment=augment,
    pad=2,
  )


def test_batches_are_a_pure_function_of_seed_epoch_index():
  data = small_data()
  a, b = batches(data, 1, 0, 4), batches(data, 1, 0, 4)
  assert a.steps_per_epoch == 5 and a.global_batch == 8
  for epoch in (0, 1):
    for i in (0, 3):
      x, y = a.batch(epoch, i), b.batch(epoch, i)
      np.testing.assert_array_equal(x["image"], y["image"])
      np.testing.assert_array_equal(x["label"], y["label"])
  assert not np.array_equal(a.batch(0, 0)["label"], a.batch(1, 0)["label"])
  # Resuming mid-epoch: the iterator from batch 2 yields batches 2, 3, 4.
  tail = list(a.epoch(1, start=2))
  assert len(tail) == 3
  np.testing.assert_array_equal(tail[0]["image"], a.batch(1, 2)["image"])
  # One epoch visits distinct examples.
  seen = np.concatenate([bt["label"].ravel() for bt in a.epoch(0)])
  assert len(np.unique(seen)) == len(seen) == 40
  assert a.batch(0, 0)["image"].shape == (4, 2, 8, 8, 3)


def test_processes_split_each_global_batch():
  data = small_data()
  whole = batches(data, 1, 0, 4).batch(2, 1)
  parts = [batches(data, 2, p, 2).batch(2, 1) for p in range(2)]
  for k in ("image", "label"):
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_augmentation_is_pad_crop_and_flip():
  data = small_data()
  plain = batches(data, 1, 0, 1, augment="none").batch(0, 0)
  aug = batches(data, 1, 0, 1).batch(0, 0)
  np.testing.assert_array_equal(plain["label"], aug["label"])
  assert not np.array_equal(plain["image"], aug["image"])
  # Each augmented image is a shifted/flipped window of the zero-padded original.
  for img, lab in zip(aug["image"].reshape(-1, 8, 8, 3), aug["label"].ravel()):
    padded = np.pad(data.train_images[lab].astype(np.float32) / 255, ((2, 2), (2, 2), (0, 0)))
    windows = [padded[dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
    assert any(np.allclose(img, w) or np.allclose(img, w[:, ::-1]) for w in windows)


def test_eval_batches_cover_every_example_once():
  data = small_data()
  got = []
  for p in range(2):
    for bt in ip.eval_batches(
      data, per_device_batch_size=3, local_devices=2, process_index=p, process_count=2
    ):
      assert bt["image"].shape == (2, 3, 8, 8, 3)
      got.extend(bt["label"][bt["mask"]].tolist())
  assert sorted(got) == list(range(10))


def test_first_per_class_is_balanced_and_keeps_order():
  from train import input_pipeline as ip

  labels = np.array([0, 0, 1, 0, 1, 1, 2, 1, 2, 0])
  mask = ip._first_per_class(labels, 2)
  np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2, 4, 6, 8])


def test_decoded_cache_is_reused(image_folder, tmp_path):
  dc = dataset_config(
    source="image_folder",
    root=str(image_folder),
    holdout_per_class=2,
    cache_dir=str(tmp_path / "cache"),
  )
  first = ip.load_dataset(dc)
  assert len(list((tmp_path / "cache").glob("*.images.npy"))) == 1
  again = ip.load_dataset(dc)
  np.testing.assert_array_equal(first.train_images, again.train_images)
  np.testing.assert_array_equal(first.eval_labels, again.eval_labels)
