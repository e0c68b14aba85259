"""Two processes × 2 CPU devices (gloo collectives) == one process × 4 devices, pmap and mesh.

Starts `python -m train` as real separate processes joined by
jax.distributed.initialize. The two-process run is interrupted after its first
epoch (num_epochs=1) and resumed (num_epochs=2), so the multi-host checkpoint
save and restore are exercised too; its metrics must equal those of one
process with 4 devices training 2 epochs on the same global batches.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
  "--config",
  "configs/quickstart.py",
  "--config.norms=",
  "--config.norm=mbn",
  "--config.mbn_total_epochs=2",
  "--config.dataset.max_train_examples=64",
  "--config.dataset.holdout_per_class=10",
  "--config.eval_per_device_batch_size=25",
  "--config.progress_bar=false",
  "--config.base_learning_rate=1.0",
  "--config.lr_decay_epochs=1",
]


def env(devices):
  e = dict(os.environ)
  e.update(
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_PLATFORMS="cpu",
    TF_CPP_MIN_LOG_LEVEL="3",
    PYTHONPATH=ROOT,
    JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"],
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  return e


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch_two_processes(argv, devices: int, timeout: float = 240) -> list[str]:
  """Runs ``argv`` as processes 0 and 1 of one job (a coordinator on a free local port,
  ``devices`` CPU devices each); their outputs. Both must exit 0; a timeout kills both."""
  port = free_port()
  procs = [
    subprocess.Popen(
      [
        *argv,
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ],
      cwd=ROOT,
      env=env(devices),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def run_two_processes(workdir, epochs, extra=()):
  argv = [sys.executable, "-m", "train", *ARGS, *extra, f"--config.num_epochs={epochs}"]
  return launch_two_processes([*argv, "--workdir", workdir], devices=2)


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize(
  "parallelism,sync",
  [("pmap", 1), ("mesh", 4)],  # mesh: statistics shared by all 4 devices, across both hosts
)
def test_two_processes_train_in_lockstep_and_match_one_process(tmp_path, parallelism, sync):
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  extra = (f"--config.parallelism={parallelism}", f"--config.norm_sync_devices={sync}")
  run_two_processes(multi, epochs=1, extra=extra)
  assert json.load(open(os.path.join(multi, "summary.json")))["epochs_completed"] == 1
  outs = run_two_processes(multi, epochs=2, extra=extra)  # Resumes from the 2-process checkpoint.
  assert "Resuming from step 8" in outs[0]
  # Process 1 finished at the same step with the same evaluation as process 0.
  summary = json.load(open(os.path.join(multi, "summary.json")))
  assert summary["processes"] == 2 and summary["devices"] == 4 and summary["step"] == 16
  assert summary["parallelism"] == parallelism and summary["statistics_batch_size"] == 2 * sync
  assert (
    f"completed at step 16: final eval accuracy {summary['final_eval_accuracy']:.6f}" in outs[1]
  )

  done = subprocess.run(
    [sys.executable, "-m", "train", *ARGS, *extra, "--config.num_epochs=2", "--workdir", single],
    cwd=ROOT,
    env=env(4),
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  a, b = records(multi), records(single)
  assert [r["step"] for r in a] == [r["step"] for r in b] == [8, 16]
  for ra, rb in zip(a, b):
    for k in ("train_loss", "eval_loss", "learning_rate", "lambda"):
      assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
    for k in ("train_accuracy", "eval_accuracy"):
      assert ra[k] == rb[k], k
