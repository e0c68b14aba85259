"""A full disk (ENOSPC) at any moment of a run, through ``python -m train``.

docs/training.md, "Failure behaviour": the run exits 2, its last stderr line is
the one ``error: no space left on device (ENOSPC) while writing '<path>' ...``
line, no traceback appears anywhere (Orbax's background writes of a failed
checkpoint end before the error is reported), and the same command, rerun
once space is freed, resumes from the newest good checkpoint and ends
bit-exact with an uninterrupted run.

Each case runs in a private mount namespace (``unshare -m``) with the workdir
on a small tmpfs, sized from an uninterrupted reference run (tmpfs counts
whole pages per file) so that it fills at the wanted moment: while the first
checkpoint is written (no checkpoint yet), while a later checkpoint is written,
and while metrics (``metrics.jsonl``, the TensorBoard file) are written. The
tmpfs is then remounted larger (space freed) and the same command reruns.
Skipped where the machine does not allow ``unshare -m`` and mounting a tmpfs.
"""

import errno
import json
import math
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.test_reliability import _cli_overrides
from train import checkpoints as ckpt_lib
from train import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs allocates whole pages
ENV = dict(
  os.environ,
  XLA_FLAGS="--xla_force_host_platform_device_count=4",  # _cli_overrides: 8 steps per epoch
  JAX_PLATFORMS="cpu",
  TF_CPP_MIN_LOG_LEVEL="3",
  PYTHONPATH=str(ROOT),
  JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"],
  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
)


def _namespace_problem() -> str | None:
  """Why a tmpfs cannot be mounted in a private mount namespace here (None: it can)."""
  if shutil.which("unshare") is None:
    return "the unshare command is not installed"
  probe = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"mbn_jax_unshare_probe_{os.getpid()}"
  probe.mkdir(exist_ok=True)
  try:
    p = subprocess.run(
      ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {shlex.quote(str(probe))}"],
      capture_output=True,
      text=True,
      timeout=60,
    )
  finally:
    probe.rmdir()
  if p.returncode != 0:
    return f"unshare -m / mount -t tmpfs not permitted here: {' '.join(p.stderr.split())[:200]}"
  return None


_PROBLEM = _namespace_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=f"needs a private tmpfs: {_PROBLEM}")


