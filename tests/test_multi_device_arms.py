"""Issue 22: the 4-device arms differ only as intended (configs/cifar10_resnet20_cpu_4dev.py).

On 4 virtual devices, one step of the program's own train step (through the
seam, as ``python -m train`` runs it) with the ``bn`` and ``syncbn`` arms:

* per-device BN's first-layer statistics equal those of each device's 2 images
  alone; SyncBN's equal those of the 8 images concatenated (NumPy, float64);
* in both, the gradient is the mean over the 8 images: it equals the gradient
  of a single-device model on the same images (per-device BN: the mean of the
  4 two-image gradients; SyncBN: the gradient of the 8-image batch).

The arms' model is swapped for the tiny CNN (the difference under test is
the statistics and gradient layout, not the network) to keep the test fast.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from configs import cifar10_resnet20_cpu_4dev as arms
from train import steps
from train.layout import RunLayout
from train.models import build_model, momentum_schedule_of
from train.parallel import make_parallel, norm_options
from train.validation import resolve_norm_sync_devices

pytestmark = pytest.mark.skipif(jax.local_device_count() != 4, reason="needs 4 devices")


def one_step(arm):
  config = arms.get_config(arm)
  config.model, config.weight_decay, config.momentum = "tiny_cnn", 0.0, 0.0
  m = config.per_device_batch_size
  layout = RunLayout(
    per_device_batch_size=m,
    devices=4,
    norm_sync_devices=resolve_norm_sync_devices(config, 4),
    local_devices=4,
  )
  spe = 100
  lam = momentum_schedule_of(config, layout.statistics_batch_size, spe)
  model = build_model(
    config,
    num_classes=10,
    steps_per_epoch=spe,
    per_device_batch=m,
    momentum_schedule=lam,
    sync=norm_options("pmap", layout),
  )
  lr = 0.1
  parallel = make_parallel("pmap", layout, model, optax.constant_schedule(lr), lam, 1)
  host = jax.device_get(
    steps.create_train_state(
      model,
      steps.make_optimizer(config, optax.constant_schedule(lr)),
      (32, 32, 3),
      batch_size=m,
      seed=0,
    )
  )
  rows = jax.tree.map(lambda x: np.broadcast_to(x, (4,) + x.shape).copy(), host.batch_stats)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, m, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 10, size=(4, m)).astype(np.int32)
  state, _ = parallel.train_step(
    parallel.place(host, rows), {"image": images, "label": labels}, parallel.stop_flags(False)
  )
  # The same network without any device axis: the single-device expectation.
  one_device = build_model(
    config, num_classes=10, steps_per_epoch=spe, per_device_batch=m, momentum_schedule=lam
  )
  return (
    config,
    one_device,
    host,
    images,
    labels,
    parallel.all_rows(state.batch_stats),
    parallel.first(state.params),
  )


def np_conv0(host, images):
  conv = nn.Conv(16, (3, 3), use_bias=False)
  return np.asarray(conv.apply({"params": host.params["conv0"]}, images), np.float64)


@pytest.mark.parametrize("arm", ["bn", "syncbn"])
def test_statistics_and_gradients_of_the_arms(arm):
  config, model, host, images, labels, stats, params = one_step(arm)
  assert config.norm == "bn" and config.per_device_batch_size == 2
  mom = config.bn_momentum  # running ← mom·running + (1 − mom)·batch, from mean 0, var 1
  h = np_conv0(host, images.reshape((-1, 32, 32, 3))).reshape((4, 2, 32, 32, 16))
  for d in range(4):
    group = h[d] if arm == "bn" else h.reshape((-1, 32, 32, 16))  # 2 images, or all 8
    want_mean = (1 - mom) * group.mean((0, 1, 2))
    want_var = mom + (1 - mom) * group.var((0, 1, 2))
    np.testing.assert_allclose(stats["norm0"]["mean"][d], want_mean, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(stats["norm0"]["var"][d], want_var, rtol=2e-4, atol=1e-6)
  if arm == "bn":  # the devices' statistics really differ
    assert not np.allclose(stats["norm0"]["mean"][0], stats["norm0"]["mean"][1])

  # SGD without momentum or weight decay: new = old − lr·g, so g = (old − new)/lr.
  got = jax.tree.map(lambda a, b: (np.asarray(a) - np.asarray(b)) / 0.1, host.params, params)

  def loss(p, x, y):
    logits, _ = model.apply(
      {"params": p, "batch_stats": host.batch_stats}, x, train=True, step=0, mutable=["batch_stats"]
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  if arm == "bn":  # each device normalizes its own 2 images: the mean of the 4 gradients
    grads = [jax.grad(loss)(host.params, images[d], labels[d]) for d in range(4)]
    want = jax.tree.map(lambda *g: np.mean(np.stack(g), 0), *grads)
  else:  # the 8 images normalized together: one 8-image gradient
    want = jax.grad(loss)(host.params, images.reshape((-1, 32, 32, 3)), labels.reshape(-1))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-5)


def test_every_arm_states_its_layout():
  """The docstring's table is what the configs build (device count, batches, lr, statistics)."""
  for arm, (norm, m, group, lr_batch, centred) in arms.ARMS.items():
    c = arms.get_config(arm)
    assert (c.norm, c.per_device_batch_size, c.required_devices) == (norm, m, 4)
    g = resolve_norm_sync_devices(c, 4)
    assert g == (4 if group == -1 else group) and c.lr_batch_size == lr_batch
    assert c.centered_weights == centred
    lr_m = m if lr_batch == "per_device" else 4 * m
    assert steps.learning_rate_fn(c, m, 4 * m, 10)(0) == pytest.approx(0.1 * lr_m / 64)
    assert arm in arms.__doc__
  assert jnp.zeros(()).dtype == jnp.float32
