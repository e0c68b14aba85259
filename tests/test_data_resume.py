"""Training on an image folder streamed from disk: exact resume under pmap and mesh.

The program (train/train.py, 4 CPU devices) trains a tiny CNN on a generated
JPEG folder decoded on the fly (``dataset.max_in_memory_gb=0``, pad-crop-flip
augmentation). Expectations: the uninterrupted run (a run stopped by a real
SIGTERM mid-epoch and resumed must end bit-exact with it), and the same run
with the folder held in memory (the same batches, so the same records).
"""

import json
import os
import re

import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from train import train as train_lib

pytestmark = pytest.mark.skipif(jax.local_device_count() != 4, reason="needs 4 devices")
TIMINGS = ("images_per_sec", "data_wait_share")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """2 classes × 22 JPEGs of 8x8 random pixels (2 per class held out: 40 training images)."""
  from PIL import Image

  root = tmp_path_factory.mktemp("stream")
  rng = np.random.default_rng(1)
  for name in ("left", "right"):
    (root / "train" / name).mkdir(parents=True)
    for i in range(22):
      pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / "train" / name / f"{i:03d}.jpg")
  return root


def config(folder, parallelism, **kw):
  c = tiny_config(
    parallelism=parallelism,
    tensorboard=False,
    **{
      "dataset.source": "image_folder",
      "dataset.root": str(folder),
      "dataset.holdout_per_class": 2,
      "dataset.max_train_examples": None,
      "dataset.augment": "crop_flip",
      "dataset.crop_padding": 2,
      "dataset.max_in_memory_gb": 0.0,
    },
  )
  for k, v in kw.items():
    c[k] = v
  return c


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


@pytest.mark.parametrize("parallelism", ["pmap", "mesh"])
def test_a_streamed_run_interrupted_mid_epoch_resumes_bit_exact(folder, tmp_path, parallelism):
  full = str(tmp_path / "full")
  summary = train_lib.train_and_evaluate(config(folder, parallelism), full)
  assert summary["status"] == "completed" and summary["steps_per_epoch"] == 5
  assert "streamed from disk" in summary["dataset"]
  cut = str(tmp_path / "cut")
  first = train_lib.train_and_evaluate(
    config(folder, parallelism, simulate_preemption_at_step=7), cut
  )
  assert first["status"] == "interrupted" and 5 < first["step"] < 10  # inside epoch 2
  second = train_lib.train_and_evaluate(config(folder, parallelism), cut)
  assert second["status"] == "completed" and second["step"] == 10
  assert records(cut) == records(full)  # bit for bit
  assert second["final_eval_accuracy"] == summary["final_eval_accuracy"]
  rows = [json.loads(line) for line in open(os.path.join(full, "metrics.jsonl"))]
  assert all(0.0 <= r["data_wait_share"] <= 1.0 for r in rows)
  if parallelism == "pmap":  # held in memory instead: the same batches, the same run
    memory = str(tmp_path / "memory")
    c = config(folder, parallelism)
    c.dataset.max_in_memory_gb = 4.0
    assert "in memory" in train_lib.train_and_evaluate(c, memory)["dataset"]
    assert records(memory) == records(full)


def test_an_undecodable_image_met_mid_training_is_one_error_line(folder, tmp_path):
  """Streamed, the bad file is met in the middle of an epoch: one ``error:`` line, exit 2, and
  a checkpoint of the steps before it, so that nothing is lost: once the file is replaced,
  the same command resumes at the batch that failed and ends as a run that never met it."""
  import shutil
  import subprocess
  import sys

  root = tmp_path / "copy"
  shutil.copytree(folder, root)
  bad = root / "train" / "right" / "001.jpg"  # batch 10 of 20 in epoch 1's order (seed 0)
  good = bad.read_bytes()
  bad.write_bytes(b"not a jpeg")
  root_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def train(workdir):
    return subprocess.run(
      [sys.executable, "-m", "train", "--config", "configs/quickstart.py"]
      + ["--workdir", str(workdir), "--config.norms=", "--config.norm=bn"]
      + ["--config.dataset.source=image_folder", f"--config.dataset.root={root}"]
      + ["--config.dataset.holdout_per_class=2", "--config.dataset.max_in_memory_gb=0"]
      + ["--config.dataset.mean=(0.5,0.5,0.5)", "--config.dataset.std=(0.2,0.2,0.2)"]
      + ["--config.num_epochs=1", "--config.progress_bar=false", "--config.tensorboard=false"]
      + ["--config.per_device_batch_size=2"],  # 20 steps: the bad image is met mid-epoch
      cwd=root_dir,
      env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"),
      capture_output=True,
      text=True,
      timeout=300,
    )

  done = train(tmp_path / "w")
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
  assert lines[0].startswith("error: Cannot decode image") and str(bad) in lines[0]
  saved = re.search(r"A checkpoint of step (\d+) .* the same command resumes there", lines[0])
  assert saved and int(saved.group(1)) > 0, lines[0]
  bad.write_bytes(good)  # the way out the message names: replace the file
  resumed = train(tmp_path / "w")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from step {saved.group(1)} " in resumed.stdout
  straight = train(tmp_path / "straight")  # the same folder, never broken
  assert straight.returncode == 0, straight.stderr[-3000:]
  assert records(tmp_path / "w") == records(tmp_path / "straight")  # bit for bit
