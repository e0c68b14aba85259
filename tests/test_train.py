"""train/train.py on 4 CPU devices: the real pmap program on tiny data.

A tiny CNN on 8x8 digits (64 training images: 8 steps of global batch 8 per
epoch), so every run takes seconds.
"""

import json
import os

import jax
import numpy as np
import pytest

from configs import default
from train import train as train_lib

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


def tiny_config(**overrides):
  c = default.get_config()
  c.model, c.norm, c.norms = "tiny_cnn", "mbn", ""
  c.per_device_batch_size, c.eval_per_device_batch_size = 2, 25
  c.num_epochs, c.mbn_total_epochs, c.lr_decay_epochs = 2, 2, 1
  c.base_learning_rate = 1.0
  c.dataset.source, c.dataset.name = "digits", "digits"
  c.dataset.eval_split, c.dataset.holdout_per_class = "", 10
  c.dataset.augment, c.dataset.max_train_examples = "none", 64
  c.progress_bar = False
  for k, v in overrides.items():
    target = c
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  return c


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full") / "run")
  return workdir, train_lib.train_and_evaluate(tiny_config(), workdir)


def test_four_device_run_compiles_once_and_writes_everything(full_run):
  workdir, summary = full_run
  assert summary["status"] == "completed" and summary["devices"] == 4
  assert summary["global_batch_size"] == 8 and summary["steps_per_epoch"] == 8
  assert summary["train_step_traces"] == 1  # One compilation for all 16 steps.
  env = summary["software_and_machine"]  # what the numbers depend on beyond the config
  assert env["packages"]["jax"] == jax.__version__ and env["platform"] == jax.default_backend()
  assert env["cpu"] and env["cpu_count"] == os.cpu_count()
  saved = json.load(open(os.path.join(workdir, "summary.json")))
  assert saved["software_and_machine"] == env
  recs = records(workdir)
  assert [r["epoch"] for r in recs] == [1, 2] and [r["step"] for r in recs] == [8, 16]
  # λ (Eq. 11, m = 2, m0 = 32, T = 2): 0 in epoch 1, 1 - 2/32 in epoch 2.
  assert recs[0]["lambda"] == 0.0 and recs[1]["lambda"] == pytest.approx(1 - 2 / 32)
  assert recs[1]["learning_rate"] == pytest.approx(0.1 * 1.0 * 2 / 64)
  assert all(np.isfinite(r["train_loss"]) and 0 <= r["eval_accuracy"] <= 1 for r in recs)
  saved = json.load(open(os.path.join(workdir, "summary.json")))
  assert saved["seed"] == 0 and saved["config"]["norm"] == "mbn"
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert json.load(open(os.path.join(workdir, "config.json")))["config"]["model"] == "tiny_cnn"
  assert sorted(
    int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()
  ) == [8, 16]


def test_preempted_run_resumes_to_identical_metrics(full_run, tmp_path):
  workdir_full, summary_full = full_run
  workdir = str(tmp_path / "run")
  # A real SIGTERM to ourselves after step 5 (mid epoch 1): checkpoint and stop.
  first = train_lib.train_and_evaluate(tiny_config(simulate_preemption_at_step=5), workdir)
  assert first["status"] == "interrupted" and 0 < first["step"] < 8
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl")) or not records(workdir)
  second = train_lib.train_and_evaluate(tiny_config(), workdir)  # The same command again.
  assert second["status"] == "completed" and second["step"] == 16
  strip = lambda rs: [
    {k: v for k, v in r.items() if k not in ("images_per_sec", "data_wait_share")} for r in rs
  ]
  assert strip(records(workdir)) == strip(records(workdir_full))  # Bit-for-bit.
  assert second["final_eval_accuracy"] == summary_full["final_eval_accuracy"]


def test_resume_with_different_config_is_refused(full_run):
  workdir, _ = full_run
  with pytest.raises(train_lib.ConfigMismatchError, match="norm"):
    train_lib.train_and_evaluate(tiny_config(norm="bn"), workdir)
  with pytest.raises(train_lib.ConfigMismatchError, match="per_device_batch_size"):
    train_lib.train_and_evaluate(tiny_config(per_device_batch_size=4), workdir)
  # Allowed: more epochs; the finished run resumes and trains one more epoch.
  summary = train_lib.train_and_evaluate(tiny_config(num_epochs=3), workdir)
  assert summary["epochs_completed"] == 3 and [r["epoch"] for r in records(workdir)] == [1, 2, 3]


