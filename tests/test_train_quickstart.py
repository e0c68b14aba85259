"""The README's quickstart command, shortened by config overrides (smoke test)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_prints_bn_and_mbn_side_by_side(tmp_path):
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    JAX_PLATFORMS="cpu",
    TF_CPP_MIN_LOG_LEVEL="3",
    PYTHONPATH=ROOT,
    JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  workdir = str(tmp_path / "qs")
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "train",
      "--config",
      "configs/quickstart.py",
      "--workdir",
      workdir,
      "--config.num_epochs=1",
      "--config.dataset.max_train_examples=300",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  table = done.stdout[done.stdout.index("tiny_cnn on digits") :]
  assert "eval acc" in table and "\n  bn " in table and "\n mbn " in table
  comparison = json.load(open(os.path.join(workdir, "comparison.json")))
  assert set(comparison["runs"]) == {"bn", "mbn"}
  for norm in ("bn", "mbn"):
    summary = json.load(open(os.path.join(workdir, norm, "summary.json")))
    assert summary["norm"] == norm and summary["per_device_batch_size"] == 2
    assert summary["status"] == "completed" and 0 <= summary["final_eval_accuracy"] <= 1


def test_cli_bad_input_is_a_clear_error_and_exit_status_2(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
  for workdir, extra, message in [
    (tmp_path / "w", "--config.model=resnet1000", "error: Unknown model 'resnet1000'"),
    (tmp_path / "missing" / "w", "--config.norm=mbn", "error: The parent directory of --workdir"),
  ]:
    done = subprocess.run(
      [
        sys.executable,
        "-m",
        "train",
        "--config",
        "configs/quickstart.py",
        "--workdir",
        str(workdir),
        extra,
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr
