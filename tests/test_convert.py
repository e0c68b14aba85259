"""mbn_jax.convert: a BN-trained network's variables for FrozenBN, MBN, MABN and BN.

Checked against hand-built variable trees (every expected value written out
here from the module's table), for linen and nnx, and end to end: a
converted FrozenBN network evaluates exactly as the BN network it came from.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import mbn_jax
import mbn_jax.nnx
from mbn_jax.convert import convert_norm_state_nnx, convert_norm_variables

C = 3
MU = np.array([0.5, -1.0, 2.0], np.float32)
VAR = np.array([1.5, 0.25, 4.0], np.float32)
GAMMA = np.array([1.1, 0.9, 1.3], np.float32)
BETA = np.array([0.1, -0.2, 0.3], np.float32)
KERNEL = np.arange(2 * C, dtype=np.float32).reshape(2, C)
HEAD = np.ones((C, 4), np.float32)


def bn_source():
  """A BN network's variables, by hand: dense0 -> norm0 -> head (4 classes)."""
  return {
    "params": {
      "dense0": {"kernel": KERNEL},
      "norm0": {"scale": GAMMA, "bias": BETA},
      "head": {"kernel": HEAD, "bias": np.zeros(4, np.float32)},
    },
    "batch_stats": {"norm0": {"mean": MU, "var": VAR}},
  }


def target(stats: dict, norm_params: bool = True, classes: int = 4):
  params = {
    "dense0": {"kernel": np.zeros((2, C), np.float32)},
    "head": {"kernel": np.zeros((C, classes), np.float32), "bias": np.zeros(classes, np.float32)},
  }
  if norm_params:
    params["norm0"] = {"scale": np.ones(C, np.float32), "bias": np.zeros(C, np.float32)}
  return {"params": params, "batch_stats": {"norm0": stats}}


def test_bn_to_frozen_bn_moves_the_affine_into_the_frozen_statistics():
  tgt = target(
    {"mean": np.zeros(C), "var": np.ones(C), "scale": np.ones(C), "bias": np.zeros(C)},
    norm_params=False,
  )
  out, report = convert_norm_variables(bn_source(), tgt)
  stats = out["batch_stats"]["norm0"]
  for name, expected in (("mean", MU), ("var", VAR), ("scale", GAMMA), ("bias", BETA)):
    np.testing.assert_array_equal(stats[name], expected)
  np.testing.assert_array_equal(out["params"]["dense0"]["kernel"], KERNEL)
  assert "norm0" not in out["params"]
  assert not report.kept and not report.dropped and not report.mismatched


def test_bn_to_mbn_starts_the_training_statistics_at_the_pretrained_ones():
  zeros, ones = np.zeros(C), np.ones(C)
  tgt = target({"mean": zeros, "var": ones, "train_mean": zeros, "train_var": ones})
  out, report = convert_norm_variables(bn_source(), tgt)
  stats = out["batch_stats"]["norm0"]
  for name, expected in (("mean", MU), ("var", VAR), ("train_mean", MU), ("train_var", VAR)):
    np.testing.assert_array_equal(stats[name], expected)
  np.testing.assert_array_equal(out["params"]["norm0"]["scale"], GAMMA)
  assert sorted(report.derived) == ["norm0/train_mean", "norm0/train_var"]


def test_bn_to_mabn_uses_the_second_moment_and_reports_what_restarts():
  k = 4
  tgt = target(
    {
      "running_var": np.ones(C),
      "buffer_x2": np.zeros((k, C)),
      "buffer_gz": np.zeros((k, C)),
      "iters": np.zeros((), np.int32),
    }
  )
  tgt["backward_probes"] = {"norm0": {"buffer_gz": np.zeros((k, C), np.float32)}}
  out, report = convert_norm_variables(bn_source(), tgt)
  stats = out["batch_stats"]["norm0"]
  np.testing.assert_allclose(stats["running_var"], VAR + MU**2)
  np.testing.assert_allclose(stats["buffer_x2"], np.tile(VAR + MU**2, (k, 1)))
  assert int(stats["iters"]) == 0 and not np.any(stats["buffer_gz"])
  assert sorted(report.kept) == ["norm0/buffer_gz", "norm0/iters"]
  assert "backward_probes" in out  # the target's other collections come along


def test_a_head_for_other_classes_is_kept_and_reported():
  tgt = target({"mean": np.zeros(C), "var": np.ones(C)}, classes=5)
  out, report = convert_norm_variables(bn_source(), tgt)
  assert out["params"]["head"]["kernel"].shape == (C, 5) and not np.any(
    out["params"]["head"]["kernel"]
  )
  assert report.mismatched == ["head/kernel", "head/bias"]
  assert sorted(report.dropped) == ["head/bias", "head/kernel"]


def test_a_converted_frozen_bn_network_evaluates_as_the_bn_network():
  class Net(nn.Module):
    norm: str

    @nn.compact
    def __call__(self, x, train=False):
      x = nn.Dense(8, use_bias=False)(x)
      x = mbn_jax.make_norm(self.norm)(name="norm")(x, not train)
      return nn.Dense(3)(nn.relu(x))

  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 5)), jnp.float32)
  bn, frozen = Net("bn"), Net("frozen_bn")
  v = bn.init(jax.random.key(0), x)
  _, upd = bn.apply(v, x * 3 + 1, train=True, mutable=["batch_stats"])  # non-trivial statistics
  v = {**v, **upd}
  out, report = convert_norm_variables(v, jax.eval_shape(frozen.init, jax.random.key(1), x))
  assert not report.kept and not report.dropped
  np.testing.assert_allclose(
    frozen.apply(out, x, train=True, mutable=["batch_stats"])[0], bn.apply(v, x), rtol=1e-6
  )


def test_nnx_pure_dicts_convert_like_linen():
  rngs = nnx.Rngs(0)
  source = mbn_jax.nnx.BatchNorm(C, rngs=rngs)
  source.mean[...], source.var[...] = MU, VAR
  source.scale[...], source.bias[...] = GAMMA, BETA
  target_layer = mbn_jax.nnx.MomentumBatchNorm(C, rngs=rngs, total_epochs=2, steps_per_epoch=1)
  state = nnx.state(target_layer)
  pure, report = convert_norm_state_nnx(
    {"norm": nnx.to_pure_dict(nnx.state(source))}, {"norm": nnx.to_pure_dict(state)}
  )
  nnx.replace_by_pure_dict(state, pure["norm"])
  nnx.update(target_layer, state)
  for name, expected in (("mean", MU), ("train_mean", MU), ("var", VAR), ("train_var", VAR)):
    np.testing.assert_array_equal(getattr(target_layer, name)[...], expected)
  np.testing.assert_array_equal(target_layer.scale[...], GAMMA)
  assert not report.kept and not report.dropped


@pytest.mark.parametrize("norm", ["bn", "mbn", "mabn", "frozen_bn"])
def test_every_norm_of_the_table_converts_from_bn_with_nothing_mismatched(norm):
  model = mbn_jax.create_model("resnet20", num_classes=10, norm="bn")
  x = jnp.ones((2, 32, 32, 3))
  v = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  source = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), v)
  new = mbn_jax.create_model(
    "resnet20", num_classes=10, norm=norm, total_epochs=2, steps_per_epoch=1
  )
  out, report = convert_norm_variables(
    source, jax.eval_shape(functools.partial(new.init, train=False), jax.random.key(0), x)
  )
  assert not report.mismatched and not report.dropped
  assert all(n.endswith(("buffer_gz", "iters")) for n in report.kept)
