"""Gradient accumulation (issue 15): sequential and deferred statistics, the accumulated gradient.

Independent expectations: k separate forward/backward passes threaded by hand
(the sequential statistics and the mean of k gradients, applied by the base
optimizer once), NumPy moments of the concatenated micro-batches (the
deferred statistics), and an uninterrupted run (exact resume mid-accumulation).
"""

import json
import os
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mbn_jax
from mbn_jax import make_norm
from mbn_jax import nnx as mbn_nnx
from tests.test_train import records
from tests.test_train import tiny_config as base_tiny_config
from train import steps
from train import train as train_lib

K = 4  # micro-batches per optimizer step
M = 2  # images per micro-batch
C = 5  # input features
SPE = 3  # optimizer steps per epoch (the norms' steps_per_epoch)
OPT_STEP = 3  # the accumulated step under test: epoch 2 of T = 3, 0 < λ < 1 − m/m0


class InputNormNet(nn.Module):
  """norm(x) → dense → relu → norm → dense: the first norm sees the raw input."""

  norm: str
  accumulation_steps: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False, step=None):
    factory = make_norm(
      self.norm,
      total_epochs=3,
      steps_per_epoch=SPE,
      ideal_batch_size=32,
      accumulation_steps=self.accumulation_steps,
    )
    x = factory(name="norm0")(x, not train, step=step)
    x = nn.relu(nn.Dense(7, name="dense0")(x))
    x = factory(name="norm1")(x, not train, step=step)
    return nn.Dense(3, name="head")(x)


def micro_batches(seed=0):
  rng = np.random.default_rng(seed)
  xs = [(rng.normal(size=(M, C)) * (j + 1) + j).astype(np.float32) for j in range(K)]
  ys = [rng.integers(0, 3, size=(M,)) for _ in range(K)]
  return xs, ys


class Cfg:
  weight_decay = 1e-2
  momentum = 0.9
  nesterov = False

  def __init__(self, k):
    self.grad_accum_steps = k

  def get(self, name, default=None):
    return getattr(self, name, default)


LR = optax.constant_schedule(0.05)


def initial_state(model, k, stats_seed=1):
  """A TrainState at optimizer step OPT_STEP (micro-step OPT_STEP·k), non-trivial statistics."""
  tx = steps.make_optimizer(Cfg(k), LR)
  state = steps.create_train_state(model, tx, (C,), batch_size=M, seed=0)

  def draw(path, v):  # the same values for a layer's statistic whatever else the tree holds
    name = jax.tree_util.keystr(path)
    if "acc_" in name:
      return jnp.zeros_like(v)
    rng = np.random.default_rng([stats_seed, zlib.crc32(name.encode())])
    return jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype)

  stats = jax.tree_util.tree_map_with_path(draw, state.batch_stats)
  return state.replace(batch_stats=stats, step=jnp.int32(OPT_STEP * k))


def run_program_step(state, xs, ys, k):
  """k calls of the training program's train_step (pmapped over one device)."""
  p_step = jax.pmap(
    lambda s, b, f: steps.train_step(
      s, b, f, learning_rate_fn=LR, momentum_fn=lambda t: 0.0, grad_accum_steps=k
    ),
    axis_name=steps.AXIS,
    devices=jax.local_devices()[:1],
  )
  rstate = jax.tree.map(lambda v: jnp.asarray(v)[None], state)
  history = []
  for x, y in zip(xs, ys):
    batch = {"image": jnp.asarray(x)[None], "label": jnp.asarray(y)[None]}
    rstate, _ = p_step(rstate, batch, jnp.zeros((1,), jnp.int32))
    history.append(jax.tree.map(lambda v: v[0], rstate))
  return history


