"""Tests for mbn_jax.norms: BatchRenorm (linen + nnx) and make_norm.

Expectations are independent of the code under test: flax.linen's own
BatchNorm/GroupNorm, and normalizations and gradients written out by hand in
numpy (float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from mbn_jax import MomentumBatchNorm, norms
from mbn_jax.norms.base import affine_is_learned

EPS = 1e-5
C = 6
# The dict the training program passes to make_norm for every norm name.
TRAINING_OPTIONS = dict(
  axis_name=None,
  dtype=jnp.float32,
  total_epochs=10,
  steps_per_epoch=5,
  ideal_batch_size=32,
  tau0=0.85,
  r_max=1.5,
  d_max=0.5,
  warmup_steps=100,
  bn_momentum=0.9,
)


def _x(shape=(4, 3, 3, C), seed=0):
  rng = np.random.default_rng(seed)
  # Per-channel offsets and scales so the statistics differ between channels.
  return (
    rng.normal(size=shape) * rng.uniform(0.5, 3.0, shape[-1]) + rng.normal(size=shape[-1]) * 2
  ).astype(np.float32)


def _variables(mean, var, seed=1):
  rng = np.random.default_rng(seed)
  return {
    "params": {
      "scale": jnp.asarray(rng.uniform(0.5, 2.0, C), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=C), jnp.float32),
    },
    "batch_stats": {"mean": jnp.asarray(mean, jnp.float32), "var": jnp.asarray(var, jnp.float32)},
  }


def _np_batch_stats(x):
  x = np.asarray(x, np.float64)
  return x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))


def _np_renorm(x, variables, r_max, d_max):
  """Ioffe's training output, by hand: γ((x − μ_B)/σ_B · r + d) + β, clipped."""
  x = np.asarray(x, np.float64)
  mu_b, var_b = _np_batch_stats(x)
  mean = np.asarray(variables["batch_stats"]["mean"], np.float64)
  var = np.asarray(variables["batch_stats"]["var"], np.float64)
  sigma_b, sigma = np.sqrt(var_b + EPS), np.sqrt(var + EPS)
  r_raw, d_raw = sigma_b / sigma, (mu_b - mean) / sigma
  r = np.clip(r_raw, 1 / r_max, r_max)
  d = np.clip(d_raw, -d_max, d_max)
  gamma = np.asarray(variables["params"]["scale"], np.float64)
  beta = np.asarray(variables["params"]["bias"], np.float64)
  x_hat = (x - mu_b) / sigma_b
  return gamma * (x_hat * r + d) + beta, r_raw, d_raw, r, d


# ------------------------------------------------------------- BatchRenorm


def test_brn_at_unit_limits_is_flax_batchnorm():
  """r_max=1, d_max=0: outputs, gradients and new statistics equal nn.BatchNorm.

  The running statistics are far from the batch ones, so r and d would not be
  (1, 0) if the limits were not applied.
  """
  x = _x()
  variables = _variables(mean=np.full(C, 3.0), var=np.full(C, 0.2))
  brn = norms.BatchRenorm(r_max=1.0, d_max=0.0, momentum=0.9)
  bn = nn.BatchNorm(momentum=0.9)
  g = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)

  def loss(module, params, x):
    y, upd = module.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      x,
      use_running_average=False,
      mutable=["batch_stats"],
    )
    return jnp.sum(y * g), (y, upd)

  (_, (y_brn, s_brn)), g_brn = jax.value_and_grad(
    lambda p, x: loss(brn, p, x), argnums=(0, 1), has_aux=True
  )(variables["params"], x)
  (_, (y_bn, s_bn)), g_bn = jax.value_and_grad(
    lambda p, x: loss(bn, p, x), argnums=(0, 1), has_aux=True
  )(variables["params"], x)
  np.testing.assert_allclose(y_brn, y_bn, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g_brn, g_bn)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), s_brn, s_bn)
  # Inference is BatchNorm's too.
  np.testing.assert_allclose(
    brn.apply(variables, x, use_running_average=True),
    bn.apply(variables, x, use_running_average=True),
    rtol=1e-6,
    atol=1e-6,
  )


