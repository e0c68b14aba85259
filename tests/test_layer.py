"""MomentumBatchNorm (flax.linen): Eq. 8, Eq. 13, Algorithm 1's updates, edges."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbn_jax
from mbn_jax import MomentumBatchNorm

KEY = jax.random.key(0)


def rand(shape, seed=0, scale=2.0, shift=0.5, dtype=jnp.float32):
  return (jax.random.normal(jax.random.key(seed), shape) * scale + shift).astype(dtype)


def with_stats(variables, train_mean, train_var, mean=None, var=None):
  stats = dict(variables["batch_stats"])
  stats["train_mean"], stats["train_var"] = train_mean, train_var
  if mean is not None:
    stats["mean"], stats["var"] = mean, var
  return {**variables, "batch_stats": stats}


def init(layer, x):
  return layer.init(KEY, x, use_running_average=False)


# --------------------------------------------------------------------- Eq. 13
def eq13_input_gradient(x, g, gamma, mu_old, var_old, lam, eps):
  """The paper's Eq. 13, by hand, for x of shape (m, C) and dL/dy = g.

  (Eq. 13 prints (x̂_i − μ_M) in ∂L/∂σ²_B; the derivative is of (x_i − μ_M).)
  """
  m = x.shape[0]
  mu_b, var_b = x.mean(0), x.var(0)
  mu_m = lam * mu_old + (1 - lam) * mu_b
  var_m = lam * var_old + (1 - lam) * var_b
  dxhat = g * gamma
  dvar_b = np.sum(dxhat * (x - mu_m), 0) * -0.5 * (var_m + eps) ** -1.5 * (1 - lam)
  dmu_b = (
    np.sum(dxhat * (lam - 1) / np.sqrt(var_m + eps), 0) + dvar_b * np.sum(-2 * (x - mu_b), 0) / m
  )
  return dxhat / np.sqrt(var_m + eps) + dvar_b * 2 * (x - mu_b) / m + dmu_b / m


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9375])
def test_gradient_is_eq13_and_a_finite_difference(lam):
  with jax.enable_x64(True):
    m, c, eps = 3, 4, 1e-5
    x = np.asarray(rand((m, c), 1), np.float64)
    g = np.asarray(rand((m, c), 2, 1.0, 0.0), np.float64)
    gamma = np.asarray(rand((c,), 3, 0.5, 1.0), np.float64)
    mu_old = np.asarray(rand((c,), 4), np.float64)
    var_old = np.asarray(rand((c,), 5, 1.0, 0.0), np.float64) ** 2 + 0.5
    layer = MomentumBatchNorm(epsilon=eps)
    v = init(layer, jnp.asarray(x))
    v = {
      "params": {"scale": jnp.asarray(gamma), "bias": jnp.zeros(c)},
      "batch_stats": with_stats(v, jnp.asarray(mu_old), jnp.asarray(var_old))["batch_stats"],
    }

    def loss(xx):
      y, _ = layer.apply(v, xx, use_running_average=False, momentum=lam, mutable=["batch_stats"])
      return jnp.sum(y * g)

    got = np.asarray(jax.grad(loss)(jnp.asarray(x)))
    want = eq13_input_gradient(x, g, gamma, mu_old, var_old, lam, eps)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    h = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 3)]:
      e = np.zeros_like(x)
      e[i, j] = h
      fd = (loss(jnp.asarray(x + e)) - loss(jnp.asarray(x - e))) / (2 * h)
      assert float(fd) == pytest.approx(got[i, j], rel=1e-6, abs=1e-8)


def test_previous_moving_statistics_get_no_gradient():
  x = rand((4, 3))
  layer = MomentumBatchNorm()
  v = init(layer, x)

  def loss(stats):
    vv = {"params": v["params"], "batch_stats": stats}
    y, _ = layer.apply(vv, x, use_running_average=False, momentum=0.5, mutable=["batch_stats"])
    return jnp.sum(y**2 * jnp.arange(3.0))

  grads = jax.grad(loss)(v["batch_stats"])
  for name in ("train_mean", "train_var", "mean", "var"):
    assert np.all(np.asarray(grads[name]) == 0.0), name


# ------------------------------------------------- λ = 0 equals Flax BatchNorm
@pytest.mark.parametrize("shape,axis", [((6, 5), -1), ((3, 4, 4, 5), -1), ((3, 5, 4, 4), 1)])
def test_lambda_zero_equals_flax_batchnorm(shape, axis):
  x = rand(shape)
  m = shape[0]
  tau = mbn_jax.inference_momentum(m)
  mbn = MomentumBatchNorm(axis=axis)
  bn = nn.BatchNorm(axis=axis, momentum=tau)
  vm, vb = init(mbn, x), bn.init(KEY, x, use_running_average=False)
  # Non-trivial parameters and stored statistics, identical in both.
  c = shape[axis]
  params = {"scale": rand((c,), 7, 0.3, 1.0), "bias": rand((c,), 8, 0.3, 0.0)}
  mean0, var0 = rand((c,), 9), rand((c,), 10) ** 2 + 0.1
  vm = {
    "params": params,
    "batch_stats": with_stats(vm, rand((c,), 11), rand((c,), 12) ** 2, mean0, var0)["batch_stats"],
  }
  vb = {"params": params, "batch_stats": {"mean": mean0, "var": var0}}

  def f_mbn(p, xx):
    y, upd = mbn.apply(
      {**vm, "params": p}, xx, use_running_average=False, momentum=0.0, mutable=["batch_stats"]
    )
    return jnp.sum(jnp.sin(y)), (y, upd)

  def f_bn(p, xx):
    y, upd = bn.apply({**vb, "params": p}, xx, use_running_average=False, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y)), (y, upd)

  (_, (ym, um)), gm = jax.value_and_grad(f_mbn, argnums=(0, 1), has_aux=True)(params, x)
  (_, (yb, ub)), gb = jax.value_and_grad(f_bn, argnums=(0, 1), has_aux=True)(params, x)
  np.testing.assert_allclose(ym, yb, rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(gm), jax.tree.leaves(gb)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    um["batch_stats"]["mean"], ub["batch_stats"]["mean"], rtol=1e-6, atol=1e-7
  )
  np.testing.assert_allclose(
    um["batch_stats"]["var"], ub["batch_stats"]["var"], rtol=1e-6, atol=1e-7
  )
  # Inference mode too.
  yi_m = mbn.apply(vm, x, use_running_average=True)
  yi_b = bn.apply(vb, x, use_running_average=True)
  np.testing.assert_allclose(yi_m, yi_b, rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------- state updates
def test_state_updates_follow_algorithm_1():
  x = np.asarray(rand((4, 3, 3, 2)))
  T, spe, step = 6, 10, 37  # epoch t = 4
  layer = MomentumBatchNorm(total_epochs=T, steps_per_epoch=spe, tau0=0.8, ideal_batch_size=16)
  v = init(layer, jnp.asarray(x))
  tm, tv, rm, rv = (
    np.array([0.3, -0.2]),
    np.array([1.5, 0.7]),
    np.array([0.1, 0.2]),
    np.array([2.0, 3.0]),
  )
  v = with_stats(v, jnp.asarray(tm), jnp.asarray(tv), jnp.asarray(rm), jnp.asarray(rv))
  y, upd = layer.apply(
    v, jnp.asarray(x), use_running_average=False, step=step, mutable=["batch_stats"]
  )
  # Independent expectation: numpy, Eq. 11 as printed with t = 4, Eq. 12.
  m, m0, t = 4, 16, 4
  rho = (m / m0) ** (1 / T)
  lam = rho ** (T / (T - 1) * (T - t)) - rho**T
  tau = 0.8 ** (m / m0)
  mu_b, var_b = x.mean((0, 1, 2)), x.var((0, 1, 2))
  mu, var = lam * tm + (1 - lam) * mu_b, lam * tv + (1 - lam) * var_b
  s = upd["batch_stats"]
  np.testing.assert_allclose(s["train_mean"], mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s["train_var"], var, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s["mean"], tau * rm + (1 - tau) * mu_b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s["var"], tau * rv + (1 - tau) * var_b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


def test_inference_uses_inference_statistics_and_changes_nothing():
  x = rand((5, 3))
  layer = MomentumBatchNorm()
  v = with_stats(
    init(layer, x),
    jnp.array([9.0, 9, 9]),
    jnp.array([9.0, 9, 9]),
    jnp.array([1.0, 2, 3]),
    jnp.array([4.0, 1, 0.25]),
  )
  y, upd = layer.apply(v, x, use_running_average=True, mutable=["batch_stats"])
  want = (np.asarray(x) - [1, 2, 3]) / np.sqrt(np.array([4.0, 1, 0.25]) + 1e-5)
  np.testing.assert_allclose(y, want, rtol=1e-5)
  for k in v["batch_stats"]:
    np.testing.assert_array_equal(upd["batch_stats"][k], v["batch_stats"][k])


def test_init_does_not_need_a_step_and_has_four_statistics():
  x = rand((2, 4, 4, 3))
  v = MomentumBatchNorm().init(KEY, x, use_running_average=False)
  assert sorted(v["batch_stats"]) == ["mean", "train_mean", "train_var", "var"]
  for k in v["batch_stats"]:
    assert v["batch_stats"][k].shape == (3,) and v["batch_stats"][k].dtype == jnp.float32


def test_training_over_steps_converges_to_population_statistics():
  # Inference statistics should track a stationary input distribution.
  layer = MomentumBatchNorm(total_epochs=4, steps_per_epoch=50)
  x0 = rand((2, 3))
  v = init(layer, x0)
  apply = jax.jit(
    lambda v, x, s: layer.apply(v, x, use_running_average=False, step=s, mutable=["batch_stats"])
  )
  for s in range(200):
    _, upd = apply(v, rand((2, 3), seed=100 + s, scale=2.0, shift=3.0), jnp.int32(s))
    v = {**v, **upd}
  np.testing.assert_allclose(v["batch_stats"]["mean"], 3.0, atol=0.5)
  np.testing.assert_allclose(v["batch_stats"]["train_mean"], 3.0, atol=0.7)
  assert apply._cache_size() == 1


# --------------------------------------------------------------- compilation
def test_one_compilation_for_many_steps():
  layer = MomentumBatchNorm(total_epochs=3, steps_per_epoch=2)
  x = rand((2, 4))
  v = init(layer, x)
  traces = []

  @jax.jit
  def step_fn(v, x, step):
    traces.append(1)
    return layer.apply(v, x, use_running_average=False, step=step, mutable=["batch_stats"])

  lam_seen = []
  for s in range(8):
    xs = rand((2, 4), seed=50 + s)
    y, upd = step_fn(v, xs, jnp.int32(s))
    # Recover λ from the update: train_mean = λ old + (1 − λ) μ_B.
    old, new, mu_b = v["batch_stats"]["train_mean"], upd["batch_stats"]["train_mean"], xs.mean(0)
    lam_seen.append(float(((new - mu_b) / (old - mu_b))[0]) if s else 0.0)
    v = {**v, **upd}
  assert len(traces) == 1
  want = [
    float(mbn_jax.train_momentum(s, batch_size=2, total_epochs=3, steps_per_epoch=2))
    for s in range(8)
  ]
  np.testing.assert_allclose(lam_seen[1:], want[1:], atol=1e-4)


# ------------------------------------------------------------------ bfloat16
def test_bfloat16_inputs_float32_statistics():
  x = rand((4, 6, 6, 3), dtype=jnp.bfloat16)
  layer = MomentumBatchNorm(dtype=jnp.bfloat16)
  v = init(layer, x)
  y, upd = layer.apply(v, x, use_running_average=False, momentum=0.25, mutable=["batch_stats"])
  assert y.dtype == jnp.bfloat16
  for k, a in upd["batch_stats"].items():
    assert a.dtype == jnp.float32, k
  x32 = np.asarray(x.astype(jnp.float32))
  mu_b = x32.mean((0, 1, 2))
  np.testing.assert_allclose(upd["batch_stats"]["train_mean"], 0.75 * mu_b, rtol=1e-5, atol=1e-6)
  ref = MomentumBatchNorm().apply(
    v, jnp.asarray(x32), use_running_average=False, momentum=0.25, mutable=["batch_stats"]
  )[0]
  np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=2e-2, atol=2e-2)
  # And λ = 0 in bf16 matches Flax's BatchNorm in bf16.
  bn = nn.BatchNorm(dtype=jnp.bfloat16, momentum=mbn_jax.inference_momentum(4))
  yb = bn.apply(
    bn.init(KEY, x, use_running_average=False),
    x,
    use_running_average=False,
    mutable=["batch_stats"],
  )[0]
  y0 = layer.apply(v, x, use_running_average=False, momentum=0.0, mutable=["batch_stats"])[0]
  np.testing.assert_array_equal(np.asarray(y0, np.float32), np.asarray(yb, np.float32))


# ---------------------------------------------------------------------- masks
def test_mask_excludes_entries_from_statistics():
  x = np.asarray(rand((6, 3)))
  mask = np.array([1, 1, 0, 1, 0, 1], bool)[:, None]
  layer = MomentumBatchNorm()
  v = init(layer, jnp.asarray(x))
  y, upd = layer.apply(
    v,
    jnp.asarray(x),
    use_running_average=False,
    momentum=0.0,
    mask=jnp.asarray(np.broadcast_to(mask, x.shape)),
    mutable=["batch_stats"],
  )
  kept = x[mask[:, 0]]
  np.testing.assert_allclose(upd["batch_stats"]["train_mean"], kept.mean(0), rtol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["train_var"], kept.var(0), rtol=1e-5)
  np.testing.assert_allclose(
    y, (x - kept.mean(0)) / np.sqrt(kept.var(0) + 1e-5), rtol=1e-4, atol=1e-5
  )
  # A broadcastable mask (size-1 feature axis) gives the same.
  y2, _ = layer.apply(
    v,
    jnp.asarray(x),
    use_running_average=False,
    momentum=0.0,
    mask=jnp.asarray(mask),
    mutable=["batch_stats"],
  )
  np.testing.assert_allclose(y2, y, rtol=1e-6)


# ---------------------------------------------------------------- any axis
@pytest.mark.parametrize("axis", [0, 1, 2, -1, (1, 3)])
def test_any_feature_axis_equals_channels_last(axis):
  x = rand((3, 4, 5, 2))
  axes = (axis,) if isinstance(axis, int) else axis
  axes = tuple(a % 4 for a in axes)
  rest = tuple(i for i in range(4) if i not in axes)
  perm = rest + axes  # feature axes moved last
  xt = jnp.transpose(x, perm).reshape(*[x.shape[i] for i in rest], -1)
  layer = MomentumBatchNorm(axis=axis, batch_size=4)
  v = init(layer, x)
  y, upd = layer.apply(v, x, use_running_average=False, momentum=0.5, mutable=["batch_stats"])
  ref_layer = MomentumBatchNorm(batch_size=4)
  vr = init(ref_layer, xt)
  yr, updr = ref_layer.apply(
    vr, xt, use_running_average=False, momentum=0.5, mutable=["batch_stats"]
  )
  np.testing.assert_allclose(jnp.transpose(y, perm).reshape(yr.shape), yr, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    upd["batch_stats"]["train_mean"].reshape(-1), updr["batch_stats"]["train_mean"], rtol=1e-5
  )


# ---------------------------------------------------------------- bad input
def test_training_without_step_or_momentum_says_what_to_pass():
  x = rand((2, 3))
  layer = MomentumBatchNorm(total_epochs=3, steps_per_epoch=2)
  v = init(layer, x)
  with pytest.raises(ValueError, match="step="):
    layer.apply(v, x, use_running_average=False, mutable=["batch_stats"])


def test_step_without_schedule_length_says_what_to_pass():
  x = rand((2, 3))
  layer = MomentumBatchNorm(total_epochs=3)
  v = init(layer, x)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    layer.apply(v, x, use_running_average=False, step=1, mutable=["batch_stats"])


@pytest.mark.parametrize(
  "kwargs,name",
  [
    (dict(total_epochs=0), "total_epochs"),
    (dict(steps_per_epoch=-1), "steps_per_epoch"),
    (dict(ideal_batch_size=0), "ideal_batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(tau0=1.0), "tau0"),
    (dict(tau0=0.0), "tau0"),
    (dict(epsilon=-1.0), "epsilon"),
    (dict(axis=4), "axis"),
    (dict(axis=-5), "axis"),
  ],
)
def test_bad_fields_name_themselves(kwargs, name):
  x = rand((2, 3, 3, 2))
  with pytest.raises((ValueError, TypeError), match=name):
    MomentumBatchNorm(**kwargs).init(KEY, x, use_running_average=False)


def test_bad_mask_shape_and_momentum():
  x = rand((4, 3))
  layer = MomentumBatchNorm()
  v = init(layer, x)
  with pytest.raises(ValueError, match="mask"):
    layer.apply(
      v,
      x,
      use_running_average=False,
      momentum=0.1,
      mask=jnp.ones((3, 3), bool),
      mutable=["batch_stats"],
    )
  with pytest.raises(ValueError, match="momentum"):
    layer.apply(v, x, use_running_average=False, momentum=1.0, mutable=["batch_stats"])


class AlgorithmOneUnderTransformsTest(chex.TestCase):
  """Algorithm 1's update by hand, checked with and without jit (chex.variants)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_update_matches_hand_computation(self):
    x = np.asarray(rand((5, 3)), np.float64)
    layer = MomentumBatchNorm(tau0=0.8, ideal_batch_size=10)
    v = init(layer, jnp.asarray(x, jnp.float32))
    old = {
      "mean": np.full(3, 0.5),
      "var": np.full(3, 2.0),
      "train_mean": np.full(3, -1.0),
      "train_var": np.full(3, 3.0),
    }
    v = {**v, "batch_stats": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), old)}
    lam = 0.6
    apply = self.variant(
      lambda v, x: layer.apply(
        v, x, use_running_average=False, momentum=lam, mutable=["batch_stats"]
      )
    )
    y, upd = apply(v, jnp.asarray(x, jnp.float32))
    tau = 0.8 ** (5 / 10)
    mu, var = x.mean(0), x.var(0)
    want = {
      "train_mean": lam * old["train_mean"] + (1 - lam) * mu,
      "train_var": lam * old["train_var"] + (1 - lam) * var,
      "mean": tau * old["mean"] + (1 - tau) * mu,
      "var": tau * old["var"] + (1 - tau) * var,
    }
    chex.assert_trees_all_close(dict(upd["batch_stats"]), want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
      y, (x - want["train_mean"]) / np.sqrt(want["train_var"] + 1e-5), rtol=1e-4, atol=1e-5
    )