def test_a_different_number_of_training_images_refuses_to_resume():
  """An image removed from the training set leaves steps_per_epoch alone but reorders the rest
  of the epoch (the order is a permutation of the set's size): run_info holds the size;
  checkpoints written before it was recorded resume as before."""
  from types import SimpleNamespace

  from train import resume

  info = {"devices": 4, "processes": 1, "steps_per_epoch": 8, "per_device_batch_size": 2}
  here = SimpleNamespace(run_info={**info, "train_examples": 64})
  resume._check_meta(here, {"run_info": {**info, "train_examples": 64}}, compare_config=False)
  resume._check_meta(here, {"run_info": dict(info)}, compare_config=False)  # an older checkpoint
  with pytest.raises(
    train_lib.ConfigMismatchError, match="'train_examples': 65.*number of training images"
  ):
    resume._check_meta(here, {"run_info": {**info, "train_examples": 65}}, compare_config=False)
  with pytest.raises(train_lib.ConfigMismatchError, match="'steps_per_epoch': 9"):
    resume._check_meta(here, {"run_info": {**info, "steps_per_epoch": 9}}, compare_config=False)


def test_fields_added_after_a_run_started_resume_at_their_default():
  saved = train_lib.config_json(tiny_config())
  del saved["norm_sync_devices"]  # as if the run predates the field
  train_lib.check_resume_compatible(saved, tiny_config())  # default value: compatible
  with pytest.raises(train_lib.ConfigMismatchError, match="norm_sync_devices"):
    train_lib.check_resume_compatible(saved, tiny_config(norm_sync_devices=2))


def test_a_record_with_the_replaced_sync_batch_stats_resumes_as_norm_sync_devices():
  """An old config.json says sync_batch_stats=True/False; today's field is norm_sync_devices."""
  old = train_lib.config_json(tiny_config())
  del old["norm_sync_devices"]
  old["sync_batch_stats"] = True
  train_lib.check_resume_compatible(old, tiny_config(norm_sync_devices=-1))  # all devices
  with pytest.raises(train_lib.ConfigMismatchError, match="norm_sync_devices"):
    train_lib.check_resume_compatible(old, tiny_config())  # per device: a different run
  old["sync_batch_stats"] = False
  train_lib.check_resume_compatible(old, tiny_config())
  # An old config file that still sets the field: G = every device, with a note.
  layout = train_lib.validate_config(tiny_config(sync_batch_stats=True))
  assert layout.norm_sync_devices == 4 and layout.statistics_batch_size == 8
  with pytest.raises(ValueError, match="both set"):
    train_lib.validate_config(tiny_config(sync_batch_stats=True, norm_sync_devices=2))
  with pytest.raises(ValueError, match="norm_sync_devices=3 does not divide the 4 device"):
    train_lib.validate_config(tiny_config(norm_sync_devices=3))


def test_synchronized_statistics_and_other_norms(tmp_path):
  summary = train_lib.train_and_evaluate(
    tiny_config(norm_sync_devices=-1, num_epochs=1, mbn_total_epochs=2), str(tmp_path / "s")
  )
  assert summary["status"] == "completed" and summary["train_step_traces"] == 1
  # GN keeps no batch statistics: asked for precise statistics, the run skips them (it used
  # to stop with precise_batch_stats' "found no BatchNorm" error at the first evaluation).
  summary = train_lib.train_and_evaluate(
    tiny_config(
      norm="gn",
      model="mlp",
      num_epochs=1,
      precise_stats_batches=2,
      precise_stats_batch_size=4,
      precise_stats_every_eval=True,
    ),
    str(tmp_path / "g"),
  )
  assert summary["status"] == "completed" and summary["final_eval_accuracy_precise"] is None


