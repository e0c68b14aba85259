"""A drop-in for Flax's BatchNorm, in both APIs (docs/models_and_norms.md, "Differences from
flax.linen.BatchNorm / flax.nnx.BatchNorm").

``mbn_jax.norms.BatchNorm`` / ``mbn_jax.nnx.BatchNorm`` — and ``MomentumBatchNorm`` with
λ = 0 (``momentum=0.0`` at the call) and τ = Flax's momentum (``tau=``, or nnx's
``momentum=``) — compute what ``flax.linen.BatchNorm`` / ``flax.nnx.BatchNorm`` compute:

* every nnx front end takes every argument of ``flax.nnx.BatchNorm``: ``promote_dtype`` is
  applied as nnx applies it, ``scale_metadata``/``bias_metadata`` reach the parameters (they
  shard them on a 4-device Mesh under ``nnx.jit``), a newer Flax's argument is accepted;
* complex input: a complex mean, the real variance E[|x − μ|²] and the moving averages
  likewise, against NumPy — one device, masks, four devices under ``shard_map``, deferred
  accumulation; the other norms refuse it (tests/test_reliability_layers.py);
* the situations Flax's own BatchNorm tests put the layer in (masked entries holding NaN,
  complex input, init with an unbound ``axis_name``, nnx against linen over dtypes, fast
  variance and masks), compared with Flax's classes directly;
* the deliberate differences: a feature with no valid entry keeps its statistics (Flax's
  become NaN), non-finite batch statistics never reach the moving averages
  (``guard_nonfinite=False`` is Flax's update).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import mbn_jax
from mbn_jax import nnx as mbn_nnx
from mbn_jax import norms
from mbn_jax.norms import base

KEY = jax.random.key(0)
EPS = 1e-5
KINDS = ["bn", "mbn"]  # BatchNorm, and MomentumBatchNorm with λ = 0 and τ = momentum
NNX_CLASSES = [
  mbn_nnx.BatchNorm,
  mbn_nnx.MomentumBatchNorm,
  mbn_nnx.BatchRenorm,
  mbn_nnx.MovingAverageBatchNorm,
  mbn_nnx.FrozenBatchNorm,
]
# What each nnx front end needs at a training call (MBN: λ; BReN: the step).
TRAIN_CALL = {mbn_nnx.MomentumBatchNorm: {"momentum": 0.0}, mbn_nnx.BatchRenorm: {"step": 0}}


def keep(args, *, dtype=None):  # promote nothing: what flax.linen.BatchNorm does
  del dtype
  return args


def linen_layer(kind, momentum=0.99, **fields):
  """(layer, call kwargs): the linen layer that stands for flax.linen.BatchNorm(momentum)."""
  if kind == "bn":
    return norms.BatchNorm(momentum=momentum, **fields), {}
  return mbn_jax.MomentumBatchNorm(tau=momentum, **fields), {"momentum": 0.0}


def nnx_layer(kind, num_features, momentum=0.99, **fields):
  """(layer, call kwargs): the nnx layer that stands for flax.nnx.BatchNorm(momentum)."""
  if kind == "bn":
    return mbn_nnx.BatchNorm(num_features, momentum=momentum, **fields), {}
  return mbn_nnx.MomentumBatchNorm(num_features, momentum=momentum, **fields), {"momentum": 0.0}


def real(shape, seed, scale=2.0, shift=0.5):
  return (np.random.default_rng(seed).normal(size=shape) * scale + shift).astype(np.float32)


def complex_(shape, seed):
  r = np.random.default_rng(seed)
  z = r.normal(size=shape) * 1.5 + 1j * r.normal(size=shape) * 0.7 + (0.4 - 0.3j)
  return z.astype(np.complex64)


def moments(x, axes, mask=None):
  """NumPy's (mean, biased variance E|x − μ|²) over ``axes``, of the entries ``mask`` keeps."""
  x = np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)
  keep_ = np.broadcast_to(True if mask is None else np.asarray(mask, bool), x.shape)
  n = keep_.sum(axes)
  mean = np.where(keep_, x, 0).sum(axes) / n
  dev = np.abs(x - np.expand_dims(mean, axes)) ** 2
  return mean, np.where(keep_, dev, 0).sum(axes) / n


