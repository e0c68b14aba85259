"""train.eval_stats: pooled population statistics and re-evaluation of a tiny real run."""
import json
import pathlib

import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from train import eval_stats
from train import train as train_lib

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


def test_pooled_statistics_equal_the_statistics_of_all_batches_together():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(6, 50, 4))  # 6 batches of 50, 4 features
  mean, var = eval_stats.pooled_statistics(x.mean(1), x.var(1))
  flat = x.reshape(-1, 4)
  np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
  np.testing.assert_allclose(var, flat.var(0), rtol=1e-12)


def test_reevaluates_a_run_with_each_kind_of_statistics(tmp_path):
  workdir = str(tmp_path / "mbn")
  summary = train_lib.train_and_evaluate(
      tiny_config(norm="mbn", num_epochs=2, mbn_total_epochs=2), workdir)
  result = eval_stats.evaluate_run(workdir, batch=16, precise_batches=4)
  # 'moving' is what the training program itself measured at the end.
  assert result["moving"] == pytest.approx(summary["final_eval_accuracy"], abs=1e-6)
  assert result["norm"] == "mbn" and result["m"] == 2
  for kind in ("precise", "mbn_train"):
    assert 0.0 <= result[kind] <= 1.0
  table = eval_stats.tables([result])
  assert "| mbn | 2 | 1 |" in table and pathlib.Path(workdir).name in table
  json.dumps(result)  # the .json output


def test_rejects_norms_without_batch_statistics(tmp_path):
  workdir = str(tmp_path / "gn")
  train_lib.train_and_evaluate(tiny_config(norm="gn", model="mlp", num_epochs=1), workdir)
  with pytest.raises(ValueError, match="eval_stats supports norms"):
    eval_stats.evaluate_run(workdir, batch=16, precise_batches=2)
