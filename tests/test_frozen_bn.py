"""FrozenBN (make_norm('frozen_bn')) and weight centring (create_model(centered_weights=True)).

FrozenBN is checked against the affine map it must be, y = γ(x − mean)/√(var + ε) + β
with the frozen statistics, in NumPy; the centred convolution against a convolution
of a kernel centred in NumPy, and its kernel gradient against the projection of the
plain gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mbn_jax
from mbn_jax import norms
from mbn_jax.nnx import FrozenBatchNorm as FrozenNNX

EPS = 1e-5
SHAPE = (2, 4, 4, 3)


def _frozen_variables(module, rng):
  variables = module.init(jax.random.key(0), jnp.zeros(SHAPE), True)
  stats = dict(variables["batch_stats"])
  stats["mean"] = jnp.asarray(rng.normal(size=3), jnp.float32)
  stats["var"] = jnp.asarray(rng.uniform(0.5, 2.0, 3), jnp.float32)
  if "scale" in stats:
    stats["scale"] = jnp.asarray(rng.uniform(0.5, 2.0, 3), jnp.float32)
    stats["bias"] = jnp.asarray(rng.normal(size=3), jnp.float32)
  return {**variables, "batch_stats": stats}


def _affine(x, stats, scale, bias):
  return scale * (x - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + EPS) + bias


@pytest.mark.parametrize("train_affine", [False, True])
def test_frozen_bn_is_the_affine_map_and_its_statistics_never_move(train_affine):
  rng = np.random.default_rng(0)
  module = norms.make_norm("frozen_bn", train_affine=train_affine)()
  variables = _frozen_variables(module, rng)
  if train_affine:
    assert set(variables["params"]) == {"scale", "bias"}
    assert set(variables["batch_stats"]) == {"mean", "var"}
    variables["params"] = {
      "scale": jnp.asarray(rng.uniform(0.5, 2.0, 3), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=3), jnp.float32),
    }
    gamma, beta = (np.asarray(variables["params"][k]) for k in ("scale", "bias"))
  else:
    assert "params" not in variables  # γ/β are frozen statistics: no optimizer reaches them
    gamma, beta = (np.asarray(variables["batch_stats"][k]) for k in ("scale", "bias"))
  x = rng.normal(size=SHAPE).astype(np.float32)
  dy = rng.normal(size=SHAPE).astype(np.float32)

  def loss(params, x):
    y, upd = module.apply(
      {"params": params, "batch_stats": variables["batch_stats"]}, x, False, mutable=["batch_stats"]
    )
    return jnp.sum(y * dy), (y, upd)

  params = variables.get("params", {})
  stats = variables["batch_stats"]
  for _ in range(3):  # training steps: the statistics come back unchanged
    (_, (y, upd)), (g_params, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      params, x
    )
    np.testing.assert_allclose(y, _affine(x, stats, gamma, beta), rtol=1e-5, atol=1e-6)
    inv = 1 / np.sqrt(np.asarray(stats["var"]) + EPS)
    np.testing.assert_allclose(gx, dy * gamma * inv, rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, upd["batch_stats"], stats)
    if train_affine:
      x_hat = (x - np.asarray(stats["mean"])) * inv
      np.testing.assert_allclose(g_params["scale"], (dy * x_hat).sum((0, 1, 2)), rtol=1e-4)
      np.testing.assert_allclose(g_params["bias"], dy.sum((0, 1, 2)), rtol=1e-4)
  y_eval = module.apply(variables, x, True)
  np.testing.assert_allclose(y_eval, y, rtol=1e-6)


def test_frozen_bn_nnx_equals_linen():
  rng = np.random.default_rng(1)
  module = norms.make_norm("frozen_bn")()
  variables = _frozen_variables(module, rng)
  layer = FrozenNNX(3, rngs=nnx.Rngs(0))
  for name, value in variables["batch_stats"].items():
    getattr(layer, name)[...] = value
  x = rng.normal(size=SHAPE).astype(np.float32)
  layer.train()
  np.testing.assert_allclose(
    layer(x), module.apply(variables, x, False, mutable=True)[0], rtol=1e-6
  )
  assert not nnx.state(layer, nnx.Param)  # nothing to train by default


def test_frozen_bn_refuses_axis_name_and_non_bool_train_affine():
  with pytest.raises(ValueError, match="nothing to synchronize|no statistics to synchronize"):
    norms.FrozenBatchNorm(axis_name="batch").init(jax.random.key(0), jnp.ones(SHAPE))
  with pytest.raises(ValueError, match="train_affine"):
    norms.make_norm("frozen_bn", train_affine="yes")


def test_capabilities_tell_re_estimable_from_frozen_and_backward():
  caps = {n: norms.capabilities_of(norms.norm_class(n)) for n in norms.NORM_NAMES}
  assert [n for n, c in caps.items() if c.precise_statistics] == ["bn", "mbn", "brn"]
  assert caps["frozen_bn"].running_statistics and caps["frozen_bn"].normalizer == "frozen"
  assert caps["mabn"].backward_statistics and not caps["mabn"].synchronizes
  assert [n for n, c in caps.items() if c.backward_statistics] == ["mabn"]
  with pytest.raises(ValueError, match="needs running_statistics"):
    mbn_jax.Capabilities(precise_statistics=True)


def test_centered_conv_equals_a_conv_of_the_centred_kernel_and_projects_its_gradient():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
  w = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)  # HWIO
  dn = ("NHWC", "HWIO", "NHWC")
  conv = mbn_jax.centered_conv()
  w_centred = w - w.mean(axis=(0, 1, 2), keepdims=True)  # per output channel, over (kh, kw, in)
  y = conv(x, w, (1, 1), "SAME", dimension_numbers=dn)
  y_ref = jax.lax.conv_general_dilated(x, w_centred, (1, 1), "SAME", dimension_numbers=dn)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  dy = rng.normal(size=y.shape).astype(np.float32)
  g = jax.grad(lambda w: jnp.sum(conv(x, w, (1, 1), "SAME", dimension_numbers=dn) * dy))(w)
  g_plain = jax.grad(
    lambda w: jnp.sum(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) * dy)
  )(w_centred)
  g_plain = np.asarray(g_plain)
  np.testing.assert_allclose(g, g_plain - g_plain.mean(axis=(0, 1, 2), keepdims=True), atol=1e-4)


def test_create_model_centered_weights_changes_the_convolutions_only():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 32, 32, 3)), jnp.float32)
  plain = mbn_jax.create_model("resnet20", num_classes=10, norm="bn")
  centred = mbn_jax.create_model("resnet20", num_classes=10, norm="bn", centered_weights=True)
  variables = plain.init(jax.random.key(0), x, train=False)
  assert jax.tree.structure(centred.init(jax.random.key(0), x, train=False)) == jax.tree.structure(
    variables
  )
  # A kernel that is already centred gives the same network.
  params = jax.tree_util.tree_map_with_path(
    lambda p, w: (
      w - w.mean(axis=(0, 1, 2), keepdims=True) if p[-1].key == "kernel" and w.ndim == 4 else w
    ),
    variables["params"],
  )
  v = {**variables, "params": params}
  np.testing.assert_allclose(
    centred.apply(v, x, train=False), plain.apply(v, x, train=False), rtol=1e-4, atol=1e-4
  )
  with pytest.raises(ValueError, match="centered_weights"):
    mbn_jax.create_model("resnet20", num_classes=10, norm="bn", centered_weights="yes")
