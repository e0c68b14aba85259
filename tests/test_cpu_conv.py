"""train.cpu_conv: outputs and gradients equal lax.conv_general_dilated's.

Tiny shapes only; no timing here (benchmarks/ does that).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from train import cpu_conv as fc

METHODS = ("auto", "taps", "chunked")
PADDINGS = ("SAME", "VALID", ((1, 0), (2, 1)))
NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture
def small_auto_chunks(monkeypatch):
  """Makes "auto" chunk a 5-example batch into 2+2+1 (as it would a big one)."""
  monkeypatch.setattr(fc, "AUTO_CHUNK_BYTES", 1)
  monkeypatch.setattr(fc, "AUTO_MIN_CHUNK", 2)
  monkeypatch.setattr(fc, "AUTO_MAX_CHUNK", 2)
  monkeypatch.setattr(fc, "AUTO_MATMUL_MAX_ROWS", 0)


def _matmul_conv(lhs, rhs, window_strides, padding, dimension_numbers=None, **kw):
  assert not kw
  return fc.matmul_conv(lhs, rhs, window_strides, padding, dimension_numbers=dimension_numbers)


def _data(dtype, n=5, hw=7, cin=3, cout=4, k=3, layout=NHWC, seed=0):
  kx, kw, kg = jax.random.split(jax.random.PRNGKey(seed), 3)
  xs = (n, hw, hw, cin) if layout[0] == "NHWC" else (n, cin, hw, hw)
  ws = (k, k, cin, cout) if layout[1] == "HWIO" else (cout, cin, k, k)
  x = jax.random.normal(kx, xs, jnp.float32).astype(dtype)
  w = (jax.random.normal(kw, ws, jnp.float32) * 0.3).astype(dtype)
  return x, w, kg


def _vjp_all(conv, x, w, kg, strides, padding, dnums, **kw):
  f = lambda x, w: conv(x, w, strides, padding, dimension_numbers=dnums, **kw)
  y, vjp = jax.vjp(f, x, w)
  ct = jax.random.normal(kg, y.shape, jnp.float32).astype(y.dtype)
  dx, dw = vjp(ct)
  return y, dx, dw


def _close(a, b, dtype):
  a = np.asarray(a, np.float32)
  b = np.asarray(b, np.float32)
  assert a.shape == b.shape and a.dtype == b.dtype
  if dtype == jnp.bfloat16:
    scale = float(np.max(np.abs(b))) + 1e-6
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2 * scale)
  else:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


CONFIGS = [(s, p) for s in ((1, 1), (2, 2)) for p in PADDINGS]


def _all_configs(conv, x, w, kg):
  return [_vjp_all(conv, x, w, kg, s, p, NHWC) for s, p in CONFIGS]


@pytest.mark.parametrize("method", METHODS + ("matmul", "auto-matmul"))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_matches_lax(method, dtype, small_auto_chunks, monkeypatch):
  """Strides 1/2 × padding SAME/VALID/explicit; batch 5 in chunks of 2."""
  x, w, kg = _data(dtype)
  if method == "matmul":
    conv = _matmul_conv
  elif method == "auto-matmul":  # the default "auto" on a tiny conv: matmul_conv
    monkeypatch.setattr(fc, "AUTO_MATMUL_MAX_ROWS", 512)
    conv = fc.conv_general_dilated
  else:
    conv = fc.make_conv_general_dilated(method, chunk_size=2)
  want = jax.jit(lambda x, w: _all_configs(lax.conv_general_dilated, x, w, kg))(x, w)
  got = jax.jit(lambda x, w: _all_configs(conv, x, w, kg))(x, w)
  for (strides, padding), got_c, want_c in zip(CONFIGS, got, want):
    for name, g, r in zip(("y", "dx", "dw"), got_c, want_c):
      assert g.dtype == r.dtype, (strides, padding, name)
      _close(g, r, dtype)


@pytest.mark.parametrize("method", METHODS + ("matmul",))
def test_nchw_and_1x1(method, small_auto_chunks):
  dn = ("NCHW", "OIHW", "NCHW")
  for k, strides in ((3, (2, 1)), (1, (2, 2))):
    x, w, kg = _data(jnp.float32, k=k, layout=dn)
    conv = (
      _matmul_conv if method == "matmul" else fc.make_conv_general_dilated(method, chunk_size=2)
    )
    want = _vjp_all(lax.conv_general_dilated, x, w, kg, strides, "SAME", dn)
    got = _vjp_all(conv, x, w, kg, strides, "SAME", dn)
    for g, r in zip(got, want):
      _close(g, r, jnp.float32)


def test_chunked_and_input_grad_chunks():
  x, w, kg = _data(jnp.float32, n=7)
  conv = fc.make_conv_general_dilated("chunked", chunk_size=3, input_grad_chunk_size=2)
  want = _vjp_all(lax.conv_general_dilated, x, w, kg, (1, 1), "SAME", NHWC)
  got = _vjp_all(conv, x, w, kg, (1, 1), "SAME", NHWC)
  for g, r in zip(got, want):
    _close(g, r, jnp.float32)


@pytest.mark.parametrize("method", ["auto", "taps"])
def test_fallbacks_grouped_and_dilated(method, small_auto_chunks):
  """Grouped or dilated convs fall back to the chunked lax VJP: still exact."""
  x, w, kg = _data(jnp.float32, cin=4)
  wg = w[:, :, :2, :]  # feature_group_count=2: I = 4 / 2
  conv = fc.make_conv_general_dilated(method, chunk_size=2)
  for kw, ww in ((dict(feature_group_count=2), wg), (dict(rhs_dilation=(2, 2)), w)):
    want = _vjp_all(lax.conv_general_dilated, x, ww, kg, (1, 1), "SAME", NHWC, **kw)
    got = _vjp_all(conv, x, ww, kg, (1, 1), "SAME", NHWC, **kw)
    for g, r in zip(got, want):
      _close(g, r, jnp.float32)


@pytest.mark.parametrize("rows", [0, 512], ids=["chunked", "matmul"])
def test_finite_difference(rows, small_auto_chunks, monkeypatch):
  """Directional derivative of a smooth loss vs a central difference."""
  monkeypatch.setattr(fc, "AUTO_MATMUL_MAX_ROWS", rows)
  x, w, _ = _data(jnp.float32, n=5, hw=6)
  conv = fc.conv_general_dilated

  def loss(x, w):
    y = conv(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
    return jnp.sum(jnp.sin(y))

  gx, gw = jax.grad(loss, (0, 1))(x, w)
  vx, vw = _data(jnp.float32, n=5, hw=6, seed=1)[:2]
  eps = 1e-2
  fd = (loss(x + eps * vx, w + eps * vw) - loss(x - eps * vx, w - eps * vw)) / (2 * eps)
  ad = jnp.vdot(gx, vx) + jnp.vdot(gw, vw)
  np.testing.assert_allclose(float(ad), float(fd), rtol=2e-3)


def test_flax_conv_drop_in(small_auto_chunks):
  x, _, _ = _data(jnp.float32)
  ref = nn.Conv(4, (3, 3), strides=(2, 2), use_bias=True)
  fast = nn.Conv(
    4, (3, 3), strides=(2, 2), use_bias=True, conv_general_dilated=fc.conv_general_dilated
  )
  params = ref.init(jax.random.PRNGKey(0), x)

  def grads(m):
    return jax.grad(lambda p, x: jnp.sum(m.apply(p, x) ** 2), (0, 1))(params, x)

  for g, r in zip(jax.tree_util.tree_leaves(grads(fast)), jax.tree_util.tree_leaves(grads(ref))):
    _close(g, r, jnp.float32)


def test_auto_chunk_size():
  assert fc.auto_chunk_size(32 * 32 * 64 * 4) == 8
  assert fc.auto_chunk_size(8 * 8 * 256 * 4) == 32
  assert fc.auto_chunk_size(1) == fc.AUTO_MAX_CHUNK
  assert fc.auto_chunk_size(10**9) == fc.AUTO_MIN_CHUNK


def test_auto_conv_choice():
  assert fc.auto_conv(backend="gpu") is lax.conv_general_dilated
  assert fc.auto_conv(backend="tpu", batch_size=128) is lax.conv_general_dilated
  assert fc.auto_conv(backend="cpu") is fc.conv_general_dilated
  assert fc.auto_conv(4, backend="cpu", min_batch=8) is lax.conv_general_dilated
  assert fc.auto_conv(8, backend="cpu", min_batch=8) is fc.conv_general_dilated
  assert fc.auto_conv(backend="cpu", weight_grad="taps") is not fc.conv_general_dilated


def test_bad_arguments():
  with pytest.raises(ValueError, match="weight_grad"):
    fc.make_conv_general_dilated("nope")
  with pytest.raises(ValueError, match="chunk_size"):
    fc.make_conv_general_dilated("chunked", chunk_size=0)
