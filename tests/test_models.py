"""Tests for mbn_jax.models: published parameter counts, shapes, norm wiring,
and one jitted training step per (network, norm) in a reduced matrix.

Parameter counts (params only, BatchNorm, 10 classes) are checked against
published figures:

* CIFAR variants (3×3 stem, no max-pool), the ``kuangliu/pytorch-cifar``
  README table: ResNet18 11,173,962; ResNet34 21,282,122; ResNet50
  23,520,842; VGG11 9,231,114; VGG16 14,728,266 (single Linear(512, 10)).
* ResNet20 (He et al. 2016, "0.27M"): 272,474 with option-B shortcuts (1×1
  conv + BN where the shape changes), as listed by ``osmr/imgclsmob`` for
  resnet20_cifar10. (Option A would give 269,722.)
* Mini-ImageNet variants (7×7/2 stem + 3×3/2 max-pool = torchvision's
  ImageNet ResNets): torchvision's published counts for 1000 classes,
  11,689,512 / 21,797,672 / 25,557,032, with the 1000-way head replaced by a
  10-way one.

Counting and shapes use ``jax.eval_shape`` (no compilation).

Training-step matrix (each jitted step compiles for seconds on CPU, so the
matrix is reduced, not exhaustive): models never branch on the norm (every
norm is built by the same factory and called the same way), so the norm x
architecture interaction is fully exercised by running **every norm on
ResNet20** (stem, basic blocks, projection shortcuts, head) **and on VGG11**
(conv-bias + norm stacks, max-pools). Each remaining network runs one step
with one norm, rotating over the stateful norms: ResNet18/brn, ResNet34/bn,
ResNet50/mbn (the only Bottleneck network), VGG16/gn. The steps compile with
XLA's backend optimizations off (compile time, not what is tested, dominates).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from mbn_jax import norms
from mbn_jax.models import MODEL_NAMES, create_model, resnet, vgg
from mbn_jax.norms import capabilities_of, norm_class
from train import steps as train_steps

NORM_OPTIONS = dict(
  axis_name=None,
  total_epochs=2,
  steps_per_epoch=3,
  ideal_batch_size=32,
  tau0=0.85,
  r_max=1.5,
  d_max=0.5,
  warmup_steps=10,
  bn_momentum=0.9,
)


def _count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _abstract_variables(model, size, batch=2):
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x), x


def _torchvision_head_swap(count_1000, features):
  return count_1000 - (features + 1) * 1000 + (features + 1) * 10


PUBLISHED = [
  ("resnet18", "cifar", 11_173_962),
  ("resnet34", "cifar", 21_282_122),
  ("resnet50", "cifar", 23_520_842),
  ("resnet20", "cifar", 272_474),
  ("vgg11", "cifar", 9_231_114),
  ("vgg16", "cifar", 14_728_266),
  ("resnet18", "mini_imagenet", _torchvision_head_swap(11_689_512, 512)),
  ("resnet34", "mini_imagenet", _torchvision_head_swap(21_797_672, 512)),
  ("resnet50", "mini_imagenet", _torchvision_head_swap(25_557_032, 2048)),
]


@pytest.mark.parametrize("name, variant, expected", PUBLISHED)
def test_parameter_counts_match_published(name, variant, expected):
  model = create_model(name, num_classes=10, norm="bn", input_variant=variant)
  variables, _ = _abstract_variables(model, 32 if variant == "cifar" else 84)
  assert _count(variables["params"]) == expected


@pytest.mark.parametrize(
  "norm, delta", [("mbn", 0), ("brn", 0), ("gn", 0), ("ln", 0), ("in", 0), ("none", -9_600)]
)
def test_resnet18_parameters_per_norm(norm, delta):
  """Every affine norm has BN's 2 parameters per channel; 'none' drops them:
  ResNet18 normalizes 4,800 channels (64 + 4·64 + 4·128 + 128 + 5·256 +
  5·512, the shortcut norms included)."""
  model = create_model("resnet18", num_classes=10, norm=norm, **NORM_OPTIONS)
  variables, _ = _abstract_variables(model, 32)
  assert _count(variables["params"]) == 11_173_962 + delta
  if norm == "none":
    assert "batch_stats" not in variables


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("variant, size", [("cifar", 32), ("mini_imagenet", 84)])
def test_output_shapes(name, variant, size):
  model = create_model(name, num_classes=100, norm="mbn", input_variant=variant, **NORM_OPTIONS)
  variables, x = _abstract_variables(model, size)
  for train in (True, False):
    out = jax.eval_shape(
      lambda v, x: model.apply(
        v, x, train=train, step=jnp.int32(3), mutable=["batch_stats"] if train else False
      ),
      variables,
      x,
    )
    logits = out[0] if train else out
    assert logits.shape == (2, 100) and logits.dtype == jnp.float32


_CALLS = []


class _Probe(nn.Module):
  """A norm that records how the model calls it."""

  @nn.compact
  def __call__(self, x, use_running_average, *, step=None):
    _CALLS.append((use_running_average, step, x.shape[1:3], x.dtype))
    return x


def _probe_factory(name=None, **kwargs):
  return _Probe(name=name)


@pytest.mark.parametrize(
  "build, n_norms, first_sizes",
  [
    # stem norm sees the stem conv output; the next norm is in stage 1.
    (functools.partial(resnet.ResNet20, input_variant="cifar"), 21, [(32, 32), (32, 32)]),
    (functools.partial(resnet.ResNet18, input_variant="mini_imagenet"), 20, [(42, 42), (21, 21)]),
    (functools.partial(vgg.VGG, config=vgg.VGG_CONFIGS["vgg11"]), 8, [(32, 32), (16, 16)]),
  ],
)
@pytest.mark.parametrize("train", [True, False])
def test_every_norm_gets_not_train_step_and_dtype(build, n_norms, first_sizes, train):
  model = build(num_classes=10, norm=_probe_factory, dtype=jnp.bfloat16)
  size = 84 if first_sizes[0] == (42, 42) else 32
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
  _CALLS.clear()
  jax.eval_shape(lambda v, x: model.apply(v, x, train=train, step=17), variables, x)
  assert len(_CALLS) == n_norms
  assert all(c[:2] == (not train, 17) for c in _CALLS)
  assert all(c[3] == jnp.bfloat16 for c in _CALLS)
  assert [c[2] for c in _CALLS[:2]] == first_sizes


def test_create_model_errors():
  with pytest.raises(ValueError, match="'resnet18'"):
    create_model("resnet101", num_classes=10, norm="bn")
  with pytest.raises(ValueError, match="'mbn'"):
    create_model("resnet18", num_classes=10, norm="batch_norm")
  with pytest.raises(ValueError, match="input_variant"):
    create_model("resnet18", num_classes=10, norm="bn", input_variant="imagenet")
  with pytest.raises(ValueError, match="num_classes"):
    create_model("resnet18", num_classes=0, norm="bn")
  with pytest.raises(ValueError, match="conv_general_dilated must be a function"):
    create_model("resnet18", num_classes=10, norm="bn", conv_general_dilated="fast")


@pytest.mark.parametrize(
  "name, variant", [("resnet20", "cifar"), ("resnet50", "mini_imagenet"), ("vgg11", "cifar")]
)
def test_every_conv_goes_through_the_conv_hook(name, variant):
  """The hook sees one call per conv kernel in the parameter tree, nothing else."""
  calls = []

  def counting_conv(lhs, rhs, *args, **kwargs):
    calls.append(rhs.shape)
    return jax.lax.conv_general_dilated(lhs, rhs, *args, **kwargs)

  model = create_model(
    name, num_classes=10, norm="bn", input_variant=variant, conv_general_dilated=counting_conv
  )
  variables, x = _abstract_variables(model, 32 if variant == "cifar" else 84)
  kernels = sorted(a.shape for a in jax.tree.leaves(variables["params"]) if a.ndim == 4)
  calls.clear()
  jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert sorted(calls) == kernels and len(kernels) >= 8  # vgg11 has 8 convs


def test_fast_conv_hook_gives_xla_gradients():
  """create_model(conv_general_dilated=fast_conv...) == the default, value and gradient."""
  from train import cpu_conv as fast_conv

  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 3)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 3])
  results = []
  for conv in (None, fast_conv.conv_general_dilated):
    model = create_model(
      "resnet20", num_classes=10, norm="mbn", conv_general_dilated=conv, **NORM_OPTIONS
    )
    results.append(jax.jit(_train_step, static_argnums=0)(model, x, y, jnp.int32(4)))
  (loss_a, p_a, s_a, _), (loss_b, p_b, s_b, _) = results
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), (p_a, s_a), (p_b, s_b)
  )


def _train_step(model, x, y, step):
  """init + one step of the training program (train.steps); (loss, new params, updates, init vars).

  ``train_step`` runs under a one-element named axis (``jax.vmap`` with the
  pmap axis name), so it can be jitted with compiler options.
  """
  tx = optax.sgd(0.1, momentum=0.9)
  state = train_steps.create_train_state(model, tx, x.shape[1:], batch_size=x.shape[0], seed=0)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  state = state.replace(step=step)
  one = lambda t: jnp.asarray(t)[None]
  new, metrics = jax.vmap(
    functools.partial(
      train_steps.train_step, learning_rate_fn=lambda s: 0.1, momentum_fn=lambda s: 0.0
    ),
    axis_name=train_steps.AXIS,
  )(jax.tree.map(one, state), {"image": x[None], "label": y[None]}, jnp.zeros((1,), jnp.int32))
  new = jax.tree.map(lambda t: t[0], new)
  return metrics["loss"][0], new.params, {"batch_stats": new.batch_stats}, variables


_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

# Every norm in one network (the norm modules are the same in every network);
# every network with a stateful and a stateless norm.
MATRIX = (
  [("resnet20", n) for n in norms.NORM_NAMES]
  + [("vgg11", n) for n in ("mbn", "brn", "none")]
  + [("resnet18", "brn"), ("resnet34", "bn"), ("resnet50", "mbn"), ("vgg16", "gn")]
)


@pytest.mark.parametrize("name, norm", MATRIX)
def test_one_jitted_training_step(name, norm):
  model = create_model(name, num_classes=10, norm=norm, **NORM_OPTIONS)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  y = jnp.array([3, 7])
  step = jax.jit(functools.partial(_train_step, model), compiler_options=_FAST_COMPILE)
  loss, new_params, updates, variables = step(x, y, jnp.int32(4))
  assert np.isfinite(float(loss)) and float(loss) > 0
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_params, variables["params"])
  assert all(jax.tree.leaves(changed)), "every parameter gets a gradient"
  caps = capabilities_of(norm_class(norm))
  if caps.batch_statistics:  # BN, MBN, BReN update every statistic
    for new, old in zip(
      jax.tree.leaves(updates["batch_stats"]), jax.tree.leaves(variables["batch_stats"])
    ):
      assert bool(jnp.all(jnp.isfinite(new))) and bool(jnp.any(new != old))
  elif caps.normalizer == "frozen":  # FrozenBN's statistics never move
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])
  elif caps.backward_statistics:  # MABN: the forward statistics move (ψ needs its probe fold)
    for layer in jax.tree.leaves(updates["batch_stats"], is_leaf=lambda d: "running_var" in d):
      assert int(layer["iters"]) == 1 and bool(jnp.all(jnp.isfinite(layer["running_var"])))
  else:
    assert not updates.get("batch_stats")
