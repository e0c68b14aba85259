"""MABN (make_norm('mabn')) against an independent NumPy implementation of the reference.

The reference (megvii-model/MABN, MABN.py) is re-implemented below in NumPy,
step by step, with its own ring buffers and iteration counter; the layer
runs through ``jax.value_and_grad`` with its backward probes folded back
(:mod:`mbn_jax.backward_statistics`). Cross-checks: warm-up equals the
gradient of a closed form; per-device statistics under pmap; linen ≡ nnx;
one compilation for every step; errors name their field.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mbn_jax
from mbn_jax import norms
from mbn_jax.backward_statistics import BackwardProbe
from mbn_jax.nnx import MovingAverageBatchNorm as MABNNNX

EPS = 1e-5
SHAPE = (2, 3, 3, 4)  # N, H, W, C: 2 images, as at m = 2


class NumpyMABN:
  """MABN.py's BatchNormFunction and MABN2d in NumPy (channels last), one training call a step."""

  def __init__(self, c, k, momentum, warmup, r_clip, r_clip_start):
    self.k, self.momentum, self.warmup = k, momentum, warmup
    self.r_clip, self.r_clip_start = r_clip, r_clip_start
    self.running_var = np.ones(c)
    self.buffer_x2 = np.zeros((k, c))
    self.buffer_gz = np.zeros((k, c))
    self.iters = 0

  def step(self, x, gamma, beta, dy):
    """Forward and backward of one iteration: (y, dL/dx) for upstream gradient dy."""
    self.iters += 1
    t, k = self.iters, self.k
    x2 = (x * x).mean(axis=(0, 1, 2))
    self.buffer_x2[t % k] = x2
    warm = t <= k or t < self.warmup
    var = x2 if warm else self.buffer_x2.mean(0)
    z = x / np.sqrt(var + EPS)
    r = np.sqrt(var + EPS) / np.sqrt(self.running_var + EPS)
    if t <= max(self.r_clip_start, self.warmup):
      r = np.ones_like(r)
    else:
      r = np.clip(r, 1 / self.r_clip, self.r_clip)
    y = gamma * (r * z) + beta
    self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
    # backward
    g = dy * gamma * r
    gz = (g * z).mean(axis=(0, 1, 2))
    self.buffer_gz[t % k] = gz
    mean_gz = gz if warm else self.buffer_gz.mean(0)
    gx = (g - z * mean_gz) / np.sqrt(var + EPS)
    return y, gx


def _inputs(steps, seed=0):
  rng = np.random.default_rng(seed)
  # scale drifts over steps, so that r leaves [1/r_clip, r_clip] once clipping starts
  xs = [rng.normal(0.3, 1.0 + 0.6 * t, SHAPE).astype(np.float32) for t in range(steps)]
  dys = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(steps)]
  return xs, dys


FIELDS = dict(buffer_size=3, mabn_momentum=0.9, warmup_iters=2, r_clip=1.5, r_clip_start=4)


def _linen_step(module):
  """One jitted training step: (y, dL/dx, new batch_stats) with L = sum(y·dy); traces counted."""
  traces = []

  @jax.jit
  def step(variables, batch_stats, x, dy):
    traces.append(1)
    probes = mbn_jax.zero_probes(variables)

    def loss(x, probes):
      y, upd = module.apply(
        {
          "params": variables["params"],
          "batch_stats": batch_stats,
          mbn_jax.BACKWARD_PROBES: probes,
        },
        x,
        False,
        mutable=["batch_stats"],
      )
      return jnp.sum(y * dy), (y, upd)

    (_, (y, upd)), (gx, pg) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, probes)
    return y, gx, mbn_jax.fold_backward_statistics(upd["batch_stats"], pg)

  return step, traces


def _module_and_variables(c=SHAPE[-1], **fields):
  module = norms.make_norm("mabn", **{**FIELDS, **fields})()
  variables = module.init(jax.random.key(0), jnp.zeros(SHAPE), True)
  rng = np.random.default_rng(7)
  params = {
    "scale": jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32),
    "bias": jnp.asarray(rng.normal(size=c), jnp.float32),
  }
  return module, {**variables, "params": params}


