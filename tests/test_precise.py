"""Tests for mbn_jax.precise: population ("precise") inference statistics.

Expectations are independent of the code under test: NumPy (float64) means
and variances of a layer's input over the whole dataset, the same network
written out in NumPy, and the 1-device result on concatenated batches.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import mbn_jax
from mbn_jax import MomentumBatchNorm, norms
from mbn_jax import nnx as mbn_nnx
from mbn_jax.precise import pool_moments, precise_batch_stats, precise_batch_stats_nnx

D_IN, C = 5, 4


class Net(nn.Module):
  """dense → MBN → relu → dense → BN → relu → BReN (features = C throughout)."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    x = nn.Dense(C, dtype=self.dtype)(x)
    x = MomentumBatchNorm(total_epochs=4, steps_per_epoch=3, dtype=self.dtype)(
      x, not train, step=7, mask=mask
    )
    x = nn.relu(x)
    x = nn.Dense(C, dtype=self.dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x, mask=mask)
    x = nn.relu(x)
    return norms.BatchRenorm(dtype=self.dtype)(x, not train, step=7, mask=mask)


def _data(n=23, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, D_IN)) * rng.uniform(0.5, 3, D_IN) + rng.normal(size=D_IN)).astype(
    np.float32
  )


def _setup(dtype=jnp.float32, seed=0):
  net = Net(dtype=dtype)
  x = _data(seed=seed)
  variables = net.init(jax.random.key(seed), x[:4], False)
  # Non-trivial stored statistics, so "left as it was" is visible.
  variables = {
    "params": variables["params"],
    "batch_stats": jax.tree.map(lambda t: t + 0.25, variables["batch_stats"]),
  }
  return net, x, variables


def _train_fn(net):
  return lambda v, b: net.apply(v, b["x"], True, mask=b.get("mask"), mutable=["batch_stats"])


def _first_layer_input(variables, x):
  p = variables["params"]["Dense_0"]
  return np.asarray(x, np.float64) @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"])


def _np_bn(h, scale, bias, eps=1e-5):
  return (h - h.mean(0)) / np.sqrt(h.var(0) + eps) * scale + bias


def test_pool_moments_is_the_concatenated_data():
  rng = np.random.default_rng(3)
  groups = [
    rng.normal(loc=loc, scale=rng.uniform(0.5, 2), size=(n, 3))
    for loc, n in ((0.0, 7), (3.0, 2), (-2.0, 11))
  ]
  out = pool_moments(
    np.stack([g.mean(0) for g in groups]),
    np.stack([g.var(0) for g in groups]),
    np.array([len(g) for g in groups], np.float32)[:, None],
  )
  whole = np.concatenate(groups)
  np.testing.assert_allclose(out.mean, whole.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.var, whole.var(0), rtol=1e-5)
  assert float(out.count[0]) == len(whole)
  # Averaging the batch variances alone (swa_utils.update_bn) drops the spread of the means.
  assert np.all(np.mean([g.var(0) for g in groups], 0) < 0.8 * whole.var(0))


def test_first_layer_equals_numpy_over_dataset_with_ragged_last_batch():
  net, x, variables = _setup()
  traces = []

  def train_fn(v, b):
    traces.append(b["x"].shape)
    return _train_fn(net)(v, b)

  batches = [{"x": x[i : i + 8]} for i in range(0, len(x), 8)]  # 8, 8, 7
  out = precise_batch_stats(train_fn, variables, batches)
  h = _first_layer_input(variables, x)
  np.testing.assert_allclose(out["MomentumBatchNorm_0"]["mean"], h.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["MomentumBatchNorm_0"]["var"], h.var(0), rtol=1e-5)
  # eval_shape, one compilation for the full batches, one for the ragged last.
  assert traces == [(8, D_IN), (8, D_IN), (7, D_IN)]