def test_brn_clipping_and_momentum_convention_match_hand_computation():
  """Stats chosen so r and d exceed the limits on both sides, per channel."""
  x = _x()
  mu_b, var_b = _np_batch_stats(x)
  # Channels 0-2: running std 4x / 0.25x the batch std (r clipped high/low,
  # r inside); channels 3-5: running mean shifted by +-3 sigma / 0.2 sigma.
  var = var_b * np.array([1 / 16, 16, 1.1, 1, 1, 1])
  mean = mu_b + np.sqrt(var + EPS) * np.array([0, 0, 0, 3.0, -3.0, 0.2])
  variables = _variables(mean, var)
  r_max, d_max = 1.5, 0.5
  expected, r_raw, d_raw, r, d = _np_renorm(x, variables, r_max, d_max)
  assert (
    r_raw.max() > r_max and r_raw.min() < 1 / r_max and d_raw.max() > d_max and d_raw.min() < -d_max
  ), "the test must exercise all four clips"
  assert np.any((r_raw > 1 / r_max) & (r_raw < r_max)) and np.any(np.abs(d_raw) < d_max)

  layer = norms.BatchRenorm(r_max=r_max, d_max=d_max, momentum=0.7)
  y, upd = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # momentum weights the OLD value (Flax convention); the variance is biased.
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.7 * mean + 0.3 * mu_b, rtol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.7 * var + 0.3 * var_b, rtol=1e-5)


def test_brn_r_and_d_carry_no_gradient():
  """Unclipped, the forward output is (x − mean)/σ_running, whose gradient
  (without stop_gradient) is the diagonal g·γ/σ. With r, d constant it is r
  times BatchNorm's backward pass, derived by hand:
  dx = r γ/σ_B · (g − mean(g) − x̂ · mean(g x̂)). The two differ, so this test
  fails if r or d were differentiated through.
  """
  x = _x()
  mu_b, var_b = _np_batch_stats(x)
  var, mean = var_b * 2.5, mu_b + 0.4
  variables = _variables(mean, var)
  g = np.random.default_rng(3).normal(size=x.shape)
  layer = norms.BatchRenorm(r_max=100.0, d_max=100.0)

  def loss(params, x):
    y, _ = layer.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      x,
      use_running_average=False,
      mutable=["batch_stats"],
    )
    return jnp.sum(y * jnp.asarray(g, jnp.float32))

  g_params, g_x = jax.grad(loss, argnums=(0, 1))(variables["params"], x)

  _, _, _, r, d = _np_renorm(x, variables, 100.0, 100.0)
  gamma = np.asarray(variables["params"]["scale"], np.float64)
  sigma_b = np.sqrt(var_b + EPS)
  x_hat = (np.asarray(x, np.float64) - mu_b) / sigma_b
  red = (0, 1, 2)
  expected_dx = r * gamma / sigma_b * (g - g.mean(axis=red) - x_hat * (g * x_hat).mean(axis=red))
  np.testing.assert_allclose(g_x, expected_dx, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
    g_params["scale"], (g * (x_hat * r + d)).sum(axis=red), rtol=1e-4, atol=1e-4
  )
  np.testing.assert_allclose(g_params["bias"], g.sum(axis=red), rtol=1e-5, atol=1e-5)
  # Sanity: the forward output is the running-statistics normalization ...
  y, _ = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_allclose(
    y, gamma * (x - mean) / np.sqrt(var + EPS) + variables["params"]["bias"], rtol=1e-4, atol=1e-4
  )
  # ... whose own gradient is clearly different from the one we get.
  no_stop_gradient_dx = g * gamma / np.sqrt(var + EPS)
  assert np.abs(np.asarray(g_x) - no_stop_gradient_dx).max() > 0.1


def test_brn_warmup_ramps_limits_from_batchnorm():
  assert [float(v) for v in norms.renorm_limits(0, 3.0, 5.0, 100)] == [1.0, 0.0]
  np.testing.assert_allclose(norms.renorm_limits(25, 3.0, 5.0, 100), (1.5, 1.25))
  np.testing.assert_allclose(norms.renorm_limits(jnp.int32(400), 3.0, 5.0, 100), (3.0, 5.0))
  np.testing.assert_allclose(norms.renorm_limits(None, 3.0, 5.0, 100), (3.0, 5.0))
  np.testing.assert_allclose(norms.renorm_limits(7, 3.0, 5.0, 0), (3.0, 5.0))

  x = _x()
  variables = _variables(mean=np.full(C, 2.0), var=np.full(C, 0.3))
  layer = norms.BatchRenorm(r_max=3.0, d_max=5.0, warmup_steps=100)
  apply = jax.jit(
    lambda v, x, step: layer.apply(
      v, x, use_running_average=False, step=step, mutable=["batch_stats"]
    )[0]
  )
  bn_y = nn.BatchNorm(momentum=0.99).apply(
    variables, x, use_running_average=False, mutable=["batch_stats"]
  )[0]
  np.testing.assert_allclose(apply(variables, x, 0), bn_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    apply(variables, x, 25), _np_renorm(x, variables, 1.5, 1.25)[0], rtol=1e-5, atol=1e-5
  )


