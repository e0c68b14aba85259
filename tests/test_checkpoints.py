"""train/checkpoints.py, and SIGTERM on a real `python -m train` process."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_save_restore_round_trip_and_no_double_save(tmp_path):
  mgr = checkpoints.CheckpointManager(str(tmp_path / "ckpt"), max_to_keep=2)
  state = {"step": np.asarray(3), "params": {"w": np.arange(6.0).reshape(2, 3)}, "empty": {}}
  assert mgr.save(3, state, {"accum": {"loss": 1.5, "count": 2}})
  assert not mgr.save(3, state, {"accum": {}})  # Already there: skipped, no error.
  for s in (4, 5):
    mgr.save(s, state, {"accum": {}})
  assert mgr.all_steps() == [4, 5] and mgr.latest_step() == 5  # max_to_keep=2.
  restored, meta = mgr.restore(
    4, {"step": np.asarray(0), "params": {"w": np.zeros((2, 3))}, "empty": {}}
  )
  np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
  assert int(restored["step"]) == 3 and meta == {"accum": {}}
  mgr.close()


def test_stop_signal_sets_flag_and_restores_handler():
  old = signal.getsignal(signal.SIGTERM)
  stop = checkpoints.StopSignal()
  assert not stop.requested
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(0.05)
  assert stop.requested and stop.signum == signal.SIGTERM
  stop.close()
  assert signal.getsignal(signal.SIGTERM) == old


def test_sigterm_leaves_a_usable_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    JAX_PLATFORMS="cpu",
    TF_CPP_MIN_LOG_LEVEL="3",
    PYTHONPATH=ROOT,
    JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"],
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  cmd = [
    sys.executable,
    "-m",
    "train",
    "--config",
    "configs/quickstart.py",
    "--workdir",
    workdir,
    "--config.norms=",
    "--config.norm=mbn",
    "--config.dataset.max_train_examples=200",
    "--config.progress_bar=false",
    "--config.mbn_total_epochs=3",
  ]
  proc = subprocess.Popen(
    cmd + ["--config.num_epochs=100000"],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  try:
    lines = []
    for line in proc.stdout:  # Wait until it has trained an epoch, then preempt it.
      lines.append(line)
      if line.startswith('{"step"'):
        break
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=120)[0]
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, out[-3000:]
  assert "Interrupted (signal); checkpoint saved" in out
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["status"] == "interrupted" and summary["step"] > 0
  steps = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert summary["step"] in steps
  # The same command resumes from it (here with fewer epochs: it stops at once
  # if those are done, or finishes them) and evaluates the restored state.
  epochs = summary["epochs_completed"] + 1
  done = subprocess.run(
    cmd + [f"--config.num_epochs={epochs}"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  assert f"Resuming from step {summary['step']}" in done.stdout
  final = json.load(open(os.path.join(workdir, "summary.json")))
  assert final["status"] == "completed" and final["epochs_completed"] == epochs
  assert final["final_eval_accuracy"] > 0.15  # Trained, not reinitialized.


def test_restore_latest_names_a_workdir_without_checkpoints(tmp_path):
  with pytest.raises(ValueError, match=f"{tmp_path}: no checkpoint"):
    checkpoints.restore_latest(str(tmp_path))
