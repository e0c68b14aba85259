"""--config.init_from=WORKDIR: a run starts from a finished run's network (fine-tuning).

Independent expectations: the source's own checkpoint (the new run's state
before its first step must hold exactly its parameters and statistics, or
the converted ones of mbn_jax.convert's table), the source's files (never
changed), and the program's error contract (one error: line, exit 2).
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from train import checkpoints as ckpt_lib
from train import init_from, resume, setup
from train import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A finished BN run (tiny CNN on digits), the network every test starts from."""
  workdir = tmp_path_factory.mktemp("src") / "bn"
  summary = train_lib.train_and_evaluate(tiny_config(norm="bn", num_epochs=1), str(workdir))
  assert summary["status"] == "completed"
  return workdir


def _start(config, workdir):
  """The state the run would train from (set up and restored, no step taken)."""
  layout = train_lib.validate_config(config, str(workdir))
  s = setup.set_up(config, str(workdir), layout)
  p = resume.restore(s, config_checked=False) or setup.start(s)
  return s, jax.device_get(s.parallel.first(p.state))


def test_mbn_starts_from_the_pretrained_statistics_and_parameters(source, tmp_path):
  src = ckpt_lib.restore_latest(str(source))
  config = tiny_config(norm="mbn", init_from=str(source), mbn_lambda_ramp=False)
  s, state = _start(config, tmp_path / "ft")
  for layer in ("norm0", "norm1"):
    stats = state.batch_stats[layer]
    for name, src_name in (
      ("mean", "mean"),
      ("var", "var"),
      ("train_mean", "mean"),
      ("train_var", "var"),
    ):
      np.testing.assert_array_equal(stats[name], src["batch_stats"][layer][src_name])
  jax.tree.map(np.testing.assert_array_equal, state.params, src["params"])
  assert float(s.rule.momentum(0)) == pytest.approx(1 - 2 / 32)  # λ final from the first step
  record = json.load(open(tmp_path / "ft" / "config.json"))["init_from"]
  assert record["workdir"] == str(source) and record["statistics"] == "moving"
  assert record["derived"] == 4 and not record["head_reinitialized"]


def test_frozen_bn_fine_tuning_runs_resumes_without_the_source_and_leaves_it_unchanged(
  source, tmp_path
):
  src = shutil.copytree(source, tmp_path / "src")
  before = {f: os.path.getmtime(os.path.join(dp, f)) for dp, _, fs in os.walk(src) for f in fs}
  work = tmp_path / "ft"
  first = train_lib.train_and_evaluate(
    tiny_config(norm="frozen_bn", num_epochs=1, init_from=str(src)), str(work)
  )
  assert first["status"] == "completed" and first["init_from"]["workdir"] == str(src)
  after = {f: os.path.getmtime(os.path.join(dp, f)) for dp, _, fs in os.walk(src) for f in fs}
  assert before == after  # read only
  stats = ckpt_lib.restore_latest(str(work))["batch_stats"]
  src_state = ckpt_lib.restore_latest(str(src))
  np.testing.assert_array_equal(stats["norm0"]["mean"], src_state["batch_stats"]["norm0"]["mean"])
  np.testing.assert_array_equal(stats["norm0"]["scale"], src_state["params"]["norm0"]["scale"])
  shutil.rmtree(src)  # resuming never reads the source again
  more = train_lib.train_and_evaluate(
    tiny_config(norm="frozen_bn", num_epochs=2, init_from=str(src)), str(work)
  )
  assert more["status"] == "completed" and more["epochs_completed"] == 2
  assert more["init_from"]["workdir"] == str(src)


def test_the_head_is_reinitialized_on_request(source, tmp_path):
  src = ckpt_lib.restore_latest(str(source))
  config = tiny_config(norm="bn", init_from=str(source), init_from_reset_head=True)
  _, state = _start(config, tmp_path / "ft")
  assert not np.array_equal(state.params["head"]["kernel"], src["params"]["head"]["kernel"])
  np.testing.assert_array_equal(state.params["conv0"]["kernel"], src["params"]["conv0"]["kernel"])


def _unfinished(source, tmp_path):
  copy = shutil.copytree(source, tmp_path / "unfinished")
  summary = json.load(open(copy / "summary.json"))
  summary["status"] = "interrupted"
  json.dump(summary, open(copy / "summary.json", "w"))
  return copy


@pytest.mark.parametrize(
  "make, overrides, message",
  [
    (lambda s, t: t / "nowhere", {}, "no such directory"),
    (_unfinished, {}, "not 'completed'"),
    (lambda s, t: s, {"model": "mlp"}, "trained model='tiny_cnn'"),
  ],
)
def test_a_bad_source_is_one_error_line_before_anything_is_compiled(
  source, tmp_path, make, overrides, message
):
  path = make(source, tmp_path)
  flags = [f"--config.{k}={v}" for k, v in {"init_from": path, **overrides}.items()]
  p = subprocess.run(
    [
      sys.executable,
      "-m",
      "train",
      "--config=configs/quickstart.py",
      f"--workdir={tmp_path / 'w'}",
      "--config.norms=",
      "--config.norm=frozen_bn",
      "--config.num_epochs=1",
      *flags,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.init_from=") and message in last, last
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_a_damaged_source_is_refused_and_left_in_place(source, tmp_path):
  copy = shutil.copytree(source, tmp_path / "damaged")
  for step_dir in (copy / "checkpoints").iterdir():
    for item in step_dir.rglob("*"):
      if item.is_file() and item.stat().st_size > 1000:
        data = bytearray(item.read_bytes())
        data[len(data) // 2] ^= 0xFF
        item.write_bytes(bytes(data))
  with pytest.raises(init_from.InitFromError, match="no checkpoint of it verifies"):
    init_from.load_source(tiny_config(init_from=str(copy)))
  assert sorted(p.name for p in (copy / "checkpoints").iterdir())  # nothing moved aside
  assert not (copy / "checkpoints_damaged").exists()