def test_brn_nnx_equals_linen_over_two_steps_and_inference():
  x1, x2 = _x(seed=4), _x(seed=5)
  variables = _variables(mean=np.zeros(C), var=np.ones(C))
  kw = dict(momentum=0.8, r_max=1.5, d_max=0.5, warmup_steps=10)
  linen = norms.BatchRenorm(**kw)
  layer = norms.BatchRenormNNX(C, **kw, rngs=nnx.Rngs(0))
  layer.scale[...] = variables["params"]["scale"]
  layer.bias[...] = variables["params"]["bias"]
  v = variables
  for step, x in ((3, x1), (7, x2)):
    y_linen, upd = linen.apply(v, x, use_running_average=False, step=step, mutable=["batch_stats"])
    v = {"params": v["params"], **upd}
    y_nnx = layer(x, step=step)
    np.testing.assert_allclose(y_nnx, y_linen, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.mean[...], v["batch_stats"]["mean"], rtol=1e-6)
    np.testing.assert_allclose(layer.var[...], v["batch_stats"]["var"], rtol=1e-6)
  np.testing.assert_allclose(
    layer(x1, use_running_average=True), linen.apply(v, x1, use_running_average=True), rtol=1e-6
  )


@pytest.mark.parametrize(
  "field, value", [("r_max", 0.5), ("d_max", -1.0), ("warmup_steps", -3), ("momentum", 1.5)]
)
def test_brn_bad_config_names_the_argument(field, value):
  layer = norms.BatchRenorm(**{field: value})
  with pytest.raises(ValueError, match=field):
    layer.init(jax.random.key(0), _x(), use_running_average=False)
  with pytest.raises(ValueError, match=field):
    norms.make_norm("brn", **{field: value})


# -------------------------------------------------------------- make_norm


@pytest.mark.parametrize("name", norms.NORM_NAMES)
def test_make_norm_accepts_the_training_options_for_every_name(name):
  """One option dict for every norm; the uniform call in train and eval mode."""
  factory = norms.make_norm(name, **TRAINING_OPTIONS)
  module = factory(name="norm")
  x = _x()
  variables = module.init(jax.random.key(0), x, False, step=0)
  y, upd = module.apply(variables, x, False, step=jnp.int32(7), mutable=["batch_stats"])
  y_eval = module.apply({**variables, **upd}, x, True, step=None)
  assert y.shape == y_eval.shape == x.shape
  assert np.all(np.isfinite(y)) and np.all(np.isfinite(y_eval))
  if name == "none":
    assert variables == {}
    np.testing.assert_array_equal(y, x)
  elif affine_is_learned(module):  # Flat parameter trees, whatever the wrapper.
    assert set(variables["params"]) == {"scale", "bias"}
  else:  # FrozenBN: γ/β are frozen statistics, out of the optimizer's reach
    assert "params" not in variables and {"scale", "bias"} <= set(variables["batch_stats"])


def test_make_norm_routes_options_to_the_right_fields():
  mbn = norms.make_norm("mbn", **TRAINING_OPTIONS)()
  assert isinstance(mbn, MomentumBatchNorm)
  assert (mbn.total_epochs, mbn.steps_per_epoch, mbn.ideal_batch_size, mbn.tau0) == (
    10,
    5,
    32,
    0.85,
  )
  brn = norms.make_norm("brn", **TRAINING_OPTIONS)()
  assert (brn.r_max, brn.d_max, brn.warmup_steps, brn.momentum) == (1.5, 0.5, 100, 0.9)
  assert norms.make_norm("brn", **norms.BRN_MINI_IMAGENET_OPTIONS)().r_max == 1.5
  assert norms.make_norm("bn")().momentum == 0.9  # PyTorch's default 0.1, flipped.
  assert norms.make_norm("bn", momentum=0.5)().momentum == 0.5
  assert norms.make_norm("gn", num_groups=8)().num_groups == 8
  # Factory kwargs override the options.
  assert norms.make_norm("brn", r_max=2.0)(r_max=1.2).r_max == 1.2


def test_make_norm_bn_is_flax_batchnorm_with_bn_momentum():
  x = _x()
  variables = _variables(mean=np.full(C, 1.0), var=np.full(C, 2.0))
  ours = norms.make_norm("bn", bn_momentum=0.6)()
  flax_bn = nn.BatchNorm(momentum=0.6)
  y1, s1 = ours.apply(variables, x, False, step=3, mutable=["batch_stats"])
  y2, s2 = flax_bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(y1, y2)
  jax.tree.map(np.testing.assert_array_equal, s1, s2)


