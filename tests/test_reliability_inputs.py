"""Bad input through the real entry point: one ``error: ...`` line naming the field or file, exit 2.

Every case runs ``python -m train`` (docs/training.md, "Failure behaviour") and
asserts the exit status, that stderr ends in exactly one ``error:`` line with
the expected words, that no traceback reached the user and, where the config
alone shows the mistake, that nothing was trained or written (the workdir the
command would have created does not exist afterwards).
"""

import errno
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.test_reliability import _cli_overrides
from train import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


def _train(args, timeout=600):
  return subprocess.run(
    [sys.executable, "-m", "train", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _assert_one_error(p, status, *needles):
  out = p.stdout + p.stderr
  assert p.returncode == status, out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and p.stderr.strip().splitlines()[-1] == errors[0], p.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], (needle, errors[0])
  return errors[0]


def _quickstart(workdir, *overrides):
  return [
    "--config=configs/quickstart.py",
    f"--workdir={workdir}",
    "--config.norms=",
    *[f"--config.{o}" for o in overrides],
  ]


# The config alone shows the mistake: refused by validate_config, before any data is read.
CONFIG_MISTAKES = [
  pytest.param(
    ["dataset.source=tfds", "dataset.name=cifar_10"],
    ["config.dataset.name='cifar_10' is not a TFDS dataset", "did you mean 'cifar10'"],
    id="unknown-tfds-name",
  ),
  pytest.param(
    ["dataset.train_split=train[bad"],
    ["config.dataset.train_split='train[bad' is not a split", "'train[:4500]'"],
    id="malformed-split",
  ),
  pytest.param(
    ["dataset.eval_split=test[:", "dataset.holdout_per_class=0"],
    ["config.dataset.eval_split='test[:' is not a split"],
    id="malformed-eval-split",
  ),
  pytest.param(
    ["norm=brn", "r_max=0.5"],
    ["config.r_max=0.5 is refused by norm 'brn'", "r_max must be a float >= 1"],
    id="brn-r_max-below-1",
  ),
  pytest.param(
    ["norm=brn", "brn_warmup_steps=-1"],
    ["config.brn_warmup_steps=-1 is refused by norm 'brn'", "warmup_steps must be an int >= 0"],
    id="brn-negative-warmup",
  ),
  pytest.param(
    ["norm=brn", "d_max=-0.5"],
    ["config.d_max=-0.5 is refused by norm 'brn'", "d_max must be a float >= 0"],
    id="brn-negative-d_max",
  ),
  pytest.param(["seed=-1"], ["config.seed must be an int in [0, 4294967295]", "-1"], id="seed-neg"),
  pytest.param(["seed=4294967296"], ["config.seed must be an int in"], id="seed-too-large"),
  pytest.param(
    ["dataset.mean=(0.5,0.5,0.5)", "dataset.std=(0.2,0.2,0.2)"],
    ["config.dataset.mean=(0.5, 0.5, 0.5) has 3 value(s)", "digits images have 1 channel(s)"],
    id="mean-wrong-channels",
  ),
  pytest.param(
    ["dataset.mean=(0.5,)"],
    ["config.dataset.mean is set but config.dataset.std is not"],
    id="mean-without-std",
  ),
  pytest.param(
    ["dataset.mean=(0.5,)", "dataset.std=(0.0,)"],
    ["config.dataset.std=(0.0,) must be > 0"],
    id="std-zero",
  ),
  pytest.param(
    ["lr_decay_factor=-1"], ["config.lr_decay_factor must lie in (0, 1]"], id="lr-decay-neg"
  ),
  pytest.param(
    ["lr_decay_factor=nan"], ["config.lr_decay_factor must lie in (0, 1]"], id="lr-decay-nan"
  ),
  pytest.param(
    ["lr_decay_factor=1.5"], ["config.lr_decay_factor must lie in (0, 1]"], id="lr-decay-above-1"
  ),
  pytest.param(
    ["dataset.crop_padding=-2"],
    ["config.dataset.crop_padding must be an int >= 0", "-2"],
    id="crop-padding-neg",
  ),
  pytest.param(
    ["base_learning_rate=inf"],
    ["config.base_learning_rate must be a finite number > 0"],
    id="lr-inf",
  ),
  pytest.param(
    ["base_learning_rate=nan"],
    ["config.base_learning_rate must be a finite number > 0"],
    id="lr-nan",
  ),
  pytest.param(
    ["base_learning_rate=-0.1"],
    ["config.base_learning_rate must be a finite number > 0"],
    id="lr-neg",
  ),
  pytest.param(
    ["weight_decay=nan"], ["config.weight_decay must be a finite number >= 0"], id="wd-nan"
  ),
  pytest.param(
    ["weight_decay=-1e-4"], ["config.weight_decay must be a finite number >= 0"], id="wd-neg"
  ),
  pytest.param(
    ["momentum=nan"],
    ["config.momentum must lie in [0, 1) (SGD's momentum)", "got nan"],
    id="momentum-nan",
  ),
  pytest.param(
    ["tau0=nan"],
    ["config.tau0=nan is refused by norm 'mbn'", "tau0 must lie strictly between 0 and 1"],
    id="tau0-nan",
  ),
  pytest.param(
    ["norm=bn", "tau0=nan"], ["config.tau0 must lie in (0, 1), got nan"], id="tau0-nan-unused"
  ),
]


@pytest.mark.parametrize("overrides, needles", CONFIG_MISTAKES)
def test_a_config_mistake_is_one_error_line_before_anything_runs(tmp_path, overrides, needles):
  workdir = tmp_path / "w"
  p = _train(_quickstart(workdir, *overrides))
  _assert_one_error(p, 2, *needles)
  assert not workdir.exists()  # nothing read, compiled or written: the workdir is not even made
  assert "epoch 1" not in p.stdout + p.stderr


def test_a_missing_config_file_is_one_error_line(tmp_path):
  p = _train(["--config=configs/no_such_file.py", f"--workdir={tmp_path / 'w'}"])
  _assert_one_error(p, 2, "configs/no_such_file.py", "no such file")


# ---------------------------------------------------------------------------- the workdir's files


def _garbage_config_json(workdir):
  (workdir / "config.json").write_text("{not json")
  return ["config.json", "is not a run record", "delete it"]


def _config_json_without_config(workdir):
  (workdir / "config.json").write_text(json.dumps([1, 2]))
  return ["config.json", "is not a run record (a JSON object with a 'config')"]


def _garbage_metrics(workdir):
  (workdir / "metrics.jsonl").write_text('{"step": 8}\ngarbage\n{"step": 16}\n')
  return ["metrics.jsonl", "line 2 is not JSON", "Delete that line"]


def _metrics_record_without_step(workdir):
  (workdir / "metrics.jsonl").write_text('{"epoch": 1}\n')
  return ["metrics.jsonl", "line 1 is not an epoch record"]


def _checkpoints_is_a_file(workdir):
  (workdir / "checkpoints").write_text("x")
  return ["checkpoints", "is not a directory", "move it away"]


def _metrics_is_a_directory(workdir):
  (workdir / "metrics.jsonl").mkdir()
  return ["metrics.jsonl", "is not a regular file"]


@pytest.mark.parametrize(
  "damage",
  [
    _garbage_config_json,
    _config_json_without_config,
    _garbage_metrics,
    _metrics_record_without_step,
    _checkpoints_is_a_file,
    _metrics_is_a_directory,
  ],
)
def test_a_workdir_whose_own_files_are_not_the_programs_is_refused_at_once(tmp_path, damage):
  workdir = tmp_path / "w"
  workdir.mkdir()
  needles = damage(workdir)
  before = sorted(p.name for p in workdir.iterdir())
  p = _train(_quickstart(workdir))
  _assert_one_error(p, 2, f"{workdir}", *needles)
  assert sorted(p.name for p in workdir.iterdir()) == before  # nothing written


def test_a_torn_last_metrics_line_is_left_out_not_an_error(tmp_path):
  """A line cut short by a kill while writing (no newline) is the documented exception."""
  from train.writer import read_metrics

  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 8, "epoch": 1}\n{"step": 16, "ep')
  assert read_metrics(str(path)) == [{"step": 8, "epoch": 1}]


# ------------------------------------------------------------------------------ data on disk


def _image_folder(root: pathlib.Path, sizes=None):
  from PIL import Image

  rng = np.random.default_rng(0)
  for label in ("cat", "dog"):
    (root / "train" / label).mkdir(parents=True)
    for i in range(3):
      h, w = (sizes or {}).get((label, i), (8, 8))
      pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / "train" / label / f"{i:03d}.png")
  return root


