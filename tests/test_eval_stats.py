"""tools.eval_stats: pooled population statistics and re-evaluation of a tiny real run."""

import json
import pathlib

import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from tools import eval_stats
from train import train as train_lib

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


def test_reevaluates_a_run_with_each_kind_of_statistics(tmp_path):
  workdir = str(tmp_path / "mbn")
  summary = train_lib.train_and_evaluate(
    tiny_config(norm="mbn", num_epochs=2, mbn_total_epochs=2), workdir
  )
  result = eval_stats.evaluate_run(workdir, batch=16, precise_batches=4, replays=2)
  # 'moving' is what the training program itself measured at the end.
  assert result["moving"] == pytest.approx(summary["final_eval_accuracy"], abs=1e-6)
  assert result["norm"] == "mbn" and result["m"] == 2
  for kind in ("precise", "mbn_train"):
    assert 0.0 <= result[kind] <= 1.0
  # Replays: the run's τ (Eq. 12, m = 2) and λ of its last epoch (Eq. 11), 2 estimates each.
  assert result["replay_momentum"]["replay_own"] == pytest.approx(0.85 ** (2 / 32))
  assert result["replay_momentum"]["replay_lambda"] == pytest.approx(1 - 2 / 32)
  replays = result["replay_own"] + result["replay_lambda"] + result["replay_train_mode"]
  assert len(replays) == 6 and all(0.0 <= a <= 1.0 for a in replays)
  table = eval_stats.tables([result])
  assert "| mbn | 2 | 1 |" in table and pathlib.Path(workdir).name in table
  assert "replay, own momentum" in table
  json.dumps(result)  # the .json output


def test_rejects_norms_without_batch_statistics(tmp_path):
  workdir = str(tmp_path / "gn")
  train_lib.train_and_evaluate(tiny_config(norm="gn", model="mlp", num_epochs=1), workdir)
  with pytest.raises(ValueError, match="eval_stats supports norms with re-estimable"):
    eval_stats.evaluate_run(workdir, batch=16, precise_batches=2)


def test_replay_ema_matches_the_closed_form_weights():
  rng = np.random.default_rng(1)
  start = {"a": (rng.normal(size=3), rng.uniform(1, 2, size=3))}
  stream = [{"a": (rng.normal(size=3), rng.uniform(1, 2, size=3))} for _ in range(7)]
  tau = 0.8
  out = eval_stats.replay_ema(start, iter(stream), tau)
  n = len(stream)
  for i in (0, 1):  # mean, var: start·τ^n + Σ_k (1 − τ) τ^(n−k) b_k
    want = tau**n * start["a"][i] + sum(
      (1 - tau) * tau ** (n - k) * stream[k - 1]["a"][i] for k in range(1, n + 1)
    )
    np.testing.assert_allclose(out["a"][i], want, rtol=1e-12)
  assert eval_stats.replay_steps(0.99) == 459  # 0.99**459 < 0.01 < 0.99**458
  assert 0.99**459 < 0.01 < 0.99**458
  with pytest.raises(ValueError, match="momentum must lie in"):
    eval_stats.replay_ema(start, iter(stream), 1.0)