def test_make_norm_errors():
  with pytest.raises(
    ValueError, match="'bn', 'mbn', 'brn', 'gn', 'ln', 'in', 'mabn', 'frozen_bn', 'none'"
  ):
    norms.make_norm("batchnorm")
  with pytest.raises(ValueError, match="r_mx"):
    norms.make_norm("bn", r_mx=2.0)
  with pytest.raises(ValueError, match="bn_momentum"):
    norms.make_norm("bn", momentum=0.9, bn_momentum=0.99)


@pytest.mark.parametrize(
  "channels, groups",
  [(64, 32), (512, 32), (32, 32), (16, 16), (48, 24), (100, 25), (33, 11), (3, 3), (1, 1)],
)
def test_group_count_is_largest_divisor_up_to_32(channels, groups):
  assert norms.group_count(channels) == groups


def test_group_count_rejects_bad_input():
  with pytest.raises(ValueError, match="channels"):
    norms.group_count(0)


def test_gn_matches_hand_computation_with_24_groups():
  """C=48 is not divisible by 32: 24 groups of 2 channels (group_count)."""
  x = np.random.default_rng(6).normal(size=(2, 3, 3, 48)).astype(np.float32) * 3 + 1
  module = norms.make_norm("gn")()
  variables = module.init(jax.random.key(0), x, False)
  y = module.apply(variables, x, False)
  xg = x.astype(np.float64).reshape(2, 3, 3, 24, 2)
  mu = xg.mean(axis=(1, 2, 4), keepdims=True)
  var = xg.var(axis=(1, 2, 4), keepdims=True)
  expected = ((xg - mu) / np.sqrt(var + 1e-6)).reshape(x.shape)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
  flax_gn = nn.GroupNorm(num_groups=24).apply(variables, x)
  np.testing.assert_allclose(y, flax_gn, rtol=1e-6, atol=1e-6)


def test_ln_normalizes_each_example_over_hwc():
  x = _x()
  y = norms.make_norm("ln")().apply(
    {"params": {"scale": jnp.ones(C), "bias": jnp.zeros(C)}}, x, True
  )
  x64 = x.astype(np.float64)
  mu = x64.mean(axis=(1, 2, 3), keepdims=True)
  var = x64.var(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-4)


def test_in_normalizes_each_example_and_channel_over_hw():
  x = _x()
  y = norms.make_norm("in")().apply(
    {"params": {"scale": jnp.ones(C), "bias": jnp.zeros(C)}}, x, False, step=1
  )
  x64 = x.astype(np.float64)
  mu = x64.mean(axis=(1, 2), keepdims=True)
  var = x64.var(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_brn_dtype_follows_flax_batchnorm(dtype):
  """bfloat16 input: output dtype, values and float32 statistics as nn.BatchNorm."""
  x = jnp.asarray(_x(), jnp.bfloat16)
  variables = _variables(mean=np.full(C, 3.0), var=np.full(C, 0.2))
  for train in (True, False):
    y, s = norms.BatchRenorm(r_max=1.0, d_max=0.0, dtype=dtype).apply(
      variables, x, use_running_average=not train, mutable=["batch_stats"]
    )
    y_bn, s_bn = nn.BatchNorm(dtype=dtype).apply(
      variables, x, use_running_average=not train, mutable=["batch_stats"]
    )
    assert y.dtype == y_bn.dtype
    np.testing.assert_allclose(np.float32(y), np.float32(y_bn), rtol=1e-2, atol=1e-2)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(s))


def test_brn_synchronized_statistics_equal_one_big_batch():
  """axis_name: 4 devices × 2 examples renormalize like one batch of 8."""
  n_dev = 4
  x = _x(shape=(8, 3, 3, C), seed=8)
  variables = _variables(mean=np.full(C, 1.0), var=np.full(C, 0.5))
  layer = norms.BatchRenorm(r_max=1.5, d_max=0.5, momentum=0.8)
  big_y, big_upd = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  synced = norms.make_norm("brn", axis_name="batch", r_max=1.5, d_max=0.5, bn_momentum=0.8)()
  y, upd = jax.pmap(
    lambda v, x: synced.apply(v, x, False, step=None, mutable=["batch_stats"]),
    axis_name="batch",
    in_axes=(None, 0),
  )(variables, x.reshape(n_dev, 2, 3, 3, C))
  np.testing.assert_allclose(y.reshape(x.shape), big_y, rtol=1e-5, atol=1e-5)
  for dev in range(n_dev):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[dev], b, rtol=1e-5), upd, big_upd)