def _command(workdir) -> list[str]:
  return [
    sys.executable,
    "-m",
    "train",
    "--config=configs/quickstart.py",
    f"--workdir={workdir}",
    *[f"--config.{o}" for o in _cli_overrides()],
  ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The same 2-epoch run (checkpoints at steps 8 and 16), uninterrupted on a normal disk."""
  workdir = tmp_path_factory.mktemp("disk_full") / "reference"
  p = subprocess.run(_command(workdir), cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert p.returncode == 0, p.stderr[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["16", "8"]
  return workdir


def _pages(path: pathlib.Path) -> int:
  files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
  return sum(max(1, math.ceil(f.stat().st_size / PAGE)) for f in files)


def _disk_size(reference: pathlib.Path, moment: str) -> int:
  """A tmpfs size (bytes) that fills at ``moment``, from what the reference run wrote.

  The run writes, in order: config.json; the TensorBoard file's first event;
  per epoch a metrics.jsonl line and TensorBoard events, then the checkpoint;
  at the end summary.json. A checkpoint's moment leaves half of its pages free.
  """
  config = _pages(reference / "config.json")
  before_first_checkpoint = (
    config + _pages(reference / "tensorboard") + _pages(reference / "metrics.jsonl")
  )
  first, later = (_pages(reference / "checkpoints" / step) for step in ("8", "16"))
  pages = {
    "tensorboard": config,  # the event file's first flush finds no page
    "metrics.jsonl": config + 1,  # ... nor metrics.jsonl's first line
    "first checkpoint": before_first_checkpoint + first // 2,
    "later checkpoint": before_first_checkpoint + first + later // 2,
  }[moment]
  return pages * PAGE


def _fill_then_free(reference, tmp_path, moment: str) -> dict:
  """Runs the command on a tmpfs that fills at ``moment``, frees space, reruns the same command.

  Returns each run's ``rc``/``out``/``err`` (1: on the full disk, 2: the rerun),
  the files left by the first run and the workdir (copied out) after the rerun.
  """
  disk, logs, after = tmp_path / "disk", tmp_path / "logs", tmp_path / "after"
  disk.mkdir()
  logs.mkdir()
  workdir = disk / "run"
  command = shlex.join(_command(workdir))
  q = lambda p: shlex.quote(str(p))
  script = f"""
    mount -t tmpfs -o size={_disk_size(reference, moment)} tmpfs {q(disk)} || exit 99
    {command} > {q(logs / "out1")} 2> {q(logs / "err1")}; echo $? > {q(logs / "rc1")}
    find {q(workdir)} > {q(logs / "files1")}
    mount -o remount,size=256m {q(disk)} || exit 98
    {command} > {q(logs / "out2")} 2> {q(logs / "err2")}; echo $? > {q(logs / "rc2")}
    cp -a {q(workdir)} {q(after)}
  """
  p = subprocess.run(
    ["unshare", "-m", "sh", "-c", script],
    cwd=ROOT,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
  read = lambda name: (logs / name).read_text()
  return {
    "rc1": int(read("rc1")),
    "out1": read("out1"),
    "err1": read("err1"),
    "files1": read("files1"),
    "rc2": int(read("rc2")),
    "out2": read("out2"),
    "err2": read("err2"),
    "workdir": workdir,
    "after": after,
  }


def _assert_disk_full(runs: dict, path: pathlib.Path) -> None:
  """Exit 2, one ``error:`` line naming ENOSPC and ``path``, last on stderr; no traceback."""
  out, err = runs["out1"], runs["err1"]
  assert runs["rc1"] == 2, (out + err)[-3000:]
  assert "Traceback" not in out + err, (out + err)[-3000:]
  errors = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-3000:]
  full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
  assert errors[0] == "error: " + cli.disk_full_message(full, None)
  assert errors[0].startswith(f"error: no space left on device (ENOSPC) while writing '{path}'")
  assert "rerun the same command" in errors[0]
  assert "orbax-checkpoint-tmp" not in runs["files1"]  # a failed save leaves no partial step


def _epochs(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [
    {k: v for k, v in r.items() if k not in ("images_per_sec", "data_wait_share")} for r in records
  ]


def _assert_resumed_bit_exact(runs: dict, reference, resumed_from: int | None) -> None:
  """The rerun completed; its checkpoints, epochs and summary are the uninterrupted run's."""
  out, err = runs["out2"], runs["err2"]
  assert runs["rc2"] == 0, (out + err)[-3000:]
  assert "Traceback" not in out + err and "error:" not in err, (out + err)[-3000:]
  if resumed_from is None:
    assert "Resuming" not in out
  else:
    assert f"Resuming from step {resumed_from} " in out, out[-2000:]
  after = runs["after"]
  assert sorted(os.listdir(after / "checkpoints")) == ["16", "8"]
  got, want = ckpt_lib.restore_latest(str(after)), ckpt_lib.restore_latest(str(reference))
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)
  assert _epochs(after) == _epochs(reference)
  summary, uninterrupted = (
    json.loads((d / "summary.json").read_text()) for d in (after, reference)
  )
  assert summary["status"] == "completed" and summary["step"] == 16
  for key in ("final_eval_accuracy", "final_eval_loss", "final_train_loss", "best_eval_accuracy"):
    assert summary[key] == uninterrupted[key], key


def test_disk_full_before_the_first_checkpoint(reference, tmp_path):
  """The first checkpoint does not fit: no checkpoint exists; the rerun starts over."""
  runs = _fill_then_free(reference, tmp_path, "first checkpoint")
  _assert_disk_full(runs, runs["workdir"] / "checkpoints")
  assert "checkpoints/8" not in runs["files1"]
  _assert_resumed_bit_exact(runs, reference, resumed_from=None)


def test_disk_full_during_a_later_checkpoint(reference, tmp_path):
  """The second checkpoint does not fit: the first stays good; the rerun resumes from it."""
  runs = _fill_then_free(reference, tmp_path, "later checkpoint")
  _assert_disk_full(runs, runs["workdir"] / "checkpoints")
  assert f"{runs['workdir']}/checkpoints/8/" in runs["files1"]
  assert "checkpoints/16" not in runs["files1"]
  _assert_resumed_bit_exact(runs, reference, resumed_from=8)


@pytest.mark.parametrize("written", ["metrics.jsonl", "tensorboard"])
def test_disk_full_while_metrics_are_written(reference, tmp_path, written):
  """metrics.jsonl's first line, or the TensorBoard file's first event, does not fit."""
  runs = _fill_then_free(reference, tmp_path, written)
  _assert_disk_full(runs, runs["workdir"] / written)
  assert "checkpoints/8" not in runs["files1"]
  _assert_resumed_bit_exact(runs, reference, resumed_from=None)