@pytest.mark.parametrize(
  "overrides, error, match",
  [
    ({"model": "resnet1000"}, ValueError, "Unknown model 'resnet1000'"),
    ({"norm": "xbn"}, ValueError, "Unknown norm 'xbn'"),
    ({"norms": "bn,foo"}, ValueError, "Unknown norm 'foo'"),
    ({"global_batch_size": 6}, ValueError, "not divisible among the 4 devices"),
    ({"per_device_batch_size": 0}, ValueError, "per_device_batch_size must be a positive"),
    ({"num_epochs": -1}, ValueError, "num_epochs must be a positive"),
    ({"dataset.source": "ftp"}, ValueError, "dataset.source"),
    ({"conv": "cudnn"}, ValueError, "config.conv must be one of"),
    ({"bn_momentum": 1.5}, ValueError, "bn_momentum must lie in"),
    ({"bn_momentum": float("nan")}, ValueError, "bn_momentum must lie in"),
  ],
)
def test_bad_input_fails_before_compiling(tmp_path, overrides, error, match):
  with pytest.raises(error, match=match):
    train_lib.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_missing_workdir_parent(tmp_path):
  with pytest.raises(FileNotFoundError, match="parent directory"):
    train_lib.validate_config(tiny_config(), str(tmp_path / "no" / "such" / "w"))


def test_conv_setting_picks_the_convolution():
  from train import cpu_conv as fast_conv

  assert train_lib.conv_function("xla", 2) is None
  assert train_lib.conv_function("fast", 2) is fast_conv.conv_general_dilated
  assert train_lib.conv_function("auto", 2) is fast_conv.auto_conv(2)  # CPU here: the fast path
  assert fast_conv.auto_conv(2, backend="gpu") is jax.lax.conv_general_dilated


def test_global_batch_size_sets_per_device_batch():
  layout = train_lib.validate_config(tiny_config(global_batch_size=16))
  assert layout.per_device_batch_size == 4 and layout.devices == 4
  assert layout.statistics_batch_size == 4 and layout.global_batch_size == 16


def test_one_step_on_tfds_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  config = tiny_config(
    model="mlp",
    num_epochs=1,
    **{
      "dataset.source": "tfds",
      "dataset.name": "cifar10",
      "dataset.data_dir": str(tmp_path),
      "dataset.holdout_per_class": 0,
      "dataset.eval_split": "test",
      "dataset.augment": "crop_flip",
      "dataset.max_train_examples": 8,
      "dataset.check_download_host": False,
    },
  )  # mock_data fakes the download itself
  with tfds.testing.mock_data(num_examples=8):
    summary = train_lib.train_and_evaluate(config, str(tmp_path / "w"))
  assert summary["step"] == 1 and summary["status"] == "completed"
  assert "cifar10" in summary["dataset"] and "(32, 32, 3)" in summary["dataset"]


def test_checkpoint_holds_device_averaged_and_per_device_statistics(full_run):
  import orbax.checkpoint as ocp

  workdir, _ = full_run
  restored = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "16", "state"))
  mean, per_device = restored["batch_stats"], restored["batch_stats_per_device"]
  leaves_mean = jax.tree.leaves(mean)
  leaves_dev = jax.tree.leaves(per_device)
  assert leaves_mean and len(leaves_mean) == len(leaves_dev)
  for a, d in zip(leaves_mean, leaves_dev):
    assert d.shape == (4,) + a.shape
    np.testing.assert_allclose(a, d.mean(0), rtol=1e-5, atol=1e-6)
  # Per-device statistics (the paper's setting) really differ between devices.
  assert any(not np.allclose(d[0], d[1]) for d in leaves_dev)
  assert int(restored["step"]) == 16


