"""Norms declare what they can do; the tools ask the class. A toy norm from outside proves it.

The toy norm below is defined here, outside the package, the way a user adds a
norm: a pure body, a linen declaration (fields, Capabilities, statistics_for,
check_fields) and an nnx front end from mbn_jax.norms.base. Registering it
makes make_norm, the model factory, precise statistics, the statistics
capture and the training program handle it with no other change. The
expectations are NumPy computations of the same arithmetic and Flax's own
layers.
"""

import dataclasses
import inspect
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from flax.linen import initializers

import mbn_jax
from mbn_jax import analysis, functional, norms
from mbn_jax import nnx as mbn_nnx
from mbn_jax.norms.base import (
  NNXNorm,
  declared_fields,
  linen_front_end,
  nnx_arguments,
  nnx_front_end,
)


def mean_only_body(
  cfg, x, stats, scale, bias, *, use_running_average, mask=None, initializing=False
):
  """Mean-only batch normalization: y = γ (x − μ_B) + β; running mean and var as BN's."""
  feature_axes, reduction_axes = functional.feature_and_reduction_axes(x.ndim, cfg.axis)
  shape = [1] * x.ndim
  for a in feature_axes:
    shape[a] = x.shape[a]
  if use_running_average:
    mean = stats["mean"]
  else:
    batch = functional.layer_batch_moments(cfg, x, reduction_axes, mask, initializing)
    mean = batch.mean
  y = x - jnp.reshape(mean, shape)
  if scale is not None:
    y = y * jnp.reshape(scale, shape)
  if bias is not None:
    y = y + jnp.reshape(bias, shape)
  if use_running_average or initializing:
    return y, stats
  ok = functional.updatable(batch)
  new_mean, new_var = functional.guarded_moving_average(
    batch, stats["mean"], stats["var"], cfg.momentum, ok
  )
  return y, {"mean": new_mean, "var": new_var}


class MeanOnlyNorm(nn.Module):
  capabilities: ClassVar[norms.Capabilities] = norms.Capabilities(
    normalizer="batch",
    running_statistics=True,
    batch_statistics=True,
    precise_statistics=True,
    synchronizes=True,
  )
  use_running_average: bool | None = None
  axis: int = -1
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = initializers.zeros
  scale_init: Any = initializers.ones
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True

  @classmethod
  def statistics_for(cls, cfg):
    return {"mean": jnp.zeros, "var": jnp.ones}

  @classmethod
  def check_fields(cls, cfg):
    if not 0 <= cfg.momentum < 1:
      raise ValueError(f"momentum must lie in [0, 1), got {cfg.momentum}.")

  @nn.compact
  def __call__(self, x, use_running_average=None, *, step=None, mask=None):
    del step
    ura = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    return linen_front_end(self, mean_only_body, x, ura, self.statistics_for(self), mask=mask)


class MeanOnlyNormNNX(NNXNorm):
  linen = MeanOnlyNorm
  body = staticmethod(mean_only_body)

  def __call__(self, x, use_running_average=None, *, step=None, mask=None):
    del step
    return nnx_front_end(self, x, use_running_average, mask=mask)


@pytest.fixture
def toy():
  norms.register_norm("meanonly", MeanOnlyNorm)
  yield "meanonly"
  norms.NORM_CLASSES.pop("meanonly")


def _x(n=8, c=3, seed=0):
  return np.random.default_rng(seed).normal(1.5, 2.0, size=(n, 4, 4, c)).astype(np.float32)


def test_every_norm_of_the_package_declares_its_capabilities():
  for name, cls in norms.NORM_CLASSES.items():
    caps = norms.capabilities_of(cls)
    assert caps is cls.capabilities, name
    # What the statistics look like follows from what the class says it keeps.
    x = jnp.ones((2, 4, 4, 32))
    variables = norms.make_norm(name, total_epochs=2, steps_per_epoch=3)().init(
      jax.random.key(0), x, False, step=0
    )
    assert bool(variables.get("batch_stats")) == caps.running_statistics, name
    assert caps.training_statistics == ("train_mean" in variables.get("batch_stats", {})), name
  # Flax's own layers are known too; other modules can do nothing.
  assert norms.capabilities_of(nn.BatchNorm(momentum=0.9)).precise_statistics
  assert norms.capabilities_of(nnx.BatchNorm).running_statistics
  assert norms.capabilities_of(nn.Dense) == norms.Capabilities()
  assert norms.capabilities_of(mbn_nnx.MomentumBatchNorm) is mbn_jax.MomentumBatchNorm.capabilities


