r"""Population ("precise") inference statistics for BatchNorm-family layers.

At small per-device batches the weak point of every BatchNorm-family layer
is its inference statistics: an exponential moving average (EMA) of noisy
batch statistics that also lags behind weights that are still changing.
"Precise BN" (Wu & Johnson 2021; detectron2's ``PreciseBN`` hook,
``torch.optim.swa_utils.update_bn``) replaces them, after training, by
population statistics of each layer's input at the frozen parameters:

    μ  = Σ_b n_b μ_b / N,          σ² = Σ_b n_b (σ²_b + (μ_b − μ)²) / N,

the *law of total variance* over batches b with n_b valid entries per
feature, batch means μ_b and *biased* batch variances σ²_b (N = Σ_b n_b).
Averaging the batch variances alone (what ``update_bn`` does) drops the
between-batch term Σ_b n_b (μ_b − μ)²/N and underestimates σ².

* :func:`pool_moments` is that formula (:func:`mbn_jax.functional.pool_moments`,
  the only copy in mbn_jax; gradient accumulation's deferred statistics use it too);
* :func:`precise_batch_stats` runs a ``flax.linen`` model over batches and
  returns a new ``batch_stats`` tree;
* :func:`precise_batch_stats_nnx` does the same in place for ``flax.nnx``;
* :class:`PreciseStatsAccumulator` holds the pure,
  jit-able pieces, for use inside your own ``pmap``/``shard_map``.

**The estimation pass.** Every ``flax.linen.BatchNorm``,
:class:`mbn_jax.MomentumBatchNorm` and :class:`mbn_jax.BatchRenorm` called in
training mode normalizes with the mean and biased variance of the *current*
batch (MBN as at λ = 0, BReN as at r = 1, d = 0: plain BN), as PreciseBN
does, and its input statistics are recorded; deeper layers therefore see
inputs normalized with batch statistics. Layers called with
``use_running_average=True`` (frozen BN, common in detection backbones) keep
their statistics. Use large estimation batches (a few hundred images; the
default suggestion is 256 per device): with small ones, each layer's input
is normalized with noisy statistics, so the deeper layers' population
statistics describe a noisier network than the one evaluated with fixed
statistics (the bias Wu & Johnson measure for batch sizes below ~32).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from mbn_jax import functional as F
from mbn_jax.norms.base import capabilities_of

__all__ = [
  "PreciseStatsAccumulator",
  "pool_moments",
  "precise_batch_stats",
  "precise_batch_stats_nnx",
  "is_precise_norm",
  "linen_training_mode",
]


pool_moments = F.pool_moments  # the law of total variance; the one copy lives in functional


def _merge(a: F.Moments, b: F.Moments) -> F.Moments:
  """Pools two sets of moments (:func:`pool_moments` over a pair)."""
  return pool_moments(
    jnp.stack([a.mean, b.mean]), jnp.stack([a.var, b.var]), jnp.stack([a.count, b.count])
  )


# ----------------------------------------------------------------------------
# Which layers (they say so: Capabilities.precise_statistics); their estimation-pass forward.


def is_precise_norm(module) -> bool:
  """True for layers whose ``mean``/``var`` :func:`precise_batch_stats` re-estimates.

  The layer's class decides (:func:`mbn_jax.capabilities_of`:
  ``precise_statistics``): ``flax.linen.BatchNorm``, ``flax.nnx.BatchNorm`` and
  mbn_jax's BN, MBN and BReN (linen and nnx), and any norm that declares it.
  """
  return capabilities_of(module).precise_statistics


def _estimation_forward(layer, x, mask, scale, bias, axis_name):
  """One norm layer in the estimation pass: records its input, normalizes with batch stats.

  Returns ``(y, moments)``: ``y = γ (x − μ_B)/√(σ²_B + ε) + β`` with the
  layer's own batch statistics (its own ``axis_name`` synchronization),
  and the moments of ``x`` pooled over ``axis_name`` (the estimation's).
  """
  x = jnp.asarray(x)
  feature_axes, reduction_axes = F.feature_and_reduction_axes(x.ndim, layer.axis)
  F.check_mask(mask, x.shape)
  batch_mean, batch_var = F.batch_statistics(
    x,
    reduction_axes,
    dtype=layer.dtype,
    axis_name=layer.axis_name,
    axis_index_groups=layer.axis_index_groups,
    use_fast_variance=layer.use_fast_variance,
    mask=mask,
  )
  y = F.normalize(x, batch_mean, batch_var, scale, bias, feature_axes, layer.epsilon, layer.dtype)
  # Two-pass moments of the input, exact over the estimation's devices (float32 or wider).
  moments = F.batch_moments(
    x, reduction_axes, axis_name=axis_name, use_fast_variance=False, mask=mask
  )
  return y, moments


def _record(records: dict, path: str, moments: F.Moments) -> None:
  """Adds a call's moments to ``records[path]`` (a layer called twice pools both calls)."""
  records[path] = moments if path not in records else _merge(records[path], moments)


def linen_training_mode(module, args, kwargs) -> bool | None:
  """True if a linen norm layer's call runs in training mode.

  ``use_running_average`` from the call (positional or keyword), else the
  module's field, as ``flax.linen.module.merge_param`` resolves it; None if
  neither is set (the layer itself then raises).
  """
  value = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
  if value is None:
    value = getattr(module, "use_running_average", None)
  return None if value is None else not bool(value)


def _recording_interceptor(records: dict, axis_name: str | tuple[str, ...] | None):
  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (
      context.method_name != "__call__"
      or not is_precise_norm(module)
      or not args
      or module.is_initializing()
      or not linen_training_mode(module, args, kwargs)
    ):
      return next_fun(*args, **kwargs)
    scale = module.get_variable("params", "scale") if module.use_scale else None
    bias = module.get_variable("params", "bias") if module.use_bias else None
    y, moments = _estimation_forward(module, args[0], kwargs.get("mask"), scale, bias, axis_name)
    assert module.scope is not None  # bound: apply is running
    _record(records, "/".join(module.scope.path), moments)
    return y

  return interceptor


# ----------------------------------------------------------------------------
# The accumulator: pure pieces.


class PreciseStatsAccumulator:
  """Pure, jit-able pieces of :func:`precise_batch_stats`.

  ``init`` gives zero moments for every norm layer, ``update`` pools one
  batch into them, ``finalize`` writes the result into a ``batch_stats``
  tree. Use them inside your own ``pmap``/``shard_map`` (pass the same
  ``axis_name``) or ``jit``::

      acc = PreciseStatsAccumulator(train_fn, axis_name="batch")
      state = acc.init(variables, first_batch)
      for batch in batches:
        state = update(state, variables, batch)   # update = jax.pmap(acc.update, ...)
      new_stats = acc.finalize(state, variables["batch_stats"])

  ``state`` maps each layer path ``"a/b/BatchNorm_0"`` to
  :class:`F.Moments`; every device holds the same pooled values.
  """

  def __init__(
    self, train_fn: Callable[[Any, Any], Any], *, axis_name: str | tuple[str, ...] | None = None
  ):
    self.train_fn = train_fn
    self.axis_name = axis_name

  def batch_moments(self, variables, batch) -> dict[str, F.Moments]:
    """Runs ``train_fn`` once in the estimation pass; the moments of every norm input."""
    records: dict[str, F.Moments] = {}
    with nn.intercept_methods(_recording_interceptor(records, self.axis_name)):
      self.train_fn(variables, batch)
    return records

  def init(self, variables, batch, *, mapped=None) -> dict[str, F.Moments]:
    """Zero moments shaped like one batch's (traces ``train_fn`` abstractly, runs nothing).

    ``mapped``: the ``jax.pmap``-ed :meth:`batch_moments` when ``variables``
    and ``batch`` carry a leading device axis (the result then does too).
    """
    shapes = jax.eval_shape(mapped or self.batch_moments, variables, batch)
    if not shapes:
      raise ValueError(
        "precise_batch_stats found no flax.linen.BatchNorm, MomentumBatchNorm or BatchRenorm "
        "called in training mode: train_fn must run the model with use_running_average=False "
        "(e.g. model.apply(v, x, train=True, step=0, mutable=['batch_stats']))."
      )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def update(self, state: dict[str, F.Moments], variables, batch) -> dict[str, F.Moments]:
    """Pools one batch's moments into ``state``."""
    batch_state = self.batch_moments(variables, batch)
    return {p: _merge(state[p], batch_state[p]) for p in state}

  @staticmethod
  def finalize(state: dict[str, F.Moments], batch_stats) -> Any:
    """``batch_stats`` with every estimated layer's ``mean``/``var`` replaced.

    Features that saw no valid entry keep their old values; leaves keep
    their dtypes; every other leaf (e.g. MBN's ``train_mean``) is unchanged.
    """
    flat: dict[str, Any] = dict(traverse_util.flatten_dict(batch_stats, sep="/"))
    for path, moments in state.items():
      for name, value in (("mean", moments.mean), ("var", moments.var)):
        key = f"{path}/{name}"
        if key not in flat:
          raise KeyError(
            f"batch_stats has no {key!r}: pass the batch_stats of the model train_fn runs."
          )
        old = flat[key]
        flat[key] = jnp.where(moments.count > 0, value, old).astype(jnp.result_type(old))
    return traverse_util.unflatten_dict(flat, sep="/")


def _batch_signature(batch):
  """(tree structure, ((shape, dtype) of every leaf)) of a batch."""
  leaves, treedef = jax.tree.flatten(batch)
  return treedef, tuple((tuple(np.shape(t)), str(jnp.result_type(t))) for t in leaves)


def _same_dtypes(sig_a, sig_b) -> bool:
  """Same tree structure and dtypes (shapes may differ): a ragged last batch."""
  return sig_a[0] == sig_b[0] and [d for _, d in sig_a[1]] == [d for _, d in sig_b[1]]


def _with_last_flag(items: Iterable):
  """Yields ``(item, is_last)`` with a one-item look-ahead."""
  it = iter(items)
  try:
    current = next(it)
  except StopIteration:
    return
  for nxt in it:
    yield current, False
    current = nxt
  yield current, True


def _progress(iterable, enabled: bool, total, desc: str):
  if not enabled:
    return iterable
  try:
    from tqdm.auto import tqdm
  except ImportError as e:
    raise ImportError("progress=True needs tqdm: pip install tqdm (or pass progress=False).") from e
  return tqdm(iterable, total=total, desc=desc, leave=False)


def _run_batches(update, state, batches, *, num_batches, progress, desc):
  """Feeds ``batches`` through ``update``: one compilation, a smaller last batch allowed."""
  if num_batches is not None:
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches <= 0:
      raise ValueError(f"num_batches must be a positive int or None, got {num_batches!r}.")
    batches = itertools.islice(batches, num_batches)
  try:
    total = num_batches if num_batches is not None else len(batches)  # type: ignore[arg-type]
  except TypeError:
    total = None
  first_sig = None
  for i, (batch, is_last) in enumerate(_progress(_with_last_flag(batches), progress, total, desc)):
    sig = _batch_signature(batch)
    if first_sig is None:
      first_sig = sig
    elif sig != first_sig and not (is_last and _same_dtypes(sig, first_sig)):
      raise ValueError(
        f"precise_batch_stats: batch {i} has (shape, dtype) leaves {sig[1]}, but batch 0 "
        f"had {first_sig[1]}. Every batch must have the same shape and dtype (only the last may "
        "be smaller); make the input pipeline drop or pad ragged batches."
      )
    state = update(state, batch)
  return state


def _hashable(value) -> bool:
  try:
    hash(value)
  except TypeError:
    return False
  return True


def _build(train_fn, axis_name):
  """(init, update, finalize) for ``train_fn``, jitted (or pmapped over ``axis_name``)."""
  acc = PreciseStatsAccumulator(train_fn, axis_name=axis_name)
  if axis_name is None:
    return acc.init, jax.jit(acc.update), jax.jit(acc.finalize)
  mapped_moments = jax.pmap(acc.batch_moments, axis_name=axis_name)
  return (
    functools.partial(acc.init, mapped=mapped_moments),
    jax.pmap(acc.update, axis_name=axis_name),
    jax.pmap(acc.finalize, axis_name=axis_name),
  )


# Cached per (train_fn, axis_name): repeated estimations (every evaluation) compile once.
_compiled = functools.lru_cache(maxsize=16)(_build)


def precise_batch_stats(
  train_fn: Callable[[Any, Any], Any],
  variables,
  batches: Iterable,
  *,
  num_batches: int | None = None,
  axis_name: str | None = None,
  progress: bool = False,
) -> Any:
  r"""Population ("precise") inference statistics of a ``flax.linen`` model.

  For every ``flax.linen.BatchNorm``, :class:`mbn_jax.MomentumBatchNorm` and
  :class:`mbn_jax.BatchRenorm` that ``train_fn`` calls in training mode
  (found by interception; you name none of them), the inference ``mean`` and
  ``var`` become the population statistics of the layer's input over
  ``batches`` at the frozen parameters (law of total variance, weighted by
  the number of valid entries; see :func:`pool_moments`):

      μ = Σ_b n_b μ_b / N,      σ² = Σ_b n_b (σ²_b + (μ_b − μ)²) / N.

  During the pass each such layer normalizes with the statistics of the
  current batch (MBN as at λ = 0, BReN as at r = 1, d = 0), as PreciseBN
  does; use large batches (~256 images; see the module docstring). MBN's
  ``train_mean``/``train_var``, layers called with
  ``use_running_average=True`` and every other collection are left as they
  were; parameters never change. Masks passed to the layers (``mask=``)
  select the entries that count.

  Args:
    train_fn: ``train_fn(variables, batch)`` runs your model in training
      mode, e.g. ``lambda v, b: model.apply(v, b["image"], train=True,
      step=0, mutable=["batch_stats"])``; its return value is ignored.
    variables: the model's variables (``params``, ``batch_stats``, ...).
      With ``axis_name``: each leaf carries a leading local-device axis, as
      in a pmapped training loop.
    batches: any iterable of batches (anything ``train_fn`` takes). All
      must share one shape except a smaller last batch (one extra
      compilation). With ``axis_name``: a leading local-device axis.
    num_batches: use at most this many batches (default: all).
    axis_name: pool over the devices of this axis: the work is
      ``jax.pmap``-ed over the local devices with this axis name (every host
      with ``jax.distributed``), and the result equals pooling the
      concatenated global batches. Under your own ``shard_map`` or ``pmap``
      use :class:`PreciseStatsAccumulator`.
    progress: show a tqdm progress bar.

  Returns:
    A new ``batch_stats`` tree with the structure (and, with ``axis_name``,
    the leading device axis) of ``variables["batch_stats"]``.

  Raises:
    ValueError: no such layer runs in training mode, ``batches`` is empty,
      or a batch's shape differs from the first batch's.
  """
  if "batch_stats" not in variables:
    raise ValueError(
      "variables has no 'batch_stats' collection: pass the model's full "
      "variables (e.g. the output of model.init), not only its params."
    )
  it = iter(batches)
  try:
    first = next(it)
  except StopIteration:
    raise ValueError(
      "precise_batch_stats got no batches: pass a non-empty iterable "
      "(e.g. a few hundred training images in batches of ~256)."
    ) from None
  if _hashable(train_fn):
    init, update, finalize = _compiled(train_fn, axis_name)  # cached: one compilation per fn
  else:  # e.g. a functools.partial over a dict: compiled for this call only
    init, update, finalize = _build(train_fn, axis_name)
  state = init(variables, first)
  state = _run_batches(
    lambda s, b: update(s, variables, b),
    state,
    itertools.chain([first], it),
    num_batches=num_batches,
    progress=progress,
    desc="precise statistics",
  )
  return finalize(state, variables["batch_stats"])


# ----------------------------------------------------------------------------
# flax.nnx: in place on the nnx.BatchStat variables.


class _EstimationPass(nnx.Module):
  """Stands in for an nnx norm layer in a throw-away clone of the model during estimation.

  In training mode it records the moments of its input and normalizes with
  the batch statistics (:func:`_estimation_forward`); otherwise it calls the
  layer itself.
  """

  def __init__(self, layer, path: str, records: dict):
    self.layer = layer
    self.path = path
    self.records = records

  def __call__(self, x, use_running_average=None, *, mask=None, **kwargs):
    layer = self.layer
    ura = layer.use_running_average if use_running_average is None else use_running_average
    if ura is None or ura:
      return layer(x, use_running_average, mask=mask, **kwargs)
    scale = layer.scale[...] if layer.scale is not None else None
    bias = layer.bias[...] if layer.bias is not None else None
    y, moments = _estimation_forward(layer, x, mask, scale, bias, None)
    _record(self.records, self.path, moments)
    return y


def _nnx_norm_layers(model):
  """``[(path tuple, layer)]`` of every nnx layer whose statistics can be re-estimated."""
  return [(path, m) for path, m in nnx.iter_modules(model) if is_precise_norm(m)]


def _path_name(path: tuple) -> str:
  return "/".join(map(str, path))


def _replace_submodule(root, path: tuple, new) -> None:
  """Puts ``new`` where ``path`` (from ``nnx.iter_modules``) leads inside ``root``."""
  parent = root
  for key in path[:-1]:
    parent = getattr(parent, key) if isinstance(key, str) and hasattr(parent, key) else parent[key]
  key = path[-1]
  if isinstance(key, str) and hasattr(parent, key):
    setattr(parent, key, new)
  else:
    parent[key] = new


def precise_batch_stats_nnx(
  forward: Callable[[Any, Any], Any],
  model,
  batches: Iterable,
  *,
  num_batches: int | None = None,
  progress: bool = False,
) -> None:
  r""":func:`precise_batch_stats` for a ``flax.nnx`` model, **in place**.

  ``forward(model, batch)`` runs the model (in training mode: ``model.train()``
  or ``use_running_average=False``). Every ``nnx.BatchNorm``,
  :class:`mbn_jax.nnx.MomentumBatchNorm` and :class:`mbn_jax.norms.BatchRenormNNX`
  it calls in training mode gets population ``mean``/``var`` (the same
  formula and estimation pass as :func:`precise_batch_stats`); nothing else
  in the model changes. One compilation for all batches (a smaller last
  batch adds one).
  """
  layers = _nnx_norm_layers(model)
  if not layers:
    raise ValueError(
      "precise_batch_stats_nnx found no nnx.BatchNorm, MomentumBatchNorm or "
      "BatchRenormNNX in the model."
    )
  graphdef, state = nnx.split(model)

  def batch_moments(state, batch):
    clone = nnx.merge(graphdef, state)  # a throw-away copy: its layers are swapped, not the model's
    records: dict[str, F.Moments] = {}
    target = clone
    for path, layer in _nnx_norm_layers(clone):
      stand_in = _EstimationPass(layer, _path_name(path), records)
      if path:
        _replace_submodule(clone, path, stand_in)
      else:  # the model is itself a norm layer: forward gets the stand-in
        target = stand_in
    forward(target, batch)
    return records

  @jax.jit
  def update(acc, state, batch):
    new = batch_moments(state, batch)
    return {p: _merge(acc[p], new[p]) for p in acc}

  it = iter(batches)
  try:
    first = next(it)
  except StopIteration:
    raise ValueError("precise_batch_stats_nnx got no batches: pass a non-empty iterable.") from None
  shapes = jax.eval_shape(batch_moments, state, first)
  if not shapes:
    raise ValueError(
      "precise_batch_stats_nnx: forward called no norm layer in training mode "
      "(call model.train() or pass use_running_average=False)."
    )
  acc = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  acc = _run_batches(
    lambda a, b: update(a, state, b),
    acc,
    itertools.chain([first], it),
    num_batches=num_batches,
    progress=progress,
    desc="precise statistics",
  )
  for path, layer in layers:
    if _path_name(path) in acc:
      moments = acc[_path_name(path)]
      for name, value in (("mean", moments.mean), ("var", moments.var)):
        var = getattr(layer, name)
        var[...] = jnp.where(moments.count > 0, value, var[...]).astype(var[...].dtype)
