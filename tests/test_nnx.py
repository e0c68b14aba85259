"""The flax.nnx layer gives exactly what the flax.linen layer gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mbn_jax
from mbn_jax import nnx as mbn_nnx

KW = dict(total_epochs=4, steps_per_epoch=3, tau0=0.8, ideal_batch_size=16)


def test_linen_and_nnx_identical_over_training_and_inference():
  c = 5
  lin = mbn_jax.MomentumBatchNorm(**KW)
  nx = mbn_nnx.MomentumBatchNorm(c, rngs=nnx.Rngs(0), **KW)
  xs = [jax.random.normal(jax.random.key(s), (2, 4, 4, c)) * 3 + 1 for s in range(12)]
  v = lin.init(jax.random.key(0), xs[0], use_running_average=False)
  params = {"scale": jnp.linspace(0.5, 1.5, c), "bias": jnp.linspace(-1, 1, c)}
  v = {**v, "params": params}
  nx.scale[...] = params["scale"]
  nx.bias[...] = params["bias"]
  for s, x in enumerate(xs):
    y_l, upd = lin.apply(v, x, use_running_average=False, step=s, mutable=["batch_stats"])
    v = {**v, **upd}
    y_n = nx(x, step=s)
    np.testing.assert_allclose(y_n, y_l, rtol=1e-6, atol=1e-6)
    for k in ("mean", "var", "train_mean", "train_var"):
      np.testing.assert_allclose(getattr(nx, k)[...], v["batch_stats"][k], rtol=1e-6, atol=1e-7)
  nx.eval()
  np.testing.assert_allclose(
    nx(xs[0]), lin.apply(v, xs[0], use_running_average=True), rtol=1e-6, atol=1e-6
  )


def test_linen_and_nnx_identical_gradients():
  c = 3
  x = jax.random.normal(jax.random.key(3), (4, c)) * 2
  lin = mbn_jax.MomentumBatchNorm()
  v = lin.init(jax.random.key(0), x, use_running_average=False)
  v = {
    **v,
    "batch_stats": {**v["batch_stats"], "train_mean": jnp.ones(c), "train_var": 2 * jnp.ones(c)},
  }
  nx = mbn_nnx.MomentumBatchNorm(c, rngs=nnx.Rngs(0))
  nx.train_mean[...] = jnp.ones(c)
  nx.train_var[...] = 2 * jnp.ones(c)

  g_l = jax.grad(
    lambda xx: jnp.sum(
      jnp.sin(lin.apply(v, xx, use_running_average=False, momentum=0.6, mutable=["batch_stats"])[0])
    )
  )(x)

  def nnx_loss(model, xx):
    return jnp.sum(jnp.sin(model(xx, momentum=0.6)))

  g_n = nnx.grad(nnx_loss, argnums=1)(nx, x)
  np.testing.assert_allclose(g_n, g_l, rtol=1e-6, atol=1e-6)


def test_nnx_under_jit_one_compilation():
  nx = mbn_nnx.MomentumBatchNorm(3, rngs=nnx.Rngs(0), **KW)
  traces = []

  @nnx.jit
  def step(model, x, s):
    traces.append(1)
    return model(x, step=s)

  for s in range(6):
    step(nx, jax.random.normal(jax.random.key(s), (2, 3)), jnp.int32(s))
  assert len(traces) == 1
  assert float(jnp.abs(nx.train_mean[...]).sum()) > 0


def test_nnx_errors():
  nx = mbn_nnx.MomentumBatchNorm(3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="step="):
    nx(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="num_features"):
    nx(jnp.ones((2, 4)), momentum=0.1)
  with pytest.raises(ValueError, match="tau0"):
    mbn_nnx.MomentumBatchNorm(3, tau0=2.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_features"):
    mbn_nnx.MomentumBatchNorm(0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="axis"):
    mbn_nnx.MomentumBatchNorm(3, axis=3, rngs=nnx.Rngs(0))(jnp.ones((2, 3)), momentum=0.1)