def test_masks_select_the_entries_that_count():
  net, x, variables = _setup()
  rng = np.random.default_rng(5)
  masks = rng.random((len(x), 1)) < 0.6
  masks[:2] = True
  batches = [{"x": x[i : i + 8], "mask": masks[i : i + 8]} for i in range(0, 16, 8)]
  out = precise_batch_stats(_train_fn(net), variables, batches)
  h = _first_layer_input(variables, x[:16])[masks[:16, 0]]
  np.testing.assert_allclose(out["MomentumBatchNorm_0"]["mean"], h.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["MomentumBatchNorm_0"]["var"], h.var(0), rtol=1e-5)


def test_deeper_layers_match_a_numpy_network_when_the_batch_is_the_dataset():
  net, x, variables = _setup()
  out = precise_batch_stats(_train_fn(net), variables, [{"x": x}])
  p = jax.tree.map(lambda t: np.asarray(t, np.float64), variables["params"])
  h = _first_layer_input(variables, x)
  a = np.maximum(_np_bn(h, p["MomentumBatchNorm_0"]["scale"], p["MomentumBatchNorm_0"]["bias"]), 0)
  h2 = a @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  np.testing.assert_allclose(out["BatchNorm_0"]["mean"], h2.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["BatchNorm_0"]["var"], h2.var(0), rtol=1e-4, atol=1e-6)
  h3 = np.maximum(_np_bn(h2, p["BatchNorm_0"]["scale"], p["BatchNorm_0"]["bias"]), 0)
  np.testing.assert_allclose(out["BatchRenorm_0"]["mean"], h3.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["BatchRenorm_0"]["var"], h3.var(0), rtol=1e-4, atol=1e-6)


def test_only_inference_statistics_change():
  net, x, variables = _setup()
  before = jax.tree.map(np.array, variables)
  out = precise_batch_stats(_train_fn(net), variables, [{"x": x[:8]}, {"x": x[8:16]}])
  for leaf in ("train_mean", "train_var"):
    np.testing.assert_array_equal(
      out["MomentumBatchNorm_0"][leaf], before["batch_stats"]["MomentumBatchNorm_0"][leaf]
    )
  for layer in ("MomentumBatchNorm_0", "BatchNorm_0", "BatchRenorm_0"):
    assert not np.allclose(out[layer]["mean"], before["batch_stats"][layer]["mean"])
  jax.tree.map(np.testing.assert_array_equal, variables, before)  # inputs untouched
  assert jax.tree.structure(out) == jax.tree.structure(variables["batch_stats"])


