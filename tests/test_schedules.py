"""Eq. 11 (training momentum) and Eq. 12 (inference momentum)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbn_jax


def paper_eq11(t, T, m, m0):
  """Eq. 11 exactly as printed, in float64, with the paper's 1-based epoch t."""
  rho = min(m / m0, 1.0) ** (1.0 / T)
  return rho ** (T / (T - 1) * max(T - t, 0)) - rho**T


@pytest.mark.parametrize(
  "m,m0,T", [(2, 32, 200), (4, 32, 180), (8, 64, 10), (1, 32, 3), (31, 32, 7)]
)
def test_matches_printed_formula_for_every_epoch(m, m0, T):
  spe = 5
  steps = np.arange(T * spe)
  got = np.asarray(
    mbn_jax.train_momentum(
      jnp.asarray(steps), batch_size=m, total_epochs=T, steps_per_epoch=spe, ideal_batch_size=m0
    )
  )
  want = np.array([paper_eq11(s // spe + 1, T, m, m0) for s in steps])
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_first_epoch_is_zero_and_last_epoch_is_one_minus_ratio():
  kw = dict(batch_size=2, total_epochs=10, steps_per_epoch=7)
  for s in range(7):  # every step of epoch t = 1
    assert float(mbn_jax.train_momentum(s, **kw)) == 0.0
  last = float(mbn_jax.train_momentum(9 * 7, **kw))
  assert last == pytest.approx(1 - 2 / 32, abs=1e-6)


def test_zero_based_epoch_would_be_negative_but_we_never_are():
  # The trap the paper's 1-based t avoids: t = 0 gives a negative λ.
  assert paper_eq11(0, 10, 2, 32) < 0
  lam = mbn_jax.train_momentum(
    jnp.arange(-5, 200), batch_size=2, total_epochs=10, steps_per_epoch=3
  )
  assert float(lam.min()) >= 0.0 and float(lam.max()) < 1.0
  assert float(mbn_jax.train_momentum(-3, batch_size=2, total_epochs=10, steps_per_epoch=3)) == 0.0


def test_steps_beyond_the_end_stay_at_the_last_value():
  kw = dict(batch_size=4, total_epochs=5, steps_per_epoch=2)
  last = float(mbn_jax.train_momentum(4 * 2, **kw))
  for s in (10, 11, 1000, 10**6):
    assert float(mbn_jax.train_momentum(s, **kw)) == pytest.approx(last)
  assert last == pytest.approx(1 - 4 / 32, abs=1e-6)


def test_monotone_non_decreasing_in_step():
  lam = np.asarray(
    mbn_jax.train_momentum(jnp.arange(400), batch_size=2, total_epochs=40, steps_per_epoch=10)
  )
  assert np.all(np.diff(lam) >= 0)


@pytest.mark.parametrize("m", [32, 33, 64, 1000])
def test_batch_at_least_ideal_is_plain_bn(m):
  lam = mbn_jax.train_momentum(jnp.arange(100), batch_size=m, total_epochs=10, steps_per_epoch=10)
  assert np.all(np.asarray(lam) == 0.0)


def test_single_epoch_is_defined_as_plain_bn():
  # Eq. 11 has T/(T-1): T = 1 divides by zero. Defined as the first-epoch value 0.
  with pytest.raises(ZeroDivisionError):
    paper_eq11(1, 1, 2, 32)
  lam = mbn_jax.train_momentum(jnp.arange(50), batch_size=2, total_epochs=1, steps_per_epoch=10)
  assert np.all(np.asarray(lam) == 0.0)


def test_in_unit_interval_on_a_grid():
  for m in (1, 2, 3, 8, 16, 31):
    for T in (1, 2, 3, 50):
      lam = np.asarray(
        mbn_jax.train_momentum(
          jnp.arange(0, 3 * T + 3), batch_size=m, total_epochs=T, steps_per_epoch=2
        )
      )
      assert lam.min() >= 0 and lam.max() < 1, (m, T)


def test_one_compilation_for_many_steps_under_jit():
  traces = []

  @jax.jit
  def f(step):
    traces.append(1)
    return mbn_jax.train_momentum(step, batch_size=2, total_epochs=4, steps_per_epoch=3)

  vals = [float(f(jnp.int32(s))) for s in range(15)]
  assert len(traces) == 1
  want = [paper_eq11(min(s // 3 + 1, 4), 4, 2, 32) for s in range(15)]
  np.testing.assert_allclose(vals, want, atol=2e-6)


@pytest.mark.parametrize(
  "kwargs,name",
  [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=-2), "batch_size"),
    (dict(total_epochs=0), "total_epochs"),
    (dict(steps_per_epoch=0), "steps_per_epoch"),
    (dict(ideal_batch_size=0), "ideal_batch_size"),
    (dict(batch_size=2.5), "batch_size"),
  ],
)
def test_bad_arguments_name_themselves(kwargs, name):
  base = dict(batch_size=2, total_epochs=10, steps_per_epoch=5)
  base.update(kwargs)
  with pytest.raises((ValueError, TypeError), match=name):
    mbn_jax.train_momentum(0, **base)


def test_float_step_is_rejected():
  with pytest.raises(TypeError, match="step"):
    mbn_jax.train_momentum(1.5, batch_size=2, total_epochs=10, steps_per_epoch=5)


def test_inference_momentum_eq12():
  for m, m0, tau0 in [(2, 32, 0.85), (32, 32, 0.85), (64, 32, 0.9), (4, 64, 0.9)]:
    tau = mbn_jax.inference_momentum(m, ideal_batch_size=m0, tau0=tau0)
    assert tau == pytest.approx(math.exp(m / m0 * math.log(tau0)))
    # Same weight on the oldest sample after N samples: τ^(N/m) = τ0^(N/m0).
    N = 3200
    assert tau ** (N / m) == pytest.approx(tau0 ** (N / m0))
  # The paper's quoted value: m = 2, m0 = 32, τ0 = 0.85 gives τ ≈ 0.99.
  assert mbn_jax.inference_momentum(2) == pytest.approx(0.99, abs=1e-3)


@pytest.mark.parametrize("tau0", [0.0, 1.0, -0.1, 1.5])
def test_inference_momentum_rejects_tau0_outside_unit_interval(tau0):
  with pytest.raises(ValueError, match="tau0"):
    mbn_jax.inference_momentum(2, tau0=tau0)


def test_inference_momentum_rejects_bad_sizes():
  with pytest.raises(ValueError, match="batch_size"):
    mbn_jax.inference_momentum(0)
  with pytest.raises(ValueError, match="ideal_batch_size"):
    mbn_jax.inference_momentum(2, ideal_batch_size=-1)


def test_momentum_schedule_is_eq11_as_a_value():
  """momentum_schedule(...)(step) is train_momentum(step, ...): hand-derived points of Eq. 11."""
  sched = mbn_jax.momentum_schedule(batch_size=2, total_epochs=4, steps_per_epoch=3)
  r = 2 / 32
  for step, t in [(0, 1), (2, 1), (3, 2), (8, 3), (9, 4), (100, 4)]:
    want = r ** ((4 - t) / 3) - r  # λ = r^{(T − t)/(T − 1)} − r
    assert float(sched(step)) == pytest.approx(max(want, 0.0), abs=1e-6)
  assert sched.final_momentum == pytest.approx(1 - r)
  # Traced steps: one compilation for all of them.
  traced = jax.jit(sched)
  assert float(traced(jnp.int32(9))) == pytest.approx(1 - r)
  # A value: hashable, comparable, serializable.
  same = mbn_jax.MomentumSchedule(2, 4, 3, 32)
  assert sched == same and hash(sched) == hash(same)
  assert sched.to_dict() == {
    "batch_size": 2,
    "total_epochs": 4,
    "steps_per_epoch": 3,
    "ideal_batch_size": 32,
  }
  with pytest.raises(ValueError, match="total_epochs"):
    mbn_jax.momentum_schedule(batch_size=2, total_epochs=0, steps_per_epoch=3)


def test_the_layer_uses_a_given_schedule():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3)), jnp.float32)
  sched = mbn_jax.momentum_schedule(batch_size=2, total_epochs=4, steps_per_epoch=3)
  with_fields = mbn_jax.MomentumBatchNorm(total_epochs=4, steps_per_epoch=3)
  with_schedule = mbn_jax.MomentumBatchNorm(momentum_schedule=sched)
  v = with_fields.init(jax.random.key(0), x, False, step=0)
  v = {"params": v["params"], "batch_stats": {**v["batch_stats"], "train_mean": jnp.ones(3)}}
  for step in (0, 5, 11):
    a = with_fields.apply(v, x, False, step=step, mutable=["batch_stats"])
    b = with_schedule.apply(v, x, False, step=step, mutable=["batch_stats"])
    for s, t in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(s, t)
  # A schedule built for another statistics batch is refused, naming both m.
  wrong = mbn_jax.MomentumBatchNorm(
    momentum_schedule=mbn_jax.momentum_schedule(batch_size=8, total_epochs=4, steps_per_epoch=3)
  )
  with pytest.raises(ValueError, match="m=8.*m=2"):
    wrong.apply(v, x, False, step=3, mutable=["batch_stats"])
  # Any step -> λ function is accepted: a research variant's own λ(t).
  const = mbn_jax.MomentumBatchNorm(momentum_schedule=lambda step: jnp.float32(0.5))
  (_, upd) = const.apply(v, x, False, step=3, mutable=["batch_stats"])
  want = 0.5 * 1.0 + 0.5 * np.asarray(x).mean(0)
  np.testing.assert_allclose(upd["batch_stats"]["train_mean"], want, rtol=1e-6)


def test_without_the_ramp_lambda_is_final_from_the_first_step():
  """Fine-tuning from pretrained statistics: λ = 1 − m/m0 at every step (and 0 when m ≥ m0)."""
  from mbn_jax.schedules import momentum_schedule

  ramp = momentum_schedule(batch_size=2, total_epochs=9, steps_per_epoch=10)
  flat = momentum_schedule(batch_size=2, total_epochs=9, steps_per_epoch=10, ramp=False)
  steps = jnp.arange(0, 120, 7)
  np.testing.assert_allclose(flat(steps), np.full(steps.shape, 1 - 2 / 32), rtol=1e-6)
  assert float(ramp(0)) == 0.0 and flat.final_momentum == pytest.approx(ramp.final_momentum)
  big = momentum_schedule(batch_size=64, total_epochs=9, steps_per_epoch=10, ramp=False)
  assert float(big(5)) == 0.0
  with pytest.raises(ValueError, match="ramp must be"):
    momentum_schedule(batch_size=2, total_epochs=9, steps_per_epoch=10, ramp="no")
