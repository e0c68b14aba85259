"""MABN and FrozenBN through the training program, decided by their capabilities.

Independent expectations: the pmap run (mesh must train the same), an
uninterrupted run (an interrupted and resumed one must equal it bit for bit,
both ring buffers and the iteration counter included), the layer's own
per-step arithmetic (tests/test_mabn.py) for the number of iterations, and
FrozenBN's initial statistics (training must leave them where they were).
"""

import jax
import numpy as np
import pytest

from tests.test_parallel import compare_runs, quick
from train import checkpoints as ckpt_lib
from train import train as train_lib

pytestmark = pytest.mark.skipif(jax.local_device_count() != 4, reason="needs 4 devices")


def _per_device(workdir):
  return ckpt_lib.restore_latest(str(workdir))["batch_stats_per_device"]


@pytest.mark.parametrize("accum", [1, 2])
def test_mabn_trains_the_same_under_mesh_and_pmap_with_per_device_buffers(tmp_path, accum):
  extra = dict(
    grad_accum_steps=accum,
    centered_weights=True,
    mabn_buffer_size=3,
    mabn_warmup_iters=2,
    mabn_r_clip_start=5,
    precise_stats_batches=2,
  )
  sa = train_lib.train_and_evaluate(quick("pmap", "mabn", **extra), str(tmp_path / "pmap"))
  sb = train_lib.train_and_evaluate(quick("mesh", "mabn", **extra), str(tmp_path / "mesh"))
  assert sa["status"] == sb["status"] == "completed"
  assert sb["train_step_traces"] == 1
  compare_runs(tmp_path / "pmap", tmp_path / "mesh")
  rows = _per_device(tmp_path / "pmap")
  layer = rows["norm0"]
  iterations = 2 * 64 // 8  # 2 epochs of 64 images, 8 per micro-batch: one MABN call each
  np.testing.assert_array_equal(layer["iters"], np.full(4, iterations))
  # Per device: four different ψ buffers, each folded (not the initial zeros).
  gz = np.asarray(layer["buffer_gz"])
  assert np.all(np.any(gz != 0, axis=(1, 2)))
  assert not np.allclose(gz[0], gz[1])
  # MABN's statistics cannot be re-estimated: no precise evaluation was made.
  assert sa.get("final_eval_accuracy_precise") is None


def test_an_interrupted_mabn_run_resumes_bit_exactly(tmp_path):
  extra = dict(mabn_buffer_size=3, mabn_warmup_iters=2, mabn_r_clip_start=5)
  straight = tmp_path / "straight"
  train_lib.train_and_evaluate(quick("pmap", "mabn", **extra), str(straight))
  resumed = tmp_path / "resumed"
  train_lib.train_and_evaluate(quick("pmap", "mabn", num_epochs=1, **extra), str(resumed))
  summary = train_lib.train_and_evaluate(quick("pmap", "mabn", **extra), str(resumed))
  assert summary["status"] == "completed"
  a, b = ckpt_lib.restore_latest(str(straight)), ckpt_lib.restore_latest(str(resumed))
  for key in ("params", "opt_state", "batch_stats", "batch_stats_per_device"):
    jax.tree.map(np.testing.assert_array_equal, a[key], b[key])


def test_frozen_bn_statistics_never_move_in_training(tmp_path):
  summary = train_lib.train_and_evaluate(
    quick("pmap", "frozen_bn", precise_stats_batches=2), str(tmp_path / "run")
  )
  assert summary["status"] == "completed"
  rows = _per_device(tmp_path / "run")
  for layer in ("norm0", "norm1"):
    np.testing.assert_array_equal(rows[layer]["mean"], 0.0)
    np.testing.assert_array_equal(rows[layer]["var"], 1.0)
    np.testing.assert_array_equal(rows[layer]["scale"], 1.0)
    np.testing.assert_array_equal(rows[layer]["bias"], 0.0)
  assert "norm0" not in ckpt_lib.restore_latest(str(tmp_path / "run"))["params"]


@pytest.mark.parametrize("norm", ["mabn", "frozen_bn"])
def test_statistics_groups_are_refused_for_norms_that_do_not_synchronize(tmp_path, norm):
  with pytest.raises(ValueError, match="never synchronizes"):
    train_lib.train_and_evaluate(quick("pmap", norm, norm_sync_devices=2), str(tmp_path / "g2"))