def normalized(x, mean, var, axes):
  return (x - np.expand_dims(mean, axes)) / np.sqrt(np.expand_dims(var, axes) + EPS)


# ---------------------------------------------------------------- flax.nnx.BatchNorm's arguments


@pytest.mark.parametrize("cls", NNX_CLASSES, ids=lambda c: c.__name__)
def test_every_nnx_front_end_takes_every_argument_of_flax_nnx_batch_norm(cls):
  flax_params = inspect.signature(nnx.BatchNorm.__init__).parameters
  ours = inspect.signature(cls.__init__).parameters
  assert set(flax_params) <= set(ours)
  for name, param in flax_params.items():
    assert ours[name].kind == param.kind, name
  calls = []

  def promote(args, *, dtype=None):
    calls.append((len(args), dtype))
    return args

  layer = cls(
    6,
    use_running_average=False,
    axis=-1,
    momentum=0.9,
    epsilon=1e-3,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    use_bias=True,
    use_scale=True,
    bias_init=nnx.initializers.constant(0.5),
    scale_init=nnx.initializers.constant(2.0),
    axis_name=None,
    axis_index_groups=None,
    use_fast_variance=False,
    promote_dtype=promote,
    rngs=nnx.Rngs(0),
    bias_metadata={"role": "beta"},
    scale_metadata={"role": "gamma"},
  )
  assert (layer.epsilon, layer.use_fast_variance, layer.use_running_average) == (1e-3, False, False)
  # γ/β: params (FrozenBN's fixed ones are statistics), initialized and annotated as asked.
  np.testing.assert_array_equal(layer.scale[...], np.full(6, 2.0, np.float32))
  np.testing.assert_array_equal(layer.bias[...], np.full(6, 0.5, np.float32))
  assert (layer.scale.role, layer.bias.role) == ("gamma", "beta")
  assert isinstance(layer.scale, nnx.BatchStat if cls is mbn_nnx.FrozenBatchNorm else nnx.Param)
  # momentum: the field of that name, τ for MBN, nothing for FrozenBN (its statistics are fixed).
  if cls is mbn_nnx.MomentumBatchNorm:
    assert layer.tau == 0.9
  elif cls is not mbn_nnx.FrozenBatchNorm:
    assert layer.momentum == 0.9
  before = nnx.clone(nnx.state(layer, nnx.BatchStat))
  layer(real((4, 6), 1), **TRAIN_CALL.get(cls, {}))
  assert calls == [(5, jnp.float32)]  # (x, mean, var, scale, bias), dtype=layer.dtype
  after = nnx.state(layer, nnx.BatchStat)
  moved = not all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after)))
  assert moved == (cls is not mbn_nnx.FrozenBatchNorm)


