"""Failure behaviour (docs/training.md, "Failure behaviour"): damaged checkpoints (every item),
updates that would leave non-finite values, exact divergence, bad data, bad workdirs, a
deleted config.json. Bad input through the entry point: tests/test_reliability_inputs.py;
the layers: tests/test_reliability_layers.py; non-finite batches in the layers:
tests/test_statistics.py; skipped steps: tests/test_train.py."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.test_train import records, tiny_config
from train import checkpoints as ckpt_lib
from train import divergence, input_pipeline
from train import train as train_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished 2-epoch run: checkpoints at steps 8 and 16."""
  workdir = tmp_path_factory.mktemp("rel") / "run"
  train_lib.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The metrics.jsonl records of the same run trained for 3 epochs without a stop."""
  workdir = tmp_path_factory.mktemp("rel") / "three"
  train_lib.train_and_evaluate(tiny_config(num_epochs=3), str(workdir))
  return records(workdir)


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


def _delete_checksums(step_dir):
  shutil.rmtree(step_dir / "checksums")


def _delete_meta(step_dir):
  shutil.rmtree(step_dir / "meta")


def _json_item(step_dir, item):
  files = [p for p in (step_dir / item).iterdir() if p.name != "commit_success.txt"]
  assert len(files) == 1, files  # a JSON item is one file
  return files[0]


def _change_a_byte_in_meta(step_dir):
  """One digit of the epoch's running loss sum: still valid JSON, silently wrong before."""
  f = _json_item(step_dir, "meta")
  text = f.read_text()
  assert text.count('"loss": 0.0') == 1, text[:300]
  f.write_text(text.replace('"loss": 0.0', '"loss": 5.0'))


def _change_a_byte_in_the_config_copy(step_dir):
  f = _json_item(step_dir, "meta")
  text = f.read_text()
  assert text.count('"tau0": 0.85') == 1
  f.write_text(text.replace('"tau0": 0.85', '"tau0": 0.86'))


def _garbage_checksums(step_dir):
  _json_item(step_dir, "checksums").write_text("{not json")


def _checksums_without_meta_or_state(step_dir):
  _json_item(step_dir, "checksums").write_text(json.dumps({"precise_batch_stats": "0" * 64}))


def _another_state_checksum(step_dir):
  f = _json_item(step_dir, "checksums")
  sums = json.loads(f.read_text())
  sums["state"] = ("1" if sums["state"][0] != "1" else "2") + sums["state"][1:]
  f.write_text(json.dumps(sums))


@pytest.mark.parametrize(
  "damage, reason",
  [
    (_truncate, "cannot be restored"),
    (_delete_metadata, "cannot be restored"),
    (_flip_bytes, "do not match the checksum"),
    (_delete_checksums, "its checksums item is missing"),
    (_garbage_checksums, "its checksums cannot be read"),
    (_checksums_without_meta_or_state, "no checksum of the state"),
    (_another_state_checksum, "contents do not match the checksum"),
    (_delete_meta, "its item(s) ['meta'] are missing"),
    (_change_a_byte_in_meta, "its metadata do not match the checksum"),
    (_change_a_byte_in_the_config_copy, "its metadata do not match the checksum"),
  ],
  ids=[
    "truncated",
    "deleted-metadata",
    "flipped-bytes",
    "deleted-checksums",
    "garbage-checksums",
    "checksums-miss-items",
    "wrong-state-checksum",
    "deleted-meta",
    "changed-byte-in-meta",
    "changed-byte-in-config-copy",
  ],
)
def test_a_damaged_latest_checkpoint_costs_one_epoch_not_the_run(
  finished, uninterrupted, tmp_path, capsys, damage, reason
):
  workdir = _copy(finished, tmp_path)
  damage(workdir / "checkpoints" / "16")
  summary = train_lib.train_and_evaluate(tiny_config(num_epochs=3), str(workdir))
  out = capsys.readouterr().out
  warnings = [line for line in out.splitlines() if line.startswith("warning: checkpoint")]
  assert len(warnings) == 1 and "step 16 is damaged" in warnings[0], out[-2000:]
  assert reason in warnings[0], warnings[0]
  assert "Resuming from step 8" in out and "Traceback" not in out
  assert summary["status"] == "completed" and summary["step"] == 24
  aside = list((workdir / "checkpoints_damaged").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("16-")  # moved, never deleted
  assert [r["epoch"] for r in records(workdir)] == [1, 2, 3]
  # Resumed from the good step 8, the run is the uninterrupted one: epochs 2 and 3 as trained
  # from scratch (what a wrong meta, e.g. a changed loss sum, would break).
  for got, want in zip(records(workdir), uninterrupted):
    assert got["train_loss"] == want["train_loss"] and got["step"] == want["step"]


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
    (["norm=mabn", "mabn_momentum=1.0"], "config.mabn_momentum=1.0 is refused by norm 'mabn'"),
    (["norm=mabn", "mabn_r_clip=0.5"], "config.mabn_r_clip=0.5 is refused by norm 'mabn'"),
    (["norm=mabn", "mabn_buffer_size=-1"], "config.mabn_buffer_size=-1"),
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
  from PIL import Image

  rng = np.random.default_rng(0)
  for label in ("cat", "dog"):
    (root / "train" / label).mkdir(parents=True)
    for i in range(per_class):
      pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / "train" / label / f"{i:03d}.png")
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