def test_mabn_matches_numpy_reference_over_k_plus_4_steps():
  """Forward, running_var, both buffers, iters and dL/dx for K + 4 steps (warm-up, wrap, clip)."""
  module, variables = _module_and_variables()
  step, traces = _linen_step(module)
  ref = NumpyMABN(SHAPE[-1], k=3, momentum=0.9, warmup=2, r_clip=1.5, r_clip_start=4)
  gamma, beta = (np.asarray(variables["params"][n], np.float64) for n in ("scale", "bias"))
  stats = variables["batch_stats"]
  xs, dys = _inputs(3 + 4)
  clipped = 0
  for t, (x, dy) in enumerate(zip(xs, dys), start=1):
    y, gx, stats = step(variables, stats, x, dy)
    y_ref, gx_ref = ref.step(x.astype(np.float64), gamma, beta, dy.astype(np.float64))
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5, err_msg=f"y at t={t}")
    np.testing.assert_allclose(gx, gx_ref, rtol=2e-4, atol=2e-5, err_msg=f"dL/dx at t={t}")
    np.testing.assert_allclose(stats["running_var"], ref.running_var, rtol=2e-5)
    np.testing.assert_allclose(stats["buffer_x2"], ref.buffer_x2, rtol=2e-5)
    np.testing.assert_allclose(stats["buffer_gz"], ref.buffer_gz, rtol=2e-4, atol=1e-5)
    assert int(stats["iters"]) == ref.iters == t
    if t > 4:
      r = np.sqrt(ref.buffer_x2.mean(0) + EPS) / np.sqrt(ref.running_var + EPS)
      clipped += int(np.any((r < 1 / 1.5) | (r > 1.5)))
  assert clipped > 0, "the inputs should drive r outside [1/r_clip, r_clip] once clipping starts"
  assert len(traces) == 1, "one compilation for every step"


def test_mabn_evaluation_uses_running_var():
  module, variables = _module_and_variables()
  step, _ = _linen_step(module)
  xs, dys = _inputs(5)
  stats = variables["batch_stats"]
  for x, dy in zip(xs, dys):
    _, _, stats = step(variables, stats, x, dy)
  y = module.apply({"params": variables["params"], "batch_stats": stats}, xs[0], True)
  expect = np.asarray(variables["params"]["scale"]) * xs[0] / np.sqrt(
    np.asarray(stats["running_var"]) + EPS
  ) + np.asarray(variables["params"]["bias"])
  np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6)


def test_warmup_forward_and_grad_equal_the_closed_form():
  """While warming up (default fields: 100 iterations, r held at 1) MABN is the gradient of
  y = γ·x/√(mean(x²) + ε) + β — here checked for 5 consecutive steps."""
  module = norms.make_norm("mabn")()
  variables = module.init(jax.random.key(0), jnp.zeros(SHAPE), True)
  rng = np.random.default_rng(3)
  params = {"scale": jnp.asarray(rng.uniform(0.5, 2, 4)), "bias": jnp.asarray(rng.normal(size=4))}
  step, _ = _linen_step(module)

  def closed(x, dy):
    v = jnp.mean(x * x, axis=(0, 1, 2))
    y = params["scale"] * x / jnp.sqrt(v + EPS) + params["bias"]
    return jnp.sum(y * dy), y

  stats = variables["batch_stats"]
  for x, dy in zip(*_inputs(5, seed=1)):
    y, gx, stats = step({"params": params}, stats, x, dy)
    (_, y_ref), gx_ref = jax.value_and_grad(closed, has_aux=True)(jnp.asarray(x), jnp.asarray(dy))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-6)


def test_unfolded_probe_leaves_the_backward_buffer_and_forward_unchanged():
  """A step that never differentiates the probes trains the same forward; buffer_gz stays 0."""
  module, variables = _module_and_variables()
  x = _inputs(1)[0][0]
  y, upd = module.apply(
    {"params": variables["params"], "batch_stats": variables["batch_stats"]},
    x,
    False,
    mutable=["batch_stats"],
  )
  y2, _, stats = _linen_step(module)[0](variables, variables["batch_stats"], x, np.ones(SHAPE))
  np.testing.assert_allclose(y, y2, rtol=1e-6)
  assert not np.any(np.asarray(upd["batch_stats"]["buffer_gz"]))
  assert np.any(np.asarray(stats["buffer_gz"]))


