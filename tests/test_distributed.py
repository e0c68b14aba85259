"""MomentumBatchNorm across 4 CPU devices: per-device and synchronized stats.

conftest.py sets --xla_force_host_platform_device_count=4. The independent
expectation is a single-device application: per device on each shard, and
(synchronized) on the whole concatenated batch, whose λ and τ then use
m = 4 × per-device batch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from mbn_jax import MomentumBatchNorm

N_DEV = 4
pytestmark = pytest.mark.skipif(jax.local_device_count() < N_DEV, reason="needs 4 devices")

T, SPE, STEP = 5, 3, 10  # epoch 4 of 5: λ > 0 for m = 2 and m = 8


def setup(axis_name=None, m=2):
  x = jax.random.normal(jax.random.key(1), (N_DEV, m, 3, 3, 4)) * 2 + 1
  layer = MomentumBatchNorm(total_epochs=T, steps_per_epoch=SPE, axis_name=axis_name)
  v = MomentumBatchNorm(total_epochs=T, steps_per_epoch=SPE).init(
    jax.random.key(0), x[0], use_running_average=False
  )
  # Non-trivial previous statistics, the same on every device.
  stats = {k: a + 0.3 * (i + 1) for i, (k, a) in enumerate(sorted(v["batch_stats"].items()))}
  return x, layer, {**v, "batch_stats": stats}


def apply_fn(layer):
  def f(v, x, step):
    return layer.apply(v, x, use_running_average=False, step=step, mutable=["batch_stats"])

  return f


def replicate(tree):
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (N_DEV,) + a.shape), tree)


def test_pmap_per_device_statistics_equal_single_device_runs():
  x, layer, v = setup()
  y, upd = jax.pmap(apply_fn(layer), axis_name="batch", in_axes=(0, 0, None))(replicate(v), x, STEP)
  for d in range(N_DEV):
    yd, ud = apply_fn(layer)(v, x[d], STEP)
    np.testing.assert_allclose(y[d], yd, rtol=1e-5, atol=1e-5)
    for k in ud["batch_stats"]:
      np.testing.assert_allclose(
        upd["batch_stats"][k][d], ud["batch_stats"][k], rtol=1e-5, atol=1e-6
      )
  # Per-device statistics really differ between devices.
  assert not np.allclose(upd["batch_stats"]["train_mean"][0], upd["batch_stats"]["train_mean"][1])


def test_pmap_synchronized_statistics_equal_one_big_batch():
  x, layer, v = setup(axis_name="batch")
  y, upd = jax.pmap(apply_fn(layer), axis_name="batch", in_axes=(0, 0, None))(replicate(v), x, STEP)
  _, big_layer, _ = setup()
  yb, ub = apply_fn(big_layer)(v, x.reshape((-1,) + x.shape[2:]), STEP)  # m = 8
  np.testing.assert_allclose(y.reshape(yb.shape), yb, rtol=1e-5, atol=1e-5)
  for k in ub["batch_stats"]:
    for d in range(N_DEV):
      np.testing.assert_allclose(
        upd["batch_stats"][k][d], ub["batch_stats"][k], rtol=1e-5, atol=1e-6
      )
  # m = 8 (not 2) drove λ: a per-device λ would give different statistics.
  lam_small = MomentumBatchNorm(total_epochs=T, steps_per_epoch=SPE, batch_size=2)
  _, wrong = apply_fn(lam_small)(v, x.reshape((-1,) + x.shape[2:]), STEP)
  assert not np.allclose(wrong["batch_stats"]["train_mean"], ub["batch_stats"]["train_mean"])


def test_pmap_gradients_synchronized_equal_big_batch_gradient():
  x, layer, v = setup(axis_name="batch")
  _, big_layer, _ = setup()

  def loss(layer_, x_, v_):
    y, _ = apply_fn(layer_)(v_, x_, STEP)
    return jnp.sum(jnp.sin(y))

  g_dev = jax.pmap(
    lambda x_: jax.grad(functools.partial(loss, layer), argnums=0)(x_, v), axis_name="batch"
  )(x)
  g_big = jax.grad(functools.partial(loss, big_layer), argnums=0)(x.reshape((-1,) + x.shape[2:]), v)
  np.testing.assert_allclose(g_dev.reshape(g_big.shape), g_big, rtol=1e-4, atol=1e-5)


def test_shard_map_per_device_and_synchronized():
  mesh = Mesh(np.array(jax.devices()[:N_DEV]), ("batch",))
  x, layer, v = setup()
  xf = x.reshape((-1,) + x.shape[2:])  # global batch 8 sharded as 4 × 2

  def per_device(v, x):
    y, upd = apply_fn(layer)(v, x, STEP)
    return y, jax.tree.map(lambda a: a[None], upd)

  y, upd = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P("batch"), P("batch"))
  )(v, xf)
  for d in range(N_DEV):
    yd, ud = apply_fn(layer)(v, x[d], STEP)
    np.testing.assert_allclose(y[2 * d : 2 * d + 2], yd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
      upd["batch_stats"]["train_var"][d], ud["batch_stats"]["train_var"], rtol=1e-5
    )

  _, synced_layer, _ = setup(axis_name="batch")
  ys, us = jax.shard_map(
    apply_fn(synced_layer), mesh=mesh, in_specs=(P(), P("batch"), P()), out_specs=(P("batch"), P())
  )(v, xf, STEP)
  yb, ub = apply_fn(layer)(v, xf, STEP)
  np.testing.assert_allclose(ys, yb, rtol=1e-5, atol=1e-5)
  for k in ub["batch_stats"]:
    np.testing.assert_allclose(us["batch_stats"][k], ub["batch_stats"][k], rtol=1e-5, atol=1e-6)


def test_axis_index_groups_use_group_batch_size():
  x, _, v = setup()
  groups = [[0, 1], [2, 3]]
  layer = MomentumBatchNorm(
    total_epochs=T, steps_per_epoch=SPE, axis_name="batch", axis_index_groups=groups
  )
  _, upd = jax.pmap(apply_fn(layer), axis_name="batch", in_axes=(0, 0, None))(replicate(v), x, STEP)
  _, plain, _ = setup()
  for g in groups:
    xg = jnp.concatenate([x[i] for i in g])  # m = 4 per group
    _, ug = apply_fn(plain)(v, xg, STEP)
    for i in g:
      np.testing.assert_allclose(
        upd["batch_stats"]["train_mean"][i], ug["batch_stats"]["train_mean"], rtol=1e-5
      )