def test_frozen_layers_keep_their_statistics():
  class Frozen(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.BatchNorm(use_running_average=True)(x)  # a frozen backbone norm
      return nn.BatchNorm(use_running_average=False)(nn.Dense(C)(x))

  net = Frozen()
  x = _data()
  v = net.init(jax.random.key(0), x)
  out = precise_batch_stats(lambda v, b: net.apply(v, b, mutable=["batch_stats"]), v, [x])
  np.testing.assert_array_equal(out["BatchNorm_0"]["mean"], v["batch_stats"]["BatchNorm_0"]["mean"])
  assert not np.allclose(out["BatchNorm_1"]["mean"], 0.0)


def test_bfloat16_model_gets_float32_statistics():
  net, x, variables = _setup(dtype=jnp.bfloat16)
  out = precise_batch_stats(_train_fn(net), variables, [{"x": x[:8]}, {"x": x[8:16]}])
  assert {str(t.dtype) for t in jax.tree.leaves(out)} == {"float32"}
  # The layer's input is the bf16 dense output; compare with float64 of that input.
  h = net.apply(
    variables,
    x[:16],
    True,
    mutable=["batch_stats", "intermediates"],
    capture_intermediates=lambda m, _: isinstance(m, nn.Dense),
  )[1]
  h = np.asarray(h["intermediates"]["Dense_0"]["__call__"][0], np.float64)
  np.testing.assert_allclose(out["MomentumBatchNorm_0"]["mean"], h.mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["MomentumBatchNorm_0"]["var"], h.var(0), rtol=1e-4)


def test_two_devices_pool_like_one_device_on_the_concatenated_batches():
  if jax.local_device_count() < 2:
    pytest.skip("needs 2 devices (tests/conftest.py sets 4 virtual CPU devices)")
  net, x, variables = _setup()
  rng = np.random.default_rng(9)
  masks = rng.random((16, 1)) < 0.7
  masks[0] = masks[5] = masks[8] = True
  # Uneven valid counts per device: the pooled result is not a mean of per-device means.
  one = precise_batch_stats(
    _train_fn(net),
    variables,
    [{"x": x[:8], "mask": masks[:8]}, {"x": x[8:16], "mask": masks[8:16]}],
  )
  n = 2
  rep = jax.tree.map(lambda t: np.broadcast_to(t, (n,) + t.shape), variables)
  sharded = [
    {"x": x[i : i + 8].reshape(n, 4, D_IN), "mask": masks[i : i + 8].reshape(n, 4, 1)}
    for i in (0, 8)
  ]
  two = precise_batch_stats(_train_fn(net), rep, sharded, axis_name="batch")
  first = jax.tree.map(lambda t: np.asarray(t)[0], two)
  # Only the first layer's input is independent of how the batch is split
  # (deeper layers normalize with per-device batch statistics).
  for k in ("mean", "var"):
    np.testing.assert_allclose(
      first["MomentumBatchNorm_0"][k], one["MomentumBatchNorm_0"][k], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(
      np.asarray(two["MomentumBatchNorm_0"][k])[0], np.asarray(two["MomentumBatchNorm_0"][k])[1]
    )


def test_clear_errors():
  net, x, variables = _setup()
  with pytest.raises(ValueError, match="no batches"):
    precise_batch_stats(_train_fn(net), variables, [])
  with pytest.raises(ValueError, match="batch 1 has"):
    precise_batch_stats(_train_fn(net), variables, [{"x": x[:8]}, {"x": x[:4]}, {"x": x[:8]}])
  dense = nn.Dense(3)
  vd = dense.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="batch_stats"):
    precise_batch_stats(lambda v, b: dense.apply(v, b), vd, [x])
  with pytest.raises(ValueError, match="found no"):
    precise_batch_stats(lambda v, b: net.apply(v, b["x"], False), variables, [{"x": x}])


class NnxNet(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(D_IN, C, rngs=rngs)
    self.mbn = mbn_nnx.MomentumBatchNorm(C, total_epochs=4, steps_per_epoch=3, rngs=rngs)
    self.dense2 = nnx.Linear(C, C, rngs=rngs)
    self.bn = nnx.BatchNorm(C, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.mbn(self.dense(x), step=7))
    return self.bn(self.dense2(x))


def test_nnx_in_place_matches_numpy():
  model = NnxNet(nnx.Rngs(0))
  model.mbn.train_mean[...] = jnp.full((C,), 0.5)
  x = _data()
  params = {k: np.asarray(getattr(model, k).kernel[...], np.float64) for k in ("dense", "dense2")}
  biases = {k: np.asarray(getattr(model, k).bias[...], np.float64) for k in ("dense", "dense2")}
  precise_batch_stats_nnx(lambda m, b: m(b), model, [x])
  h = x.astype(np.float64) @ params["dense"] + biases["dense"]
  np.testing.assert_allclose(model.mbn.mean[...], h.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(model.mbn.var[...], h.var(0), rtol=1e-5)
  np.testing.assert_array_equal(model.mbn.train_mean[...], np.full((C,), 0.5))
  h2 = np.maximum(_np_bn(h, 1.0, 0.0), 0) @ params["dense2"] + biases["dense2"]
  np.testing.assert_allclose(model.bn.mean[...], h2.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(model.bn.var[...], h2.var(0), rtol=1e-4, atol=1e-6)
  assert type(model.mbn) is mbn_nnx.MomentumBatchNorm  # the model is left as it was


def test_public_api():
  assert mbn_jax.precise_batch_stats is precise_batch_stats
