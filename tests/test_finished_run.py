"""tools.finished_run reads m from the run's layout: global_batch_size and shared statistics.

The expectations are hand-derived: with ``global_batch_size=16`` on 4 devices
m = 4; with ``norm_sync_devices=-1`` the 4 devices share statistics, so the
statistics batch is m·G = 2·4 = 8; Eq. 11's last-epoch λ is 1 − m/m0.
"""

import json
import os

import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from tools import eval_stats, noise_probe
from tools.finished_run import load_run
from train import train as train_lib
from train.layout import layout_of_record

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


def _run(tmp_path, name, **overrides):
  workdir = str(tmp_path / name)
  config = tiny_config(num_epochs=2, mbn_total_epochs=2, **overrides)
  summary = train_lib.train_and_evaluate(config, workdir)
  assert summary["status"] == "completed"
  return workdir, summary


def test_global_batch_size_run(tmp_path):
  workdir, summary = _run(tmp_path, "global", global_batch_size=16)
  assert summary["layout"] == {
    "per_device_batch_size": 4,
    "devices": 4,
    "global_batch_size": 16,
    "norm_sync_devices": 1,
    "statistics_batch_size": 4,
    "grad_accum_steps": 1,
  }
  run = load_run(workdir)
  assert run.layout.per_device_batch_size == 4 and run.replay_batch_size == 4
  assert run.final_lambda == pytest.approx(1 - 4 / 32)  # λ at t = T = 2 with m = 4
  # The λ the training program logged is the same value (one schedule for both).
  last = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  assert last["lambda"] == pytest.approx(run.final_lambda)
  result = eval_stats.evaluate_run(workdir, batch=16, precise_batches=2, replays=1)
  assert result["m"] == 4
  assert result["replay_momentum"]["replay_own"] == pytest.approx(0.85 ** (4 / 32))
  # noise_probe replays batches of m = 4 (not the config's per_device_batch_size).
  rows, (bm, _, m, _) = noise_probe.probe_run(workdir, steps=8, skip=2)
  assert m == 4 and bm.shape[0] == 8
  main = [r for r in rows if not r.layer.endswith("]")]
  assert all(r.batch_size == 4 and r.momentum == pytest.approx(1 - 4 / 32) for r in main)


def test_synchronized_statistics_run(tmp_path):
  workdir, summary = _run(tmp_path, "sync", norm_sync_devices=-1)
  assert summary["norm_sync_devices"] == 4 and summary["statistics_batch_size"] == 8
  run = load_run(workdir)
  assert run.layout.norm_sync_devices == 4 and run.replay_batch_size == 8
  assert run.final_lambda == pytest.approx(1 - 8 / 32)
  last = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  assert last["lambda"] == pytest.approx(run.final_lambda)
  # One device replays the statistics batch of 8 (the tools used to refuse or break here).
  result = eval_stats.evaluate_run(workdir, batch=16, precise_batches=2, replays=1)
  assert result["m"] == 8 and result["moving"] == pytest.approx(
    summary["final_eval_accuracy"], abs=1e-6
  )
  # 64 training images in batches of 8: one epoch of the replay stream is 8 batches.
  rows, (bm, _, m, _) = noise_probe.probe_run(workdir, steps=8, skip=2)
  assert m == 8 and bm.shape[0] == 8
  main = [r for r in rows if not r.layer.endswith("]")]
  assert all(r.batch_size == 8 and r.momentum == pytest.approx(1 - 8 / 32) for r in main)


def test_records_without_a_saved_layout_are_read_from_run_info():
  """config.json written before the layout was saved: run_info and the config decide."""
  old = {
    "config": {"sync_batch_stats": True, "grad_accum_steps": 1},
    "run_info": {"devices": 4, "per_device_batch_size": 2, "global_batch_size": 8},
  }
  layout = layout_of_record(old)
  assert (layout.per_device_batch_size, layout.norm_sync_devices) == (2, 4)
  assert layout.statistics_batch_size == 8 and layout.global_batch_size == 8
  old["config"]["sync_batch_stats"] = False
  assert layout_of_record(old).statistics_batch_size == 2
  # Every committed run record still loads.
  root = os.path.join(os.path.dirname(__file__), "..", "docs", "results")
  found = 0
  for dirpath, _, files in os.walk(root):
    if "config.json" in files:
      with open(os.path.join(dirpath, "config.json")) as f:
        record = json.load(f)
      lay = layout_of_record(record)
      assert lay.statistics_batch_size >= lay.per_device_batch_size >= 1
      assert np.isclose(lay.global_batch_size, record["run_info"]["global_batch_size"])
      found += 1
  assert found > 0
