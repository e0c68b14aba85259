"""configs/imagenet_resnet50.py end to end on a tiny generated ImageNet-layout folder.

The tiny folder has ImageNet's layout (``train/<wnid>/*.JPEG``,
``val/<wnid>/*.JPEG``); the run keeps the config's network (ResNet-50, the
ImageNet stem), its 4 images per device, its learning-rate rule and its
augmentation, with the images resized to 32 × 32 and one epoch. Expectation:
two processes × 1 device streaming the folder from disk train exactly what one
process × 2 devices trains with the folder in memory.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_train_multihost import env, launch_two_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WNIDS = ("n01440764", "n01443537")


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
  from PIL import Image

  root = tmp_path_factory.mktemp("imagenet")
  rng = np.random.default_rng(0)
  for split, n in (("train", 8), ("val", 2)):
    for wnid in WNIDS:
      (root / split / wnid).mkdir(parents=True)
      for i in range(n):
        h, w = rng.integers(40, 60, 2)  # ImageNet's sizes vary: every image is resized
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG")
  return root


def args(root, workdir, *extra):
  return [
    sys.executable,
    "-m",
    "train",
    "--config",
    "configs/imagenet_resnet50.py",
    "--workdir",
    str(workdir),
    f"--config.dataset.root={root}",
    "--config.dataset.image_size=32",
    "--config.dataset.crop_padding=4",
    "--config.num_epochs=1",
    "--config.eval_per_device_batch_size=2",
    "--config.progress_bar=false",
    "--config.tensorboard=false",
    *extra,
  ]


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_imagenet_config_on_two_processes_equals_one(tiny_imagenet, tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  launch_two_processes(
    args(tiny_imagenet, multi, "--config.dataset.max_in_memory_gb=0"), devices=1, timeout=500
  )
  done = subprocess.run(
    args(tiny_imagenet, single), cwd=ROOT, env=env(2), capture_output=True, text=True, timeout=500
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  summary = json.load(open(multi / "summary.json"))
  assert summary["processes"] == 2 and summary["devices"] == 2 and summary["step"] == 2
  assert "streamed from disk" in summary["dataset"] and "(32, 32, 3)" in summary["dataset"]
  assert summary["config"]["model"] == "resnet50" and summary["config"]["norm"] == "mbn"
  a, b = records(multi), records(single)
  assert [r["step"] for r in a] == [r["step"] for r in b] == [2]
  # lr = 0.1 x m / 128, the paper's Mini-ImageNet rule, m = 4 images per device.
  assert a[0]["learning_rate"] == pytest.approx(0.1 * 4 / 128)
  for k in ("train_loss", "eval_loss"):
    assert a[0][k] == pytest.approx(b[0][k], rel=1e-5, abs=1e-6), k
  for k in ("train_accuracy", "eval_accuracy"):
    assert a[0][k] == b[0][k], k


def test_the_tfds_source_unprepared_is_one_error_line(tmp_path):
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "train",
      "--config",
      "configs/imagenet_resnet50.py:tfds",
      "--workdir",
      str(tmp_path / "w"),
      f"--config.dataset.data_dir={tmp_path}",
    ],
    cwd=ROOT,
    env=env(1),
    capture_output=True,
    text=True,
    timeout=300,
  )
  last = done.stderr.strip().splitlines()[-1]
  assert done.returncode == 2 and last.startswith("error: "), done.stderr[-2000:]
  for needle in ("'imagenet2012' is not prepared", "--file_format=array_record", "tfds-prepare"):
    assert needle in done.stderr, needle