def reference(model, state, xs, ys):
  """By hand: k forward/backward passes at the same parameters, statistics threaded in order."""

  def loss(params, stats, x, y):
    logits, upd = model.apply(
      {"params": params, "batch_stats": stats},
      x,
      train=True,
      step=OPT_STEP,
      mutable=["batch_stats"],
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd["batch_stats"]

  stats, grads = state.batch_stats, []
  for x, y in zip(xs, ys):
    (_, stats), g = jax.value_and_grad(loss, has_aux=True)(state.params, stats, x, y)
    grads.append(g)
  mean_grad = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
  base = steps.make_optimizer(Cfg(1), LR)  # the same chain, without MultiSteps
  updates, _ = base.update(mean_grad, base.init(state.params), state.params)
  return stats, optax.apply_updates(state.params, updates)


def close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("norm", ["mbn", "bn"])
def test_sequential_statistics_and_the_accumulated_gradient(norm):
  model = InputNormNet(norm)
  state = initial_state(model, K)
  xs, ys = micro_batches()
  history = run_program_step(state, xs, ys, K)
  # No parameter moves before the k-th micro-batch (weight decay included).
  for mid in history[:-1]:
    jax.tree.map(np.testing.assert_array_equal, mid.params, state.params)
  want_stats, want_params = reference(model, state, xs, ys)
  close(history[-1].batch_stats, want_stats)  # (a) = k sequential single-micro-batch steps
  close(history[-1].params, want_params)  # one update with the mean of the k gradients
  assert int(history[-1].step) == (OPT_STEP + 1) * K


@pytest.mark.parametrize("norm", ["mbn", "bn"])
def test_deferred_statistics_are_the_pooled_micro_batches(norm):
  xs, ys = micro_batches()
  seq_model, def_model = InputNormNet(norm), InputNormNet(norm, accumulation_steps=K)
  sequential = run_program_step(initial_state(seq_model, K), xs, ys, K)
  state = initial_state(def_model, K)
  deferred = run_program_step(state, xs, ys, K)
  old = state.batch_stats["norm0"]
  for mid in deferred[:-1]:  # the inference statistics wait for the k-th micro-batch
    for name in ("mean", "var"):
      np.testing.assert_array_equal(mid.batch_stats["norm0"][name], old[name])
  x = np.concatenate(xs).astype(np.float64)
  tau = mbn_jax.inference_momentum(M * K) if norm == "mbn" else 0.9
  new = deferred[-1].batch_stats["norm0"]
  np.testing.assert_allclose(new["mean"], tau * old["mean"] + (1 - tau) * x.mean(0), rtol=1e-5)
  np.testing.assert_allclose(new["var"], tau * old["var"] + (1 - tau) * x.var(0), rtol=1e-5)
  for name in ("acc_mean", "acc_var", "acc_count", "acc_calls"):  # emptied after the update
    np.testing.assert_array_equal(new[name], 0)
  if norm == "mbn":  # deferral leaves the normalizer alone: Eq. 8 per micro-batch, as sequential
    for layer in ("norm0", "norm1"):
      for name in ("train_mean", "train_var"):
        np.testing.assert_allclose(
          deferred[-1].batch_stats[layer][name],
          sequential[-1].batch_stats[layer][name],
          rtol=1e-6,
        )
  # The gradient does not depend on the inference statistics: the same update.
  close(deferred[-1].params, sequential[-1].params)


def test_deferred_layer_with_masks_empty_and_nonfinite_micro_batches():
  """Uneven masks, an all-masked micro-batch and a NaN micro-batch: the pool of what was valid."""
  k, c = 4, 3
  layer = mbn_jax.MomentumBatchNorm(accumulation_steps=k)
  rng = np.random.default_rng(3)
  xs = [rng.normal(size=(6, c)).astype(np.float32) * 2 + 1 for _ in range(k)]
  masks = [rng.random((6, 1)) < 0.6, np.zeros((6, 1), bool), np.ones((6, 1), bool), None]
  masks[0][:2] = True
  xs[2][0, 1] = np.nan  # feature 1 of micro-batch 2 is non-finite: it must not count
  v = layer.init(jax.random.key(0), xs[0], use_running_average=False)
  for x, mask in zip(xs, masks):
    _, upd = layer.apply(v, x, use_running_average=False, momentum=0.5, mask=mask, mutable=True)
    v = {**v, **upd}
  stats = v["batch_stats"]
  assert all(np.all(np.isfinite(s)) for s in jax.tree.leaves(stats))
  tau = mbn_jax.inference_momentum(6 * k)
  for f in range(c):
    valid = [
      x[:, f][(np.ones(6, bool) if mk is None else mk[:, 0])]
      for j, (x, mk) in enumerate(zip(xs, masks))
      if not (j == 2 and f == 1)
    ]
    pooled = np.concatenate(valid).astype(np.float64)
    np.testing.assert_allclose(stats["mean"][f], (1 - tau) * pooled.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"][f], tau + (1 - tau) * pooled.var(), rtol=1e-5)


def test_deferred_layer_pools_devices_and_micro_batches():
  """Under pmap with axis_name: the pool is over every device's entries of all k micro-batches."""
  n_dev, k, c = 2, 3, 4
  layer = mbn_jax.MomentumBatchNorm(axis_name="d", accumulation_steps=k)
  rng = np.random.default_rng(5)
  xs = rng.normal(size=(k, n_dev, 2, c)).astype(np.float32) + np.arange(c)
  v = layer.init(jax.random.key(0), xs[0, 0], use_running_average=False)
  fwd = jax.pmap(
    lambda v, x: layer.apply(v, x, use_running_average=False, momentum=0.3, mutable=True)[1],
    axis_name="d",
    devices=jax.local_devices()[:n_dev],
  )
  rv = jax.tree.map(lambda t: jnp.stack([t] * n_dev), v)
  for j in range(k):
    rv = {**rv, **fwd(rv, xs[j])}
  tau = mbn_jax.inference_momentum(2 * n_dev * k)
  flat = xs.reshape(-1, c).astype(np.float64)
  for d in range(n_dev):
    np.testing.assert_allclose(rv["batch_stats"]["mean"][d], (1 - tau) * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
      rv["batch_stats"]["var"][d], tau + (1 - tau) * flat.var(0), rtol=1e-5
    )


def test_deferred_nnx_equals_linen():
  k, c = 3, 4
  kw = dict(total_epochs=2, steps_per_epoch=2, accumulation_steps=k)
  lin = mbn_jax.MomentumBatchNorm(**kw)
  nx = mbn_nnx.MomentumBatchNorm(c, rngs=nnx.Rngs(0), **kw)
  xs = [jax.random.normal(jax.random.key(s), (2, c)) * 3 + s for s in range(2 * k + 1)]
  v = lin.init(jax.random.key(0), xs[0], use_running_average=False)
  for s, x in enumerate(xs):
    y_l, upd = lin.apply(v, x, use_running_average=False, step=s, mutable=["batch_stats"])
    v = {**v, **upd}
    np.testing.assert_allclose(nx(x, step=s), y_l, rtol=1e-6, atol=1e-6)
    for name, value in v["batch_stats"].items():
      np.testing.assert_allclose(getattr(nx, name)[...], value, rtol=1e-6, atol=1e-7)


def test_bad_accumulation_arguments_are_named():
  with pytest.raises(ValueError, match="accumulation_steps"):
    mbn_jax.MomentumBatchNorm(accumulation_steps=0).init(jax.random.key(0), jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="accumulation_steps"):
    make_norm("bn", accumulation_steps=2.5)().init(jax.random.key(0), jnp.ones((2, 3)))


# ----------------------------------------------------------------------------
# The training program: --config.grad_accum_steps.


def tiny_config(**overrides):
  """test_train's tiny 4-device digits run, with 2 micro-batches per optimizer step (deferred)."""
  return base_tiny_config(**{"grad_accum_steps": 2, "grad_accum_stats": "deferred", **overrides})


@pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")
def test_program_counts_optimizer_steps_and_resumes_mid_accumulation(tmp_path):
  full_dir, cut_dir = str(tmp_path / "full"), str(tmp_path / "cut")
  full = train_lib.train_and_evaluate(tiny_config(), full_dir)
  # 64 images, global micro-batch 8: 8 micro-batches = 4 optimizer steps of 16 images per epoch.
  assert full["status"] == "completed" and full["steps_per_epoch"] == 8
  assert full["grad_accum_steps"] == 2 and full["optimizer_steps_per_epoch"] == 4
  assert full["optimizer_batch_size"] == 16 and full["train_step_traces"] == 1
  # summary.json names both counts (run_info's steps_per_epoch, kept for resume, is micro-batches).
  saved = json.load(open(os.path.join(full_dir, "summary.json")))
  assert saved["micro_batches_per_epoch"] == 8 and saved["optimizer_steps_per_epoch"] == 4
  assert (
    "micro_batches_per_epoch"
    not in json.load(open(os.path.join(full_dir, "config.json")))["run_info"]
  )
  recs = records(full_dir)
  # lr = 0.1-style rule with the optimizer batch m·k = 4 (base 1.0, reference 64), ÷10 after epoch 1.
  assert recs[0]["learning_rate"] == pytest.approx(1.0 * 4 / 64)
  assert recs[1]["learning_rate"] == pytest.approx(0.1 * 1.0 * 4 / 64)
  # λ from the statistics batch m = 2 (the micro-batch) and optimizer epochs: 0, then 1 − 2/32.
  assert recs[0]["lambda"] == 0.0 and recs[1]["lambda"] == pytest.approx(1 - 2 / 32)
  # A SIGTERM after micro-batch 5: half-way through optimizer step 3 of epoch 1.
  first = train_lib.train_and_evaluate(tiny_config(simulate_preemption_at_step=5), cut_dir)
  assert first["status"] == "interrupted" and first["step"] % 2 == 1
  second = train_lib.train_and_evaluate(tiny_config(), cut_dir)
  assert second["status"] == "completed"
  strip = lambda rs: [
    {k: v for k, v in r.items() if k not in ("images_per_sec", "data_wait_share")} for r in rs
  ]
  assert strip(records(cut_dir)) == strip(records(full_dir))  # bit for bit


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"grad_accum_steps": 0}, "grad_accum_steps must be a positive int"),
    ({"grad_accum_stats": "pooled"}, "grad_accum_stats must be one of"),
    ({"norm": "brn"}, "not defined for norm 'brn'"),
    ({"grad_accum_steps": 64}, "optimizer batch .* larger than the training set"),
  ],
)
def test_program_rejects_bad_accumulation_settings(tmp_path, overrides, match):
  with pytest.raises(Exception, match=match):
    train_lib.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "run"))