def test_an_undecodable_first_image_is_named(tmp_path):
  # The first image also gives the shape every other must have: decoding it fails first.
  root = _image_folder(tmp_path / "imgs")
  first = sorted((root / "train").glob("*/*.png"))[0]
  first.write_bytes(first.read_bytes()[:20])  # truncated
  assert first.parent.name == "cat"
  with pytest.raises(input_pipeline.DataConfigError, match="cat/000.png"):
    input_pipeline.load_dataset(_folder_config(root))


def test_an_empty_class_folder_is_an_error(tmp_path):
  root = _image_folder(tmp_path / "imgs")
  (root / "train" / "emu").mkdir()
  with pytest.raises(input_pipeline.DatasetUnavailableError, match="emu"):
    input_pipeline.load_dataset(_folder_config(root))


# -------------------------------------------------- checkpoint items through the manager's API


def _host_state(value=1.0):
  return {
    "step": np.asarray(8, np.int32),
    "params": {"w": np.full((3,), value, np.float32)},
    "batch_stats": {"mean": np.zeros(3, np.float32)},
  }


META = {"epoch": 1, "accum": {"loss": 0.0, "accuracy": 0.0, "count": 0, "nonfinite": 0}}


def test_a_damaged_precise_statistics_item_moves_the_step_aside(tmp_path, capsys):
  manager = ckpt_lib.CheckpointManager(str(tmp_path / "checkpoints"))
  rng = np.random.default_rng(0)  # large enough that its bytes are the item's largest file
  precise = {"norm0": {"mean": rng.normal(size=4096).astype(np.float32)}}
  for step in (8, 16):
    manager.save(
      step, _host_state(step), {**META, "run_info": {}}, {ckpt_lib.PRECISE_STATS: precise}
    )
  item = tmp_path / "checkpoints" / "16" / ckpt_lib.PRECISE_STATS
  data_files = [p for p in item.rglob("*") if p.is_file() and p.parent.name == "d"]
  f = max(data_files, key=lambda p: p.stat().st_size)  # the arrays' bytes, not metadata
  data = bytearray(f.read_bytes())
  mid = len(data) // 2
  data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
  f.write_bytes(bytes(data))
  step, state, meta = manager.restore_newest_good(_host_state())
  manager.close()
  assert step == 8 and float(state["params"]["w"][0]) == 8.0 and meta["epoch"] == 1
  out = capsys.readouterr().out
  assert "checkpoint at step 16 is damaged" in out and "precise_batch_stats" in out


def test_a_checkpoint_with_non_finite_values_is_never_saved(tmp_path):
  manager = ckpt_lib.CheckpointManager(str(tmp_path / "checkpoints"))
  manager.save(8, _host_state(), {**META, "run_info": {}})
  with pytest.raises(
    ckpt_lib.NonFiniteStateError, match=r"step 16: its state holds NaN/inf in \['params'\]\['w'\]"
  ):
    manager.save(16, _host_state(np.inf), {**META, "run_info": {}})
  assert manager.all_steps() == [8]  # the earlier checkpoint is the newest, untouched
  manager.close()


# ------------------------------------------------------------- updates that would be non-finite

# base_learning_rate and weight_decay at 3e38 (finite, accepted by the config checks): the loss
# and gradients of the first step are finite, but lr · (g + wd · w) overflows float32.
OVERFLOW = dict(base_learning_rate=3e38, weight_decay=3e38)