def test_per_device_statistics_on_four_devices():
  """Under pmap every device keeps its own statistics: those of the NumPy reference on its data."""
  n = 4
  assert jax.local_device_count() >= n
  module, variables = _module_and_variables()
  step, _ = _linen_step(module)
  p_step = jax.pmap(step.__wrapped__ if hasattr(step, "__wrapped__") else step)
  refs = [NumpyMABN(SHAPE[-1], 3, 0.9, 2, 1.5, 4) for _ in range(n)]
  gamma, beta = (np.asarray(variables["params"][k], np.float64) for k in ("scale", "bias"))
  rep = jax.tree.map(lambda a: np.stack([np.asarray(a)] * n), variables)
  stats = rep["batch_stats"]
  xs, dys = _inputs(5 * n, seed=2)
  for t in range(5):
    x = np.stack(xs[t * n : (t + 1) * n])
    dy = np.stack(dys[t * n : (t + 1) * n])
    _, gx, stats = p_step(rep, stats, x, dy)
    for d in range(n):
      _, gx_ref = refs[d].step(x[d].astype(np.float64), gamma, beta, dy[d].astype(np.float64))
      np.testing.assert_allclose(gx[d], gx_ref, rtol=2e-4, atol=2e-5)
      np.testing.assert_allclose(stats["running_var"][d], refs[d].running_var, rtol=2e-5)
      np.testing.assert_allclose(stats["buffer_gz"][d], refs[d].buffer_gz, rtol=2e-4, atol=1e-5)
  assert not np.allclose(stats["running_var"][0], stats["running_var"][1])


def test_linen_equals_nnx_over_steps():
  module, variables = _module_and_variables()
  step, _ = _linen_step(module)
  layer = MABNNNX(
    SHAPE[-1],
    rngs=nnx.Rngs(0),
    buffer_size=3,
    momentum=0.9,
    warmup_iters=2,
    r_clip=1.5,
    r_clip_start=4,
  )
  layer.scale[...] = variables["params"]["scale"]
  layer.bias[...] = variables["params"]["bias"]

  def loss(layer, x, dy):
    y = layer(x)
    return jnp.sum(y * dy), y

  @nnx.jit
  def nnx_step(layer, x, dy):
    diff = nnx.DiffState(0, (nnx.Param, BackwardProbe))
    (_, y), (grads, gx) = nnx.value_and_grad(loss, argnums=(diff, 1), has_aux=True)(layer, x, dy)
    mbn_jax.fold_backward_statistics_nnx(layer, grads)
    return y, gx

  stats = variables["batch_stats"]
  for x, dy in zip(*_inputs(6, seed=4)):
    y, gx, stats = step(variables, stats, x, dy)
    y_n, gx_n = nnx_step(layer, jnp.asarray(x), jnp.asarray(dy))
    np.testing.assert_allclose(y_n, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx_n, gx, rtol=1e-5, atol=1e-6)
    for name in ("running_var", "buffer_x2", "buffer_gz", "iters"):
      np.testing.assert_allclose(getattr(layer, name)[...], stats[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
  "fields, match",
  [
    ({"buffer_size": 0}, "buffer_size"),
    ({"mabn_momentum": 1.0}, "momentum must lie in"),
    ({"mabn_momentum": -0.1}, "momentum must lie in"),
    ({"r_clip": 0.5}, "r_clip must be"),
    ({"warmup_iters": -1}, "warmup_iters must be"),
    ({"r_clip_start": 1.5}, "r_clip_start must be"),
    ({"axis_name": "batch"}, "never communicates"),
  ],
)
def test_bad_fields_name_the_field(fields, match):
  with pytest.raises(ValueError, match=match):
    if "axis_name" in fields:  # make_norm drops it for norms that do not synchronize
      norms.MovingAverageBatchNorm(**fields).init(jax.random.key(0), jnp.ones(SHAPE), True)
    else:
      norms.make_norm("mabn", **fields)


def test_mask_is_refused():
  module, variables = _module_and_variables()
  with pytest.raises(ValueError, match="does not take a mask"):
    module.apply(variables, jnp.ones(SHAPE), False, mask=jnp.ones(SHAPE, bool), mutable=True)


def test_fold_refuses_a_probe_without_its_statistic():
  with pytest.raises(ValueError, match="no batch_stats entry"):
    mbn_jax.fold_backward_statistics({"a": {"x": jnp.zeros(3)}}, {"a": {"y": jnp.zeros(3)}})
