"""Failure behaviour (docs/training.md, "Failure behaviour"): damaged checkpoints, bad data,
bad workdirs, a deleted config.json. Non-finite numbers: tests/test_statistics.py (layers)
and tests/test_train.py (skipped steps, diverged runs)."""

import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.test_train import records, tiny_config
from train import input_pipeline
from train import train as train_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished 2-epoch run: checkpoints at steps 8 and 16."""
  workdir = tmp_path_factory.mktemp("rel") / "run"
  train_lib.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


def _copy(finished, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(finished, dst)
  return dst


def _largest_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir):
  f = _largest_file(step_dir)
  f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _delete_metadata(step_dir):
  (step_dir / "state" / "_METADATA").unlink()


def _flip_bytes(step_dir):
  f = _largest_file(step_dir)
  data = bytearray(f.read_bytes())
  mid = len(data) // 2
  data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
  f.write_bytes(bytes(data))


@pytest.mark.parametrize(
  "damage",
  [_truncate, _delete_metadata, _flip_bytes],
  ids=["truncated", "deleted-metadata", "flipped-bytes"],
)
def test_a_damaged_latest_checkpoint_costs_one_epoch_not_the_run(
  finished, tmp_path, capsys, damage
):
  workdir = _copy(finished, tmp_path)
  damage(workdir / "checkpoints" / "16")
  summary = train_lib.train_and_evaluate(tiny_config(num_epochs=3), str(workdir))
  out = capsys.readouterr().out
  warnings = [line for line in out.splitlines() if line.startswith("warning: checkpoint")]
  assert len(warnings) == 1 and "step 16 is damaged" in warnings[0], out[-2000:]
  assert "Resuming from step 8" in out and "Traceback" not in out
  assert summary["status"] == "completed" and summary["step"] == 24
  aside = list((workdir / "checkpoints_damaged").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("16-")  # moved, never deleted
  assert [r["epoch"] for r in records(workdir)] == [1, 2, 3]


def test_every_checkpoint_damaged_is_a_clear_error(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  for step in ("8", "16"):
    _flip_bytes(workdir / "checkpoints" / step)
  p = subprocess.run(
    [sys.executable, "-m", "train", "--config=configs/quickstart.py", f"--workdir={workdir}"]
    + [f"--config.{k}" for k in _cli_overrides(num_epochs=3)],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert p.returncode == 2, p.stderr[-2000:]
  assert "error: every checkpoint" in p.stderr and "Traceback" not in p.stderr + p.stdout
  assert len(list((workdir / "checkpoints_damaged").iterdir())) == 2


def _cli_overrides(**extra):
  """tiny_config() as command-line overrides of configs/quickstart.py."""
  c = dict(
    norms="",
    model="tiny_cnn",
    norm="mbn",
    per_device_batch_size=2,
    eval_per_device_batch_size=25,
    num_epochs=2,
    mbn_total_epochs=2,
    lr_decay_epochs=1,
    base_learning_rate=1.0,
    **{
      "dataset.eval_split": "",
      "dataset.holdout_per_class": 10,
      "dataset.augment": "none",
      "dataset.max_train_examples": 64,
    },
    progress_bar=False,
  )
  c.update(extra)
  return [f"{k}={v}" for k, v in c.items()]


def test_deleting_config_json_cannot_switch_the_config(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  (workdir / "config.json").unlink()
  with pytest.raises(train_lib.ConfigMismatchError, match="norm"):
    train_lib.train_and_evaluate(tiny_config(norm="bn", num_epochs=3), str(workdir))


@pytest.mark.parametrize(
  "overrides, message",
  [
    (["per_device_batch_size=5000"], "larger than the training set"),
    (["dataset.holdout_per_class=500"], "holdout_per_class=500 is too large"),
    (["bn_momentum=1.5"], "bn_momentum must lie in"),
  ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, overrides, message):
  p = subprocess.run(
    [
      sys.executable,
      "-m",
      "train",
      "--config=configs/quickstart.py",
      f"--workdir={tmp_path / 'w'}",
      "--config.norms=",
    ]
    + [f"--config.{o}" for o in overrides],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
  assert p.stderr.strip().splitlines()[-1].startswith("error: ") and message in p.stderr


def test_workdir_that_is_a_file(tmp_path):
  f = tmp_path / "not_a_dir"
  f.write_text("x")
  with pytest.raises(NotADirectoryError, match="is a file"):
    train_lib.validate_config(tiny_config(), str(f))


def _image_folder(root: pathlib.Path, per_class=3):
  import tensorflow as tf

  rng = np.random.default_rng(0)
  for label in ("cat", "dog"):
    (root / "train" / label).mkdir(parents=True)
    for i in range(per_class):
      png = tf.io.encode_png(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).numpy()
      (root / "train" / label / f"{i:03d}.png").write_bytes(png)
  return root


def _folder_config(root):
  c = tiny_config()
  c.dataset.source, c.dataset.root, c.dataset.holdout_per_class = "image_folder", str(root), 1
  return c.dataset


def test_an_undecodable_image_is_named(tmp_path):
  root = _image_folder(tmp_path / "imgs")
  bad = root / "train" / "dog" / "001.png"
  bad.write_bytes(bad.read_bytes()[:20])  # truncated
  with pytest.raises(input_pipeline.DataConfigError, match="001.png"):
    input_pipeline.load_dataset(_folder_config(root))


def test_an_empty_class_folder_is_an_error(tmp_path):
  root = _image_folder(tmp_path / "imgs")
  (root / "train" / "emu").mkdir()
  with pytest.raises(input_pipeline.DatasetUnavailableError, match="emu"):
    input_pipeline.load_dataset(_folder_config(root))