def test_bad_arguments_are_named():
  x = jnp.asarray(rand((4, 3)))
  layer = MomentumBatchNorm()
  v = init(layer, x)
  for bad in (float("nan"), -0.1, 1.0, 1.5):
    with pytest.raises(ValueError, match="momentum must lie in"):
      layer.apply(v, x, use_running_average=False, momentum=bad, mutable=["batch_stats"])
  with pytest.raises(ValueError, match="step must be a scalar"):
    MomentumBatchNorm(total_epochs=2, steps_per_epoch=3).apply(
      v, x, use_running_average=False, step=jnp.arange(2), mutable=["batch_stats"]
    )
  with pytest.raises(TypeError, match="axis must be an int or a tuple of ints"):
    MomentumBatchNorm(axis=1.5).init(KEY, x, use_running_average=False)
  # One value per channel in training (PyTorch raises too); fine in inference.
  one = jnp.ones((1, 3))
  with pytest.raises(ValueError, match="more than 1 value per feature"):
    layer.apply(v, one, use_running_average=False, momentum=0.5, mutable=["batch_stats"])
  layer.apply(v, one, use_running_average=True)


def test_traced_momentum_is_sanitized_as_documented():
  x = jnp.asarray(rand((4, 3)))
  layer = MomentumBatchNorm()
  v = init(layer, x)
  run = jax.jit(
    lambda lam: layer.apply(v, x, use_running_average=False, momentum=lam, mutable=["batch_stats"])[
      1
    ]["batch_stats"]
  )
  jax.tree.map(np.testing.assert_array_equal, run(jnp.float32(np.nan)), run(jnp.float32(0.0)))
  clipped = run(jnp.float32(1.7))  # → just below 1: the training statistics barely move
  np.testing.assert_allclose(clipped["train_mean"], v["batch_stats"]["train_mean"], atol=1e-6)
  np.testing.assert_array_equal(
    run(jnp.float32(-3.0))["train_mean"], run(jnp.float32(0.0))["train_mean"]
  )
  assert all(np.isfinite(t).all() for t in jax.tree.leaves(clipped))
