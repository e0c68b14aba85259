"""tools.noise_probe on a tiny real run: measured noise rows for BN and MBN."""

import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from tools import noise_probe
from train import train as train_lib

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")


@pytest.mark.parametrize("norm", ["bn", "mbn"])
def test_probe_measures_every_batch_norm_layer(tmp_path, norm):
  workdir = str(tmp_path / norm)
  train_lib.train_and_evaluate(tiny_config(norm=norm, num_epochs=2, mbn_total_epochs=2), workdir)
  rows, (bm, bv, m, _) = noise_probe.probe_run(workdir, steps=20, skip=5)
  main = [r for r in rows if not r.layer.endswith("]")]
  assert len(main) == 2  # tiny_cnn has two norm layers
  lam = 1 - 2 / 32 if norm == "mbn" else 0.0
  for r in main:
    assert r.batch_size == 2 and r.momentum == pytest.approx(lam) and r.steps == 15
    assert np.isfinite(r.var_xi_mu) and r.var_xi_mu > 0
    assert r.predicted_var_xi_mu == pytest.approx((1 - lam) / ((1 + lam) * 2))
  if norm == "mbn":
    # The same layer's batch statistics are much noisier than MBN's normalizer.
    raw = [r for r in rows if r.layer.endswith("[batch stats]")]
    assert len(raw) == 2
    for r, b in zip(main, raw):
      assert r.var_xi_mu < 0.5 * b.var_xi_mu
  assert bm.shape == bv.shape and bm.shape[0] == 20 and m == 2