def test_an_overflowing_update_stops_after_exactly_the_limit_naming_its_cause(tmp_path):
  workdir = tmp_path / "w"
  p = subprocess.run(
    [sys.executable, "-m", "train", "--config=configs/quickstart.py", f"--workdir={workdir}"]
    + [f"--config.{k}" for k in _cli_overrides(num_epochs=1, max_nonfinite_steps=5, **OVERFLOW)],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert p.returncode == 3 and "Traceback" not in p.stderr, p.stderr[-3000:]
  error = p.stderr.strip().splitlines()[-1]
  assert error.startswith("error: training diverged: 5 consecutive steps up to step 5 ")
  for needle in (
    "the updated parameters or optimizer state were non-finite",
    "config.max_nonfinite_steps=5",
    "base_learning_rate=3e+38",
    "weight_decay=3e+38",
    "lr_decay_factor=0.1",
    "no checkpoint was written",
  ):
    assert needle in error, (needle, error)
  assert "last checkpoint" not in error  # there is none
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "diverged" and summary["step"] == 5  # 5 steps run, not 6
  assert summary["diverged_at_step"] == 5
  assert not (workdir / "checkpoints").exists() or not list((workdir / "checkpoints").iterdir())


def test_a_limit_of_one_stops_at_the_first_skip(tmp_path):
  summary = train_lib.train_and_evaluate(
    tiny_config(num_epochs=1, max_nonfinite_steps=1, **OVERFLOW), str(tmp_path / "w")
  )
  assert summary["status"] == "diverged" and summary["step"] == 1
  assert summary["error"].startswith("training diverged: 1 consecutive steps up to step 1 ")


def test_a_run_that_skips_every_update_never_checkpoints_non_finite_values(tmp_path):
  """With a limit above the run's length every step is skipped; the run completes finite."""
  workdir = tmp_path / "w"
  summary = train_lib.train_and_evaluate(
    tiny_config(num_epochs=1, max_nonfinite_steps=100, **OVERFLOW), str(workdir)
  )
  assert summary["status"] == "completed"
  (record,) = records(workdir)
  assert record["nonfinite_steps"] == 8 and record["train_loss"] is None  # all 8 skipped
  state = ckpt_lib.restore_latest(str(workdir))
  assert int(state["step"]) == 8
  assert ckpt_lib.nonfinite_leaves(state) == []
  # Nothing was applied: SGD's momentum trace is still its initial zeros.
  trace = [np.asarray(x) for x in jax.tree.leaves(state["opt_state"])]
  floats = [x for x in trace if np.issubdtype(x.dtype, np.floating)]
  assert floats and all(np.all(x == 0) for x in floats)


def test_non_finite_data_is_named_as_the_cause(tmp_path):
  """std = 1e-45 (> 0, accepted) makes every normalized pixel ±inf: the data is to blame."""
  summary = train_lib.train_and_evaluate(
    tiny_config(
      num_epochs=1, max_nonfinite_steps=2, **{"dataset.mean": (0.5,), "dataset.std": (1e-45,)}
    ),
    str(tmp_path / "w"),
  )
  assert summary["status"] == "diverged" and summary["step"] == 2
  assert "because the input data was non-finite" in summary["error"]
  assert "config.dataset.std=(1e-45,)" in summary["error"]


@pytest.mark.parametrize(
  "kind, named, not_named",
  [
    (
      divergence.LOSS | divergence.GRADIENTS,
      [
        "the loss and the gradients were",
        "weight_decay=",
        "lr_decay_factor=",
        "base_learning_rate=",
        "the data",
      ],
      ["overflowed"],
    ),
    (
      divergence.UPDATE,
      [
        "the updated parameters or optimizer state were",
        "overflowed",
        "weight_decay=",
        "lr_decay_factor=",
      ],
      ["The cause is the data"],
    ),
    (
      divergence.DATA,
      ["the input data was", "The cause is the data", "config.dataset.std"],
      ["weight_decay="],
    ),
  ],
)
@pytest.mark.parametrize("has_checkpoint", [True, False])
def test_the_divergence_message_names_what_and_why_and_the_checkpoint_only_if_any(
  kind, named, not_named, has_checkpoint
):
  message = divergence.divergence_message(
    tiny_config(max_nonfinite_steps=7),
    consecutive=7,
    last_step=23,
    lr_at_last_step=0.03125,
    nonfinite_kind=kind,
    has_checkpoint=has_checkpoint,
    checkpoint_step=16 if has_checkpoint else None,
  )
  assert message.startswith("training diverged: 7 consecutive steps up to step 23 ")
  for text in named:
    assert text in message, (text, message)
  for text in not_named:
    assert text not in message, (text, message)
  assert ("the last checkpoint (step 16) holds finite values" in message) == has_checkpoint
  assert ("no checkpoint was written" in message) == (not has_checkpoint)


@pytest.mark.parametrize("limit, skips, stop", [(20, 19, False), (20, 20, True), (1, 1, True)])
def test_the_skip_limit_is_exact(limit, skips, stop):
  assert divergence.should_stop(skips, limit) is stop
  # One skip short of the limit, the loop reads each step before running the next.
  assert divergence.read_lag(limit - 1, limit) == 0
  assert divergence.read_lag(max(limit - 2, 0), limit) == (1 if limit > 1 else 0)