def test_nnx_momentum_of_momentum_batch_norm_is_tau():
  rngs = nnx.Rngs(0)
  assert mbn_nnx.MomentumBatchNorm(3, rngs=rngs).tau is None  # Eq. 12's τ, the default
  assert mbn_nnx.MomentumBatchNorm(3, momentum=0.8, rngs=rngs).tau == 0.8
  assert mbn_nnx.MomentumBatchNorm(3, momentum=0.8, tau=0.8, rngs=rngs).tau == 0.8
  with pytest.raises(ValueError, match="momentum=0.8 and tau=0.7"):
    mbn_nnx.MomentumBatchNorm(3, momentum=0.8, tau=0.7, rngs=rngs)
  with pytest.raises(ValueError, match=r"tau .*must lie in \[0, 1\]"):
    mbn_nnx.MomentumBatchNorm(3, momentum=1.5, rngs=rngs)
  with pytest.raises(TypeError, match="promote_dtype must be a function"):
    mbn_nnx.BatchNorm(3, promote_dtype="float16", rngs=rngs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_default_promote_dtype_is_flax_nnx_batch_norm(kind, dtype):
  """Input and statistics promoted to ``dtype`` as nnx does (linen does not): bit-equal to
  flax.nnx.BatchNorm in training and, with float16/bfloat16 statistics, in evaluation."""
  flax_bn = nnx.BatchNorm(5, momentum=0.9, dtype=dtype, rngs=nnx.Rngs(0))
  ours, call = nnx_layer(kind, 5, momentum=0.9, dtype=dtype, rngs=nnx.Rngs(0))
  for i in range(3):
    x = jnp.asarray(real((8, 5), i))
    want, got = flax_bn(x), ours(x, **call)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  for name in ("mean", "var"):
    np.testing.assert_array_equal(getattr(ours, name)[...], getattr(flax_bn, name)[...])
  flax_bn.eval()
  ours.eval()
  x = jnp.asarray(real((8, 5), 9, scale=30.0))
  np.testing.assert_array_equal(np.asarray(ours(x), np.float32), np.asarray(flax_bn(x), np.float32))


def test_promote_dtype_sees_the_statistics_it_normalizes_with():
  seen = []

  def promote(args, *, dtype=None):
    seen.append([None if a is None else np.asarray(a) for a in args])
    return args

  layer = mbn_nnx.BatchNorm(
    4, momentum=0.5, use_bias=False, promote_dtype=promote, rngs=nnx.Rngs(0)
  )
  layer(real((6, 4), 0))
  layer.eval()
  layer(real((6, 4), 1))
  x, mean, var, scale, bias = seen[-1]
  np.testing.assert_array_equal(mean, layer.mean[...])
  np.testing.assert_array_equal(var, layer.var[...])
  np.testing.assert_array_equal(scale, layer.scale[...])
  assert bias is None and x.shape == (6, 4)


@pytest.mark.parametrize("cls", NNX_CLASSES, ids=lambda c: c.__name__)
def test_scale_and_bias_metadata_shard_the_parameters_on_a_mesh(cls):
  mesh = jax.make_mesh((4,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,))

  @nnx.jit
  def create():
    return cls(
      8,
      scale_metadata={"out_sharding": ("model",)},
      bias_metadata={"out_sharding": (None,)},
      rngs=nnx.Rngs(0),
    )

  @nnx.jit
  def train_step(layer, x):
    return layer(x, False, **TRAIN_CALL.get(cls, {}))

  with jax.set_mesh(mesh):
    layer = create()
    assert layer.scale.out_sharding == ("model",)  # the annotation, on the variable
    assert layer.scale[...].sharding.spec == P("model")
    assert len(layer.scale[...].addressable_shards) == 4
    assert layer.scale[...].addressable_shards[0].data.shape == (2,)
    assert layer.bias[...].sharding.is_fully_replicated
    y = train_step(layer, jnp.asarray(real((4, 8), 3)))
    assert y.shape == (4, 8) and bool(jnp.isfinite(y).all())
    assert layer.scale[...].sharding.spec == P("model")


def test_an_argument_of_a_newer_flax_is_accepted_and_ignored_with_a_warning(monkeypatch):
  newer = dict(base.FLAX_NNX_ARGUMENTS)
  newer["fancy"] = inspect.Parameter("fancy", inspect.Parameter.KEYWORD_ONLY, default=False)
  monkeypatch.setattr(base, "FLAX_NNX_ARGUMENTS", newer)

  class Newer(base.NNXNorm):
    linen = norms.BatchNorm
    body = staticmethod(norms.BatchNormNNX.body)

  assert inspect.signature(Newer.__init__).parameters["fancy"].default is False
  Newer(3, fancy=False, rngs=nnx.Rngs(0))  # Flax's default: silently the same
  with pytest.warns(UserWarning, match="ignores fancy=True"):
    Newer(3, fancy=True, rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="unknown argument"):
    Newer(3, fanciest=True, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- complex input


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fast", [True, False], ids=["fast_variance", "two_pass"])
@pytest.mark.parametrize("masked", [False, True], ids=["all", "mask"])
def test_complex_input_against_numpy_linen(kind, fast, masked):
  x = complex_((6, 3, 4), 0)
  mask = np.random.default_rng(1).random((6, 3, 1)) > 0.3 if masked else None
  layer, call = linen_layer(kind, momentum=0.9, use_fast_variance=fast)
  v = layer.init(KEY, x, False)
  assert v["batch_stats"]["mean"].dtype == np.float32  # complex once trained (as Flax's)
  y, upd = layer.apply(v, x, False, mask=mask, mutable=["batch_stats"], **call)
  mean, var = moments(x, (0, 1), mask)
  assert y.dtype == np.complex64
  np.testing.assert_allclose(y, normalized(x, mean, var, (0, 1)), rtol=2e-5, atol=2e-5)
  stats = upd["batch_stats"]
  assert stats["mean"].dtype == np.complex64 and stats["var"].dtype == np.float32
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-5)
  # Inference normalizes with the complex running mean and the real running variance.
  y_inf = layer.apply({**v, **upd}, x, True)
  want = normalized(x, 0.1 * mean, 0.9 + 0.1 * var, (0, 1))
  np.testing.assert_allclose(y_inf, want, rtol=2e-5, atol=2e-5)


def test_complex_input_through_momentum_batch_norm_equations():
  """λ > 0: the training statistics (Eq. 8) are complex mean and real variance too."""
  xs = [complex_((8, 3), s) for s in (2, 3)]
  layer = mbn_jax.MomentumBatchNorm(tau=0.75)
  v = layer.init(KEY, xs[0], False)
  t_mean, t_var = np.zeros(3), np.ones(3)
  r_mean, r_var = np.zeros(3), np.ones(3)
  for x in xs:
    y, upd = layer.apply(v, x, False, momentum=0.6, mutable=["batch_stats"])
    v = {**v, **upd}
    mean, var = moments(x, (0,))
    t_mean, t_var = 0.6 * t_mean + 0.4 * mean, 0.6 * t_var + 0.4 * var
    r_mean, r_var = 0.75 * r_mean + 0.25 * mean, 0.75 * r_var + 0.25 * var
    np.testing.assert_allclose(y, normalized(x, t_mean, t_var, (0,)), rtol=2e-5, atol=2e-5)
  stats = v["batch_stats"]
  for name, want in [("train_mean", t_mean), ("train_var", t_var), ("mean", r_mean)]:
    np.testing.assert_allclose(stats[name], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["var"], r_var, rtol=1e-5)
  assert stats["train_var"].dtype == stats["var"].dtype == np.float32


@pytest.mark.parametrize("kind", KINDS)
def test_complex_input_nnx_under_jit(kind):
  layer, call = nnx_layer(kind, 4, momentum=0.9, rngs=nnx.Rngs(0))
  lin, lcall = linen_layer(kind, momentum=0.9)
  xs = [complex_((5, 2, 4), s) for s in range(3)]
  v = lin.init(KEY, xs[0], False)

  @nnx.jit
  def step(layer, x):
    return layer(x, **call)

  for x in xs:
    y = step(layer, x)
    y_lin, upd = lin.apply(v, x, False, mutable=["batch_stats"], **lcall)
    v = {**v, **upd}
    np.testing.assert_allclose(y, y_lin, rtol=1e-6, atol=1e-6)  # jit fuses: float rounding
  # The running mean stays complex (flax.nnx.BatchNorm would drop its imaginary part).
  assert layer.mean[...].dtype == np.complex64 and layer.var[...].dtype == np.float32
  np.testing.assert_allclose(layer.mean[...], v["batch_stats"]["mean"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(layer.var[...], v["batch_stats"]["var"], rtol=1e-6)
  layer.eval()
  np.testing.assert_allclose(layer(xs[0]), lin.apply(v, xs[0], True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fast", [True, False], ids=["fast_variance", "two_pass"])
def test_complex_statistics_across_devices_are_those_of_all_valid_entries(kind, fast):
  mesh = Mesh(np.array(jax.devices()[:4]), ("batch",))
  x = complex_((8, 5, 3), 4)  # 2 examples per device
  mask = np.random.default_rng(5).random((8, 5, 1)) > 0.4  # unequal counts per device
  layer, call = linen_layer(kind, momentum=0.8, axis_name="batch", use_fast_variance=fast)
  v = layer.init(KEY, x[:2], False)

  def train(v, x, m):
    return layer.apply(v, x, False, mask=m, mutable=["batch_stats"], **call)

  y, upd = jax.shard_map(
    train, mesh=mesh, in_specs=(P(), P("batch"), P("batch")), out_specs=(P("batch"), P())
  )(v, x, mask)
  mean, var = moments(x, (0, 1), mask)
  np.testing.assert_allclose(y, normalized(x, mean, var, (0, 1)), rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.2 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.8 + 0.2 * var, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_complex_deferred_statistics_pool_the_micro_batches(kind):
  layer, call = linen_layer(kind, momentum=0.8, accumulation_steps=2)
  xs = [complex_((4, 3), s) for s in (6, 7)]
  v = layer.init(KEY, xs[0], False)
  for x in xs:
    _, upd = layer.apply(v, x, False, mutable=["batch_stats"], **call)
    v = {**v, **upd}
  mean, var = moments(np.concatenate(xs), (0,))
  np.testing.assert_allclose(v["batch_stats"]["mean"], 0.2 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v["batch_stats"]["var"], 0.8 + 0.2 * var, rtol=1e-5)


# ---------------------------------------------------------------- Flax's BatchNorm situations


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
@pytest.mark.parametrize("masked", [False, True], ids=["all", "nan_outside_mask"])
def test_linen_matches_flax_linen_batch_norm(kind, dtype, masked):
  """Masked-out positions hold NaN: they count for nothing; output, statistics and their
  dtypes are flax.linen.BatchNorm's (complex input included)."""
  x = real((4, 3, 2), 0) if dtype == np.float32 else complex_((4, 3, 2), 0)
  mask = None
  if masked:
    mask = np.random.default_rng(2).random((4, 3, 1)) > 0.5
    x = np.where(mask, x, np.nan).astype(dtype)
  dtype_field = {} if dtype == np.float32 else {"dtype": jnp.complex64}
  flax_bn = nn.BatchNorm(momentum=0.9, use_running_average=False, **dtype_field)
  ours, call = linen_layer(kind, momentum=0.9, use_running_average=False, **dtype_field)
  v_f = flax_bn.init(KEY, x, mask=mask)
  v_o = ours.init(KEY, x, mask=mask)
  y_f, u_f = flax_bn.apply(v_f, x, mask=mask, mutable=["batch_stats"])
  y_o, u_o = ours.apply(v_o, x, mask=mask, mutable=["batch_stats"], **call)
  assert y_o.dtype == y_f.dtype
  np.testing.assert_allclose(y_o, y_f, rtol=1e-6, atol=1e-6)  # NaN where Flax has NaN
  valid = np.broadcast_to(True if mask is None else mask, x.shape)
  np.testing.assert_allclose(np.mean(y_o, (0, 1), where=valid), 0, atol=1e-4)
  np.testing.assert_allclose(np.var(y_o, (0, 1), where=valid), 1, rtol=1e-4)
  for name in ("mean", "var"):
    assert u_o["batch_stats"][name].dtype == u_f["batch_stats"][name].dtype
    np.testing.assert_allclose(u_o["batch_stats"][name], u_f["batch_stats"][name], rtol=1e-6)
  mean, var = moments(x, (0, 1), mask)
  np.testing.assert_allclose(u_o["batch_stats"]["mean"], 0.1 * mean, atol=1e-6)
  np.testing.assert_allclose(u_o["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_init_with_an_axis_name_that_no_map_binds(kind):
  """As flax.linen.BatchNorm: ``init`` synchronizes nothing, so axis_name need not exist."""

  class Twice(nn.Module):
    @nn.compact
    def __call__(self, x):
      layer, _ = linen_layer(kind, use_running_average=False, axis_name="batch", name="norm")
      return layer(x), layer(x)

  (y1, y2), variables = Twice().init_with_output(KEY, real((2, 4), 1))
  np.testing.assert_allclose(y1, y2, rtol=5e-3)
  assert set(variables["batch_stats"]["norm"]) >= {"mean", "var"}


PARTIAL_MASK = np.array(
  [[True, False, True, True, False]] * 5 + [[True, True, False, True, True]] * 5
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
  "dtype, param_dtype",
  [(np.float32, np.float32), (np.float32, np.float16), (np.float16, np.float32)]
  + [(np.float16, np.float16)],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast_variance", "two_pass"])
@pytest.mark.parametrize("mask", [None, PARTIAL_MASK], ids=["no_mask", "mask"])
def test_nnx_is_flax_linen_batch_norm_without_promotion(kind, dtype, param_dtype, fast, mask):
  """With ``promote_dtype`` a no-op, the nnx layer is flax.linen.BatchNorm bit for bit."""
  x = jnp.asarray(real((10, 5), 0))
  fields = dict(dtype=dtype, param_dtype=param_dtype, use_fast_variance=fast)
  flax_bn = nn.BatchNorm(use_running_average=False, **fields)
  ours, call = nnx_layer(kind, 5, promote_dtype=keep, rngs=nnx.Rngs(0), **fields)
  v = flax_bn.init(KEY, x)
  for i in range(2):
    xi = x * (1 + i) - i
    y_f, upd = flax_bn.apply(v, xi, mask=mask, mutable=["batch_stats"])
    v = {**v, **upd}
    y_o = ours(xi, mask=mask, **call)
    assert y_o.dtype == y_f.dtype
    np.testing.assert_array_equal(y_o, y_f)
  np.testing.assert_array_equal(ours.scale[...], v["params"]["scale"])
  np.testing.assert_array_equal(ours.bias[...], v["params"]["bias"])
  np.testing.assert_array_equal(ours.mean[...], v["batch_stats"]["mean"])
  np.testing.assert_array_equal(ours.var[...], v["batch_stats"]["var"])


@pytest.mark.parametrize("kind", KINDS)
def test_momentum_batch_norm_at_lambda_0_and_tau_is_flax_batch_norm(kind):
  """Item 4 of issue 35: MBN with λ = 0 and τ = momentum is Flax's BatchNorm(momentum) in
  both APIs, over training steps and in evaluation (``kind="bn"``: the same for BN)."""
  xs = [jnp.asarray(real((6, 2, 3), s)) for s in range(4)]
  flax_lin = nn.BatchNorm(momentum=0.7)
  ours_lin, call = linen_layer(kind, momentum=0.7)
  flax_nnx = nnx.BatchNorm(3, momentum=0.7, rngs=nnx.Rngs(0))
  ours_nnx, _ = nnx_layer(kind, 3, momentum=0.7, rngs=nnx.Rngs(0))
  v_f = flax_lin.init(KEY, xs[0], False)
  v_o = ours_lin.init(KEY, xs[0], False)
  for x in xs:
    y_f, u_f = flax_lin.apply(v_f, x, False, mutable=["batch_stats"])
    y_o, u_o = ours_lin.apply(v_o, x, False, mutable=["batch_stats"], **call)
    v_f, v_o = {**v_f, **u_f}, {**v_o, **u_o}
    np.testing.assert_array_equal(y_o, y_f)
    np.testing.assert_array_equal(ours_nnx(x, **call), flax_nnx(x))
  for name in ("mean", "var"):
    np.testing.assert_array_equal(v_o["batch_stats"][name], v_f["batch_stats"][name])
    np.testing.assert_array_equal(getattr(ours_nnx, name)[...], getattr(flax_nnx, name)[...])
  np.testing.assert_array_equal(ours_lin.apply(v_o, xs[0], True), flax_lin.apply(v_f, xs[0], True))
  ours_nnx.eval()
  flax_nnx.eval()
  np.testing.assert_array_equal(ours_nnx(xs[0]), flax_nnx(xs[0]))


# ---------------------------------------------------------------- deliberate differences


@pytest.mark.parametrize("kind", KINDS)
def test_a_feature_with_no_valid_entry_keeps_its_statistics(kind):
  """Flax's statistics of such a feature are NaN (and poison its moving averages for ever);
  ours keep the feature's statistics, its output stays finite, and the other features are
  Flax's exactly."""
  x = jnp.asarray(real((10, 5), 0))
  mask = np.array([True, False, True, False, True])  # features 1 and 3: no valid entry
  flax_bn = nnx.BatchNorm(5, momentum=0.9, rngs=nnx.Rngs(0))
  ours, call = nnx_layer(kind, 5, momentum=0.9, rngs=nnx.Rngs(0))
  y_f = flax_bn(x, mask=mask)
  y_o = ours(x, mask=mask, **call)
  kept = np.array([0, 2, 4])
  np.testing.assert_array_equal(y_o[:, kept], y_f[:, kept])
  assert bool(jnp.isfinite(y_o).all())
  np.testing.assert_array_equal(ours.mean[...][kept], flax_bn.mean[...][kept])
  np.testing.assert_array_equal(ours.mean[...][np.array([1, 3])], [0.0, 0.0])
  np.testing.assert_array_equal(ours.var[...][np.array([1, 3])], [1.0, 1.0])
  # The next batch with entries updates them as usual.
  ours(x, **call)
  want = 0.9 * 0.0 + 0.1 * np.mean(np.asarray(x[:, 1], np.float64))
  np.testing.assert_allclose(ours.mean[...][1], want, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_batch_statistics_never_reach_the_moving_averages(kind):
  x = real((6, 3), 0)
  bad = x.copy()
  bad[2, 0] = np.inf
  flax_bn = nn.BatchNorm(momentum=0.9, use_running_average=False)
  guarded, call = linen_layer(kind, momentum=0.9, use_running_average=False)
  flax_like, _ = linen_layer(kind, momentum=0.9, use_running_average=False, guard_nonfinite=False)
  v_f, v_g, v_u = (m.init(KEY, x) for m in (flax_bn, guarded, flax_like))
  for batch in (bad, x):
    v_f = {**v_f, **flax_bn.apply(v_f, batch, mutable=["batch_stats"])[1]}
    v_g = {**v_g, **guarded.apply(v_g, batch, mutable=["batch_stats"], **call)[1]}
    v_u = {**v_u, **flax_like.apply(v_u, batch, mutable=["batch_stats"], **call)[1]}
  for name in ("mean", "var"):
    # guard_nonfinite=False is Flax's update: feature 0 non-finite for ever, the others equal.
    np.testing.assert_array_equal(v_u["batch_stats"][name], v_f["batch_stats"][name])
    assert np.isfinite(v_g["batch_stats"][name]).all()
    np.testing.assert_array_equal(v_g["batch_stats"][name][1:], v_f["batch_stats"][name][1:])
  assert not np.isfinite(v_u["batch_stats"]["var"][0])
