"""The layers refuse what they cannot normalize correctly (docs/training.md, "Failure behaviour").

Every case goes through the public API (``make_norm``, the linen classes,
``mbn_jax.nnx``) and asserts the exception type and that its message names
the argument and what to change. The float16 case is checked against NumPy's
float64 statistics of the same values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mbn_jax
from mbn_jax import nnx as mbn_nnx
from mbn_jax import norms

KEY = jax.random.key(0)
X = np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype(np.float32)

# Each norm built with the options the training program gives (a step schedule for MBN).
BUILD = {
  "bn": lambda **kw: norms.make_norm("bn", **kw)(),
  "mbn": lambda **kw: norms.make_norm("mbn", total_epochs=3, steps_per_epoch=2, **kw)(),
  "brn": lambda **kw: norms.make_norm("brn", warmup_steps=4, **kw)(),
  "gn": lambda **kw: norms.make_norm("gn", **kw)(),
  "ln": lambda **kw: norms.make_norm("ln", **kw)(),
  "in": lambda **kw: norms.make_norm("in", **kw)(),
}


def _train(layer, x, **call):
  variables = layer.init(KEY, jnp.ones_like(jnp.real(jnp.asarray(x))), False, step=0)
  return layer.apply(variables, x, False, mutable=["batch_stats"], **call)


@pytest.mark.parametrize("epsilon", [float("nan"), -1e-5, 0.0, float("inf")])
@pytest.mark.parametrize("name", sorted(BUILD))
def test_nan_or_non_positive_epsilon_is_refused_when_the_norm_is_built(name, epsilon):
  with pytest.raises(ValueError, match=r"epsilon must be a positive finite float.*got"):
    BUILD[name](epsilon=epsilon)


@pytest.mark.parametrize(
  "layer",
  [norms.BatchNorm, mbn_jax.MomentumBatchNorm, norms.BatchRenorm, norms.GroupNorm, norms.LayerNorm]
  + [norms.InstanceNorm],
)
def test_a_layer_built_directly_with_a_bad_epsilon_refuses_at_its_first_call(layer):
  with pytest.raises(ValueError, match="epsilon must be a positive finite float"):
    layer(epsilon=float("nan")).init(KEY, X, False, step=0)


# BN and MBN normalize complex input as flax.linen.BatchNorm does (tests/test_flax_parity.py).
@pytest.mark.parametrize("name", sorted(set(BUILD) - {"bn", "mbn"}) + ["mabn", "frozen_bn"])
def test_complex_input_is_refused(name):
  layer = BUILD[name]() if name in BUILD else norms.make_norm(name)()
  with pytest.raises(TypeError, match=r"complex input \(dtype complex64\).*real and imaginary"):
    _train(layer, X.astype(np.complex64), step=1)


def test_complex_input_is_refused_by_the_nnx_layers():
  for cls in (mbn_nnx.BatchRenorm, mbn_nnx.MovingAverageBatchNorm, mbn_nnx.FrozenBatchNorm):
    with pytest.raises(TypeError, match=f"{cls.__name__} got a complex input"):
      cls(8, rngs=nnx.Rngs(0))(X.astype(np.complex64), False)


@pytest.mark.parametrize(
  "name, shape",
  [("gn", (4, 8)), ("in", (4, 8)), ("in", (4, 1, 8)), ("ln", (4,)), ("ln", (4, 1))],
)
def test_per_example_norms_refuse_an_input_with_one_value_per_statistic(name, shape):
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  layer = BUILD[name]()
  with pytest.raises(ValueError, match=r"computed over 1 value\(s\) of one example") as e:
    layer.init(KEY, x, False)
  assert str(shape) in str(e.value) and "give it" in str(e.value)


@pytest.mark.parametrize("name, shape", [("gn", (4, 64)), ("ln", (4, 8)), ("in", (4, 2, 8))])
def test_per_example_norms_still_take_inputs_with_several_values_per_statistic(name, shape):
  x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
  layer = BUILD[name]()
  y = layer.apply(layer.init(KEY, x, False), x, False)
  # Normalized: not all zeros (what one value per statistic would give), unit scale.
  assert float(jnp.std(y)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
  "step, error, needle",
  [
    ("3", TypeError, r"step must be an integer scalar .* got '3' \(str\)"),
    (3.0, TypeError, r"step must be an integer scalar .* got 3\.0 \(float\)"),
    (np.float32(3), TypeError, r"step must be an integer scalar .* of dtype float32"),
    (True, TypeError, r"step must be an integer scalar .* got True \(bool\)"),
    ([1, 2], TypeError, r"step must be an integer scalar .* \(list\)"),
    (np.arange(2), ValueError, r"step must be a scalar .* shape \(2,\)"),
    (np.int64(2**40), ValueError, r"step=1099511627776 does not fit in int32 .* wrap to 0"),
    (2**31, ValueError, r"step=2147483648 does not fit in int32 .* wrap to -2147483648"),
  ],
)
@pytest.mark.parametrize("name", ["mbn", "brn"])
def test_a_step_that_is_not_an_int32_scalar_is_refused_naming_step(name, step, error, needle):
  with pytest.raises(error, match=needle):
    _train(BUILD[name](), X, step=step)


@pytest.mark.parametrize("name", ["mbn", "brn"])
def test_a_traced_float_step_is_refused_and_an_int32_step_is_taken(name):
  layer = BUILD[name]()
  variables = layer.init(KEY, X, False, step=0)
  run = jax.jit(lambda s: layer.apply(variables, X, False, step=s, mutable=["batch_stats"])[0])
  with pytest.raises(TypeError, match="step must be an integer scalar .* dtype float32"):
    run(jnp.float32(3))
  big = np.int64(2**31 - 1)  # the largest step that fits: λ of the last epoch, no wrap
  np.testing.assert_allclose(run(jnp.int32(big)), _train(layer, X, step=int(big))[0], atol=1e-6)


def test_nnx_refuses_a_step_that_would_wrap():
  layer = mbn_nnx.MomentumBatchNorm(8, total_epochs=3, steps_per_epoch=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="step=1099511627776 does not fit in int32"):
    layer(X, step=np.int64(2**40))


def test_wrapping_step_would_have_given_lambda_zero():
  """Why the wrap matters: int64(2**40) → int32 0 is epoch 1, λ = 0, not the last epoch's λ."""
  schedule = mbn_jax.momentum_schedule(
    batch_size=4, total_epochs=3, steps_per_epoch=2, ideal_batch_size=32
  )
  assert float(schedule(jnp.asarray(np.int64(2**40)))) == 0.0  # JAX wraps silently
  assert float(schedule(2**31 - 1)) == pytest.approx(1 - 4 / 32)