def _folder_args(workdir, root, *extra):
  return _quickstart(
    workdir,
    "dataset.source=image_folder",
    f"dataset.root={root}",
    "dataset.holdout_per_class=1",
    "per_device_batch_size=1",
    *extra,
  )


def test_a_dangling_symlink_among_the_images_is_named(tmp_path):
  root = _image_folder(tmp_path / "imgs")
  (root / "train" / "cat" / "zz.jpg").symlink_to(tmp_path / "gone.jpg")
  p = _train(_folder_args(tmp_path / "w", root))
  _assert_one_error(p, 2, str(root / "train" / "cat" / "zz.jpg"), "dangling symbolic link")


def test_a_directory_named_like_an_image_is_named(tmp_path):
  root = _image_folder(tmp_path / "imgs")
  (root / "train" / "dog" / "folder.jpg").mkdir()
  p = _train(_folder_args(tmp_path / "w", root))
  _assert_one_error(p, 2, str(root / "train" / "dog" / "folder.jpg"), "is a directory")


def test_an_image_of_another_size_names_the_file_and_image_size(tmp_path):
  root = _image_folder(tmp_path / "imgs", sizes={("dog", 1): (10, 12)})
  p = _train(_folder_args(tmp_path / "w", root))
  _assert_one_error(
    p, 2, str(root / "train" / "dog" / "001.png"), "is 10x12", "8x8", "config.dataset.image_size"
  )
  # The documented way out works: with image_size every image is resized and the data loads.
  from configs import default
  from train import input_pipeline

  dc = default.get_config().dataset
  dc.source, dc.root, dc.holdout_per_class, dc.image_size = "image_folder", str(root), 1, 8
  assert input_pipeline.load_dataset(dc).train_images.shape[1:] == (8, 8, 3)


