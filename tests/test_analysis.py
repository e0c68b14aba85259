"""Analysis tools: statistic capture, measured noise against the theory, plots."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbn_jax
from mbn_jax import analysis
from mbn_jax.analysis import plots


class TwoNorms(nn.Module):
  @nn.compact
  def __call__(self, x, train=True, step=None):
    x = nn.Dense(4)(x)
    x = nn.BatchNorm(momentum=0.9)(x, use_running_average=not train)
    h = x
    x = nn.Dense(3)(x)
    x = mbn_jax.MomentumBatchNorm(total_epochs=3, steps_per_epoch=2)(
      x, use_running_average=not train, step=step
    )
    return x, h


def test_capture_records_each_norm_input_statistics():
  model = TwoNorms()
  x = jax.random.normal(jax.random.key(0), (6, 5)) * 2 + 1
  v = model.init(jax.random.key(1), x, train=False)

  @jax.jit
  def step(v, x):
    with analysis.capture_norm_statistics():
      return model.apply(v, x, train=True, step=3, mutable=["batch_stats", analysis.NORM_STATS])

  (out, h), upd = step(v, x)
  stats = analysis.collect(upd[analysis.NORM_STATS])
  assert sorted(stats) == ["BatchNorm_0", "MomentumBatchNorm_0"]
  # Independent expectation: numpy statistics of the first norm's input.
  pre = np.asarray(x) @ np.asarray(v["params"]["Dense_0"]["kernel"]) + np.asarray(
    v["params"]["Dense_0"]["bias"]
  )
  np.testing.assert_allclose(stats["BatchNorm_0"]["batch_mean"], pre.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["BatchNorm_0"]["batch_var"], pre.var(0), rtol=1e-4, atol=1e-6)


def test_capture_records_once_per_call_for_every_batch_norm_of_a_network():
  from mbn_jax.models import create_model

  for norm in ("bn", "mbn", "brn"):
    model = create_model("resnet20", num_classes=10, norm=norm, total_epochs=2, steps_per_epoch=3)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    v = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype) * 0.05, v)
    with analysis.capture_norm_statistics():
      _, upd = jax.eval_shape(
        lambda v: model.apply(
          v, x, train=True, step=1, mutable=["batch_stats", analysis.NORM_STATS]
        ),
        v,
      )
    stats = analysis.collect(upd[analysis.NORM_STATS])
    assert len(stats) == 19 + 2, norm  # 19 conv norms + 2 shortcut-projection norms
    for path, rec in stats.items():
      assert rec["batch_mean"].shape == rec["batch_var"].shape, (norm, path)
      assert not isinstance(rec["batch_mean"], tuple), (norm, path)


def test_capture_is_off_by_default_and_off_in_eval():
  model = TwoNorms()
  x = jnp.ones((2, 5))
  v = model.init(jax.random.key(1), x, train=False)
  _, upd = model.apply(v, x, train=True, step=0, mutable=["batch_stats", analysis.NORM_STATS])
  assert analysis.NORM_STATS not in upd or not upd[analysis.NORM_STATS]
  with analysis.capture_norm_statistics():
    _, upd = model.apply(v, x, train=False, mutable=[analysis.NORM_STATS])
  assert not upd.get(analysis.NORM_STATS)


@pytest.mark.parametrize("m,lam", [(2, 0.0), (4, 0.0), (2, 0.8), (4, 0.5)])
def test_measured_noise_of_the_layer_matches_theory_on_iid_data(m, lam):
  """End to end: the real layer on i.i.d. Gaussian batches gives Eq. 2/10's noise."""
  layer = mbn_jax.MomentumBatchNorm()
  c, steps = 64, 600
  xs = jax.random.normal(jax.random.key(2), (steps, m, c)) * 3 + 1
  v = layer.init(jax.random.key(0), xs[0], use_running_average=False)

  def body(v, x):
    with analysis.capture_norm_statistics():
      _, upd = layer.apply(
        v, x, use_running_average=False, momentum=lam, mutable=["batch_stats", analysis.NORM_STATS]
      )
    s = upd["batch_stats"]
    rec = analysis.collect(upd[analysis.NORM_STATS])[""]
    return {**v, "batch_stats": s}, (
      rec["batch_mean"],
      rec["batch_var"],
      s["train_mean"],
      s["train_var"],
    )

  _, (bm, bv, nm, nv) = jax.lax.scan(body, v, xs)
  r = analysis.measure_noise(
    "layer", bm, bv, batch_size=m, momentum=lam, norm_means=nm, norm_vars=nv, skip=50
  )
  assert r.var_xi_mu == pytest.approx(r.predicted_var_xi_mu, rel=0.12)
  assert r.mean_xi_sigma == pytest.approx(r.predicted_mean_xi_sigma, rel=0.05)
  assert r.var_xi_sigma == pytest.approx(r.predicted_var_xi_sigma, rel=0.2)
  assert r.effective_batch_size == pytest.approx(m, rel=0.12)
  table = analysis.noise_table([r])
  assert table.count("\n") == 2 and f"| {m} |" in table


def test_measure_noise_rejects_bad_shapes():
  with pytest.raises(ValueError, match="shape"):
    analysis.measure_noise("x", np.zeros((5, 3)), np.zeros((5, 2)), batch_size=2)
  with pytest.raises(ValueError, match="at least 2 steps"):
    analysis.measure_noise("x", np.zeros((3, 3)), np.ones((3, 3)), batch_size=2, skip=2)


def test_plots_write_files(tmp_path):
  rng = np.random.default_rng(0)
  m = 8
  x = rng.standard_normal((500, m, 4))
  plots.plot_batch_statistics(x.mean(1), x.var(1), batch_size=m, path=tmp_path / "fig1.png")
  r = analysis.measure_noise("l", x.mean(1), x.var(1), batch_size=m)
  plots.plot_noise([r, r], path=tmp_path / "noise.png")
  assert (tmp_path / "fig1.png").stat().st_size > 10_000
  assert (tmp_path / "noise.png").stat().st_size > 10_000
