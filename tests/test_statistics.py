"""Batch statistics shared by every norm: our own, exact, guarded.

Independent expectations: flax.linen.BatchNorm (bit for bit on one device),
NumPy on the concatenated valid entries of every device, and a clean-only
run for the non-finite guard.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import mbn_jax
from mbn_jax import MomentumBatchNorm, norms
from mbn_jax import functional as F
from mbn_jax import nnx as mbn_nnx

C = 3


def _x(shape, seed=0):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(size=shape) * rng.uniform(0.5, 3.0, shape[-1]) + rng.normal(size=shape[-1])
  ).astype(np.float32)


LINEN = {
  "bn": lambda **kw: norms.BatchNorm(momentum=0.9, **kw),
  "mbn": lambda **kw: MomentumBatchNorm(**kw),
  "brn": lambda **kw: norms.BatchRenorm(momentum=0.9, r_max=1.5, d_max=0.5, **kw),
}


def _call(layer, v, x, **kw):
  extra = {"momentum": 0.5} if isinstance(layer, MomentumBatchNorm) else {}
  return layer.apply(v, x, use_running_average=False, mutable=["batch_stats"], **extra, **kw)


@pytest.mark.parametrize("shape, axis", [((6, C), -1), ((3, 4, 4, C), -1), ((3, C, 4, 4), 1)])
def test_one_device_statistics_are_bit_equal_to_flax_batchnorm(shape, axis):
  x = _x(shape)
  bn_flax = nn.BatchNorm(axis=axis, momentum=0.9)
  ours = norms.BatchNorm(axis=axis, momentum=0.9)
  mbn = MomentumBatchNorm(axis=axis)
  v = bn_flax.init(jax.random.key(0), x, use_running_average=False)
  y_f, u_f = bn_flax.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  y_o, u_o = ours.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(y_o, y_f)
  jax.tree.map(np.testing.assert_array_equal, u_o, u_f)
  vm = mbn.init(jax.random.key(0), x, use_running_average=False)
  y_m, _ = mbn.apply(vm, x, use_running_average=False, momentum=0.0, mutable=["batch_stats"])
  np.testing.assert_array_equal(y_m, y_f)  # MBN at λ = 0 normalizes exactly as Flax's BN
  for use_fast_variance in (True, False):
    want = nn.BatchNorm(axis=axis, use_fast_variance=use_fast_variance).apply(
      v, x, use_running_average=False, mutable=["batch_stats"]
    )
    got = norms.BatchNorm(axis=axis, use_fast_variance=use_fast_variance).apply(
      v, x, use_running_average=False, mutable=["batch_stats"]
    )
    jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize("name", sorted(LINEN))
def test_uneven_masks_across_four_devices_give_the_concatenated_statistics(name):
  n_dev = 4
  if jax.local_device_count() < n_dev:
    pytest.skip("needs 4 devices")
  x = _x((n_dev, 5, C), seed=1)
  rng = np.random.default_rng(2)
  mask = rng.random((n_dev, 5, 1)) < 0.5
  mask[0] = True  # 5 valid entries on device 0 ...
  mask[3] = False  # ... and none on device 3
  mask[1, :2] = True
  layer = LINEN[name](axis_name="d")
  v = layer.init(jax.random.key(0), x[0], use_running_average=False)
  v = {"params": v["params"], "batch_stats": jax.tree.map(lambda t: t + 0.5, v["batch_stats"])}
  out = jax.pmap(lambda xx, mm: _call(layer, v, xx, mask=mm), axis_name="d")(x, mask)
  valid = x[np.broadcast_to(mask, x.shape)].reshape(-1, C)
  want_mean, want_var = valid.mean(0), valid.var(0)
  momentum = 0.9 if name != "mbn" else float(mbn_jax.inference_momentum(5 * n_dev))
  stats = jax.tree.map(lambda t: np.asarray(t)[3], out[1]["batch_stats"])  # the empty device too
  np.testing.assert_allclose(
    stats["mean"], momentum * 0.5 + (1 - momentum) * want_mean, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    stats["var"], momentum * 1.5 + (1 - momentum) * want_var, rtol=1e-5, atol=1e-6
  )
  # The direct statistics, both variance formulas.
  for fast in (True, False):
    m = jax.pmap(
      lambda xx, mm: F.batch_moments(xx, (0,), axis_name="d", mask=mm, use_fast_variance=fast),
      axis_name="d",
    )(x, mask)
    np.testing.assert_allclose(np.asarray(m.mean)[0], want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m.var)[0], want_var, rtol=1e-5)
    assert float(np.asarray(m.count)[0, 0]) == len(valid)


def test_full_masks_and_equal_counts_agree_with_flax_pmean():
  if jax.local_device_count() < 4:
    pytest.skip("needs 4 devices")
  x = _x((4, 6, C), seed=3)
  v = nn.BatchNorm(axis_name="d").init(jax.random.key(0), x[0], use_running_average=False)
  run = lambda layer: jax.pmap(
    lambda xx: layer.apply(v, xx, use_running_average=False, mutable=["batch_stats"]), axis_name="d"
  )(x)
  want, got = run(nn.BatchNorm(axis_name="d")), run(norms.BatchNorm(axis_name="d"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


@pytest.mark.parametrize("name", sorted(LINEN))
def test_a_batch_with_no_valid_entry_changes_nothing(name):
  x = _x((4, C))
  layer = LINEN[name]()
  v = layer.init(jax.random.key(0), x, use_running_average=False)
  v = {"params": v["params"], "batch_stats": jax.tree.map(lambda t: t + 0.25, v["batch_stats"])}
  y, upd = _call(layer, v, x, mask=np.zeros((4, 1), bool))
  jax.tree.map(np.testing.assert_array_equal, upd["batch_stats"], v["batch_stats"])
  assert all(np.isfinite(t).all() for t in jax.tree.leaves(upd))


def _bad_batches():
  """A NaN, a +inf and a −inf batch (every entry)."""
  return [np.full((4, C), bad, np.float32) for bad in (np.nan, np.inf, -np.inf)]


def _one_bad_channel():
  b = _x((4, C), seed=5)
  b[1, 0] = np.nan  # one entry of channel 0
  return b


@pytest.mark.parametrize("name", sorted(LINEN))
def test_non_finite_batches_never_reach_the_statistics_linen(name):
  layer = LINEN[name]()
  clean = [_x((4, C), seed=s) for s in (10, 11)]
  v = layer.init(jax.random.key(0), clean[0], use_running_average=False)

  def run(batches, layer=layer):
    stats = v["batch_stats"]
    for b in batches:
      _, upd = _call(layer, {**v, "batch_stats": stats}, b)
      stats = upd["batch_stats"]
    return stats

  want = run(clean)
  got = run(_bad_batches() + clean)
  assert all(np.isfinite(t).all() for t in jax.tree.leaves(got))
  jax.tree.map(np.testing.assert_array_equal, got, want)
  # The other channels of a batch with one bad channel still update.
  partial = run([_one_bad_channel()])
  assert not np.allclose(partial["mean"][1:], v["batch_stats"]["mean"][1:])
  np.testing.assert_array_equal(partial["mean"][0], v["batch_stats"]["mean"][0])
  # guard_nonfinite=False: the old behaviour, the NaN stays for ever.
  poisoned = run([_one_bad_channel()] + clean, LINEN[name](guard_nonfinite=False))
  assert np.isnan(poisoned["mean"][0])


def test_non_finite_batches_never_reach_the_statistics_nnx():
  for make in (
    lambda: mbn_nnx.MomentumBatchNorm(C, rngs=nnx.Rngs(0)),
    lambda: norms.BatchRenormNNX(C, momentum=0.9, rngs=nnx.Rngs(0)),
  ):
    kw = {"momentum": 0.5} if "Momentum" in type(make()).__name__ else {}
    clean, dirty = make(), make()
    for b in [_x((4, C), seed=s) for s in (10, 11)]:
      clean(b, **kw)
    for b in _bad_batches() + [_x((4, C), seed=s) for s in (10, 11)]:
      dirty(b, **kw)
    for name in ("mean", "var") + (("train_mean", "train_var") if kw else ()):
      got, want = getattr(dirty, name)[...], getattr(clean, name)[...]
      np.testing.assert_array_equal(got, want)
      assert np.isfinite(got).all()


# ---------------------------------------------------------------- linen ≡ nnx
OPTIONS = [
  dict(),
  dict(dtype=jnp.bfloat16),
  dict(force_float32_reductions=False, param_dtype=jnp.float32),
  dict(use_fast_variance=False, epsilon=1e-3),
  dict(use_scale=False, use_bias=False),
  dict(axis=(1, 3)),
  dict(mask=True),
  dict(guard_nonfinite=False),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("name", ["mbn", "brn"])
def test_linen_and_nnx_are_one_layer(name, options):
  options = dict(options)
  use_mask = options.pop("mask", False)
  x = _x((3, 4, 2, C), seed=7)
  mask = (np.arange(3 * 4 * 2).reshape(3, 4, 2, 1) % 3 != 0) if use_mask else None
  axis = options.get("axis", -1)
  shape = tuple(x.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,)))
  num_features = shape if isinstance(axis, tuple) else shape[0]
  # nnx promotes x and the statistics to dtype as flax.nnx.BatchNorm does (linen does not):
  # without that promotion the two front ends are one layer.
  same = lambda args, **kw: args
  if name == "mbn":
    common = dict(total_epochs=3, steps_per_epoch=2, **options)
    lin = MomentumBatchNorm(**common)
    nx = mbn_nnx.MomentumBatchNorm(num_features, rngs=nnx.Rngs(0), promote_dtype=same, **common)
    kw = [dict(step=s) for s in range(4)]
  else:
    common = dict(momentum=0.8, r_max=1.5, d_max=0.5, warmup_steps=2, **options)
    lin = norms.BatchRenorm(**common)
    nx = norms.BatchRenormNNX(num_features, rngs=nnx.Rngs(0), promote_dtype=same, **common)
    kw = [dict(step=s) for s in range(4)]
  v = lin.init(jax.random.key(0), x, use_running_average=False)
  for i, k in enumerate(kw):
    xi = x * (1 + 0.1 * i) + i
    y_l, upd = lin.apply(v, xi, use_running_average=False, mask=mask, mutable=["batch_stats"], **k)
    v = {**v, **upd}
    y_n = nx(xi, mask=mask, **k)
    assert y_n.dtype == y_l.dtype
    np.testing.assert_array_equal(np.asarray(y_n, np.float32), np.asarray(y_l, np.float32))
    for stat, value in v["batch_stats"].items():
      np.testing.assert_array_equal(getattr(nx, stat)[...], value)
  nx.eval()
  np.testing.assert_array_equal(
    np.asarray(nx(x), np.float32), np.asarray(lin.apply(v, x, use_running_average=True), np.float32)
  )