def test_a_precise_statistics_batch_larger_than_the_data_fails_before_training(tmp_path):
  workdir = tmp_path / "w"
  p = _train(
    ["--config=configs/quickstart.py", f"--workdir={workdir}"]
    + [f"--config.{o}" for o in _cli_overrides(precise_stats_batches=2)]
    + ["--config.precise_stats_batch_size=5000"]
  )
  _assert_one_error(p, 2, "config.precise_stats_batch_size=5000", "larger than the training set")
  assert "epoch 1" not in p.stdout + p.stderr and not workdir.exists()  # not one step trained


# ------------------------------------------------------------------------------ a full disk


def test_a_full_disk_names_enospc_and_the_path(tmp_path):
  """/dev/full fails every write with ENOSPC: the run's summary.json lands on it."""
  workdir = tmp_path / "w"
  workdir.mkdir()
  target = workdir / "summary.json.tmp"  # train.writer.save_json writes here, then renames
  target.symlink_to("/dev/full")
  p = _train(
    ["--config=configs/quickstart.py", f"--workdir={workdir}"]
    + [f"--config.{o}" for o in _cli_overrides(num_epochs=1)]
  )
  _assert_one_error(p, 2, "no space left on device (ENOSPC)", str(target))


def test_enospc_is_found_anywhere_in_the_exception_chain():
  """As Orbax and TensorFlow wrap it: in a cause, a context, a group, or only in the text."""
  leaf = OSError(errno.ENOSPC, "No space left on device", "/disk/ckpt/state/d/x")
  try:
    try:
      raise leaf
    except OSError as e:
      raise RuntimeError("save failed") from e
  except RuntimeError as wrapped:
    message = cli.disk_full_message(ExceptionGroup("async", [ValueError("x"), wrapped]), "/wd")
  assert message and "ENOSPC" in message and "'/disk/ckpt/state/d/x'" in message
  text_only = RuntimeError("RESOURCE_EXHAUSTED: write failed: No space left on device")
  assert "'/wd'" in cli.disk_full_message(text_only, "/wd")
  assert cli.disk_full_message(OSError(errno.EACCES, "Permission denied", "/x"), "/wd") is None