@pytest.mark.parametrize("name", ["bn", "mbn", "brn"])
def test_float16_statistics_that_overflow_float16_are_computed_in_float32(name):
  """force_float32_reductions=False with float16 input: squares above 65504 must not freeze.

  Before: σ²_B = inf in float16, the guard kept the initial statistics and the
  output was not normalized. Now: float16 is reduced in float32 (documented).
  """
  rng = np.random.default_rng(3)
  x16 = (rng.normal(size=(16, 4)) * 1000 + 500).astype(np.float16)
  x64 = x16.astype(np.float64)
  layer = {
    "bn": lambda: norms.BatchNorm(momentum=0.9, force_float32_reductions=False),
    "mbn": lambda: mbn_jax.MomentumBatchNorm(force_float32_reductions=False),
    # r_max = 1, d_max = 0: BReN's output is BatchNorm's, so it must be normalized too
    "brn": lambda: norms.BatchRenorm(
      momentum=0.9, r_max=1.0, d_max=0.0, force_float32_reductions=False
    ),
  }[name]()
  variables = layer.init(KEY, x16, False)
  call = {"momentum": 0.0} if name == "mbn" else {}
  y, updates = layer.apply(variables, x16, False, mutable=["batch_stats"], **call)
  y = np.asarray(y, np.float64)
  np.testing.assert_allclose(y.mean(0), 0, atol=2e-3)
  np.testing.assert_allclose(y.std(0), 1, atol=2e-3)
  stats = updates["batch_stats"]
  momentum = 0.9 if name in ("bn", "brn") else 0.85 ** (16 / 32)
  want_var = momentum * 1.0 + (1 - momentum) * x64.var(0)
  np.testing.assert_allclose(np.asarray(stats["var"], np.float64), want_var, rtol=1e-3)
  assert np.all(np.asarray(stats["var"]) > 1e4)  # moved: not frozen at the initial 1


def test_a_uint32_step_beyond_int32_does_not_wrap_and_is_taken():
  """JAX keeps uint32 as it is: 3e9 is a valid step (the last epoch's λ), not a wrap."""
  layer = BUILD["mbn"]()
  step = np.uint32(3_000_000_000)
  y, _ = _train(layer, X, step=step)
  y_last, _ = _train(layer, X, step=5)  # epoch 3 of 3: the same λ
  np.testing.assert_array_equal(y, y_last)