def test_precise_statistics_option(tmp_path):
  """precise_stats_batches: eval_accuracy_precise per evaluation; both statistics saved."""
  import flax.linen as nn

  from train import checkpoints as ckpt_lib
  from train import input_pipeline

  config = tiny_config(
    num_epochs=2, precise_stats_batches=3, precise_stats_batch_size=4, precise_stats_every_eval=True
  )
  workdir = str(tmp_path / "p")
  summary = train_lib.train_and_evaluate(config, workdir)
  recs = records(workdir)
  assert all(0 <= r["eval_accuracy_precise"] <= 1 and "eval_loss_precise" in r for r in recs)
  assert summary["final_eval_accuracy_precise"] == recs[-1]["eval_accuracy_precise"]
  assert summary["train_step_traces"] == 1
  manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"))
  state, _ = manager.restore(16, None)
  precise = manager.restore_item(16, ckpt_lib.PRECISE_STATS)
  manager.close()
  # MBN's training statistics are the device-averaged ones, as in batch_stats.
  np.testing.assert_array_equal(
    precise["norm0"]["train_mean"], state["batch_stats"]["norm0"]["train_mean"]
  )
  # The first norm's mean/var: NumPy over every image of the 3 global batches
  # (4 devices x 4 images each) that the option draws, through the saved conv.
  data = input_pipeline.load_dataset(config.dataset)
  layout = train_lib.validate_config(config)
  images = np.concatenate(
    [
      b["image"].reshape((-1,) + b["image"].shape[2:])
      for b in train_lib.precise_stats_stream(config, data, layout, epoch=1)
    ]
  )
  assert images.shape[0] == 3 * 16
  conv = nn.Conv(16, (3, 3), use_bias=False)
  h = np.asarray(conv.apply({"params": state["params"]["conv0"]}, images), np.float64)
  np.testing.assert_allclose(precise["norm0"]["mean"], h.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(precise["norm0"]["var"], h.var((0, 1, 2)), rtol=1e-4, atol=1e-6)
  assert not np.allclose(precise["norm0"]["var"], state["batch_stats"]["norm0"]["var"])


def test_nonfinite_step_changes_nothing_but_the_step():
  """train_step on a NaN batch: parameters, optimizer state and statistics unchanged."""
  import functools

  import jax.numpy as jnp

  from train import steps

  config = tiny_config(norm="bn")
  model = train_lib.build_model(config, num_classes=10, steps_per_epoch=8)
  lr = steps.learning_rate_fn(config, 2, 8, 8)
  state = steps.create_train_state(
    model, steps.make_optimizer(config, lr), (8, 8, 1), batch_size=2, seed=0
  )
  step = jax.pmap(
    functools.partial(steps.train_step, learning_rate_fn=lr, momentum_fn=lambda s: 0.0),
    axis_name=steps.AXIS,
  )
  rep = jax.tree.map(lambda x: jnp.broadcast_to(x, (4,) + jnp.shape(x)), state)
  images = np.random.default_rng(0).normal(size=(4, 2, 8, 8, 1)).astype(np.float32)
  labels = np.zeros((4, 2), np.int32)
  good, m_good = step(rep, {"image": images, "label": labels}, np.zeros(4, np.int32))
  images = images.copy()  # (the first call may still read the old buffer)
  images[2, 1, 3, 3, 0] = np.nan  # one pixel on one device
  bad, m_bad = step(rep, {"image": images, "label": labels}, np.zeros(4, np.int32))
  assert int(m_good["nonfinite"][0]) == 0 and int(m_bad["nonfinite"][0]) == 1
  assert int(bad.step[0]) == int(good.step[0]) == 1
  for new, old in (
    (bad.params, rep.params),
    (bad.opt_state, rep.opt_state),
    (bad.batch_stats, rep.batch_stats),
  ):
    jax.tree.map(np.testing.assert_array_equal, new, old)
  assert not np.allclose(jax.tree.leaves(good.params)[0], jax.tree.leaves(rep.params)[0])


def test_a_diverging_run_stops_and_keeps_the_last_finite_state(tmp_path):
  import subprocess
  import sys

  workdir = tmp_path / "div"
  cmd = [
    sys.executable,
    "-m",
    "train",
    "--config=configs/quickstart.py",
    f"--workdir={workdir}",
    "--config.norms=",
    "--config.norm=mbn",
    "--config.base_learning_rate=1e8",
    "--config.num_epochs=2",
    "--config.dataset.max_train_examples=64",
    "--config.max_nonfinite_steps=5",
    "--config.progress_bar=False",
  ]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
  assert p.returncode == 3, p.stdout[-2000:] + p.stderr[-2000:]
  assert "error: training diverged" in p.stderr and "learning rate" in p.stderr
  summary = json.loads((workdir / "summary.json").read_text())  # strict JSON parses
  assert summary["status"] == "diverged" and summary["diverged_at_step"] >= 5
  for line in (
    (workdir / "metrics.jsonl").read_text().splitlines()
    if (workdir / "metrics.jsonl").exists()
    else []
  ):
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
  from train import checkpoints as ckpt_lib

  manager = ckpt_lib.CheckpointManager(str(workdir / "checkpoints"))
  if manager.latest_step() is not None:  # whatever was saved is finite
    state, _ = manager.restore(manager.latest_step(), None)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
  manager.close()