@pytest.mark.parametrize(
  "nnx_cls", [mbn_nnx.MomentumBatchNorm, mbn_nnx.BatchNorm, mbn_nnx.BatchRenorm, MeanOnlyNormNNX]
)
def test_nnx_fields_are_the_linen_declaration(nnx_cls):
  """Same names and defaults (only use_running_average defaults to False, as nnx.BatchNorm),
  then flax.nnx.BatchNorm's other arguments (tests/test_flax_parity.py checks them)."""
  fields = declared_fields(nnx_cls.linen)
  params = inspect.signature(nnx_cls.__init__).parameters
  extra = [n for n in nnx_arguments(nnx_cls.linen) if not n.endswith("_metadata")]
  metadata = ["bias_metadata", "scale_metadata"]
  assert list(params) == ["self", "num_features", *fields, *extra, "rngs", *metadata]
  for name, default in fields.items():
    want = False if name == "use_running_average" else default
    assert params[name].default == want, name
  layer = nnx_cls(3, rngs=nnx.Rngs(0))
  for name, default in fields.items():
    assert getattr(layer, name) == (False if name == "use_running_average" else default), name
  with pytest.raises(TypeError, match="unknown argument"):
    nnx_cls(3, rngs=nnx.Rngs(0), no_such_field=1)


def test_nnx_batch_norm_matches_flax_nnx_batch_norm():
  x = _x()
  ours = mbn_nnx.BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
  flax_bn = nnx.BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
  for _ in range(3):
    np.testing.assert_allclose(ours(x), flax_bn(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ours.mean[...], flax_bn.mean[...], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(ours.var[...], flax_bn.var[...], rtol=1e-6)
  ours.eval()
  flax_bn.eval()
  np.testing.assert_allclose(ours(x), flax_bn(x), rtol=1e-6, atol=1e-6)


def test_a_toy_norm_from_outside_the_package(toy):
  x = _x()
  # make_norm builds it, with its class's checks.
  layer = norms.make_norm(toy, momentum=0.5, tau0=0.85)()  # options it lacks are ignored
  variables = layer.init(jax.random.key(0), x, False)
  y, upd = layer.apply(variables, x, False, mutable=["batch_stats"])
  np.testing.assert_allclose(y, x - x.mean((0, 1, 2)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    upd["batch_stats"]["mean"], 0.5 * 0 + 0.5 * x.mean((0, 1, 2)), rtol=1e-5
  )
  with pytest.raises(ValueError, match="momentum must lie"):
    norms.make_norm(toy, momentum=1.5)
  # nnx front end: the same numbers.
  nnx_layer = MeanOnlyNormNNX(3, momentum=0.5, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(nnx_layer(x), y, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(nnx_layer.mean[...], upd["batch_stats"]["mean"], rtol=1e-6)

  # The model factory of the training program takes it by name.
  from train import models

  assert toy in models.norm_names()
  model = models.create_model("tiny_cnn", num_classes=3, norm=toy)
  v = model.init(jax.random.key(0), x, train=False)
  assert set(v["batch_stats"]) == {"norm0", "norm1"}

  # Precise statistics find it by its capabilities: the population mean/var of its input.
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return norms.make_norm(toy)()(x, not train)

  net = Net()
  nv = net.init(jax.random.key(0), x, False)
  batches = [_x(seed=s) for s in range(3)]
  got = mbn_jax.precise_batch_stats(
    lambda v, b: net.apply(v, b, True, mutable=["batch_stats"]), nv, batches
  )
  allx = np.concatenate(batches).astype(np.float64)
  np.testing.assert_allclose(got["MeanOnlyNorm_0"]["mean"], allx.mean((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(got["MeanOnlyNorm_0"]["var"], allx.var((0, 1, 2)), rtol=1e-4)
  # ... in nnx too.
  nnx_net = MeanOnlyNormNNX(3, rngs=nnx.Rngs(0))
  mbn_jax.precise_batch_stats_nnx(lambda m, b: m(b), nnx_net, batches)
  np.testing.assert_allclose(nnx_net.mean[...], allx.mean((0, 1, 2)), rtol=1e-5)

  # The statistics capture records it (batch_statistics=True).
  with analysis.capture_norm_statistics():
    _, sown = net.apply(nv, x, True, mutable=["batch_stats", analysis.NORM_STATS])
  stats = analysis.collect(sown[analysis.NORM_STATS])
  np.testing.assert_allclose(stats["MeanOnlyNorm_0"]["batch_mean"], x.mean((0, 1, 2)), rtol=1e-5)


@pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 devices")
def test_the_training_program_runs_a_toy_norm(toy, tmp_path):
  from tests.test_train import tiny_config
  from train import train as train_lib

  config = tiny_config(norm=toy, num_epochs=1, precise_stats_batches=2, precise_stats_batch_size=8)
  summary = train_lib.train_and_evaluate(config, str(tmp_path / "toy"))
  assert summary["status"] == "completed"
  # Its capabilities decided: precise statistics measured (it keeps running ones), no λ logged.
  assert summary["final_eval_accuracy_precise"] is not None
  import json

  rec = json.loads(open(tmp_path / "toy" / "metrics.jsonl").readline())
  assert rec["lambda"] is None


def test_capabilities_reject_an_unknown_normalizer():
  with pytest.raises(ValueError, match="normalizer must be one of"):
    norms.Capabilities(normalizer="sometimes")
  assert dataclasses.is_dataclass(norms.Capabilities)
