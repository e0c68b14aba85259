"""The one seam between the training loop and the devices: ``pmap``, or ``jit`` + ``shard_map``.

``config.parallelism`` picks the implementation; nothing else in the program
knows which one runs. Both do the same six jobs with the same arithmetic:

* place the train state on the devices (:meth:`Parallel.place`) and read it
  back (:meth:`Parallel.first`, :meth:`Parallel.all_rows`);
* shard a batch of this process's rows (:meth:`Parallel.shard`);
* run a step (:meth:`Parallel.train_step`, :meth:`Parallel.eval_sums`);
* average the per-device ``batch_stats`` (:meth:`Parallel.mean_stats`) and
  estimate population statistics (:meth:`Parallel.precise_stats`);
* give the norms their synchronization (:meth:`Parallel.norm_options`).

``pmap`` (:class:`PmapParallel`, the default): values carry a leading
local-device axis, the axis is ``'batch'``; statistics shared by groups of G
devices use ``axis_index_groups``.

``mesh`` (:class:`MeshParallel`): a :class:`jax.sharding.Mesh` over every
device of every process with axes ``('data', 'stats')`` of sizes (D/G, G);
``jax.jit`` over ``jax.shard_map``; batches are globally shaped
``jax.Array``\\ s sharded over both axes (:class:`~jax.sharding.NamedSharding`),
the parameters and optimizer state are replicated, and each device's own
``batch_stats`` are rows of a ``[devices, ...]`` array sharded the same way.
The norms synchronize over ``'stats'`` (the G devices of a group); gradients
and metrics are averaged over both axes.

The device order is the same in both (process by process, then local
device), so a run's batches, statistics and checkpoints are the same under
either, and a checkpoint written under one resumes under the other.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import mbn_jax
from train import config_schema, steps
from train.layout import RunLayout

__all__ = [
  "MESH_AXES",
  "PARALLELISMS",
  "MeshParallel",
  "Parallel",
  "PmapParallel",
  "make_parallel",
  "norm_options",
  "parallel_class",
]

PARALLELISMS = config_schema.choices("parallelism")
MESH_AXES = ("data", "stats")  # D/G groups × the G devices that share statistics


def sync_groups(devices: int, group: int) -> list[list[int]]:
  """The device indices of each statistics group: [[0..G-1], [G..2G-1], ...]."""
  return [list(range(i, i + group)) for i in range(0, devices, group)]


def mean_over_devices(stats, axis):
  """The devices' mean of every floating statistic; integer ones (MABN's iteration counter,
  the same on every device) are kept as they are — a ``pmean`` would make them floats."""
  return jax.tree.map(
    lambda x: jax.lax.pmean(x, axis) if jnp.issubdtype(x.dtype, jnp.inexact) else x, stats
  )


def _estimation_fn(model):
  def run(variables, batch):
    return model.apply(variables, batch["image"], train=True, step=0, mutable=["batch_stats"])

  return run


class Parallel(abc.ABC):
  """What the loop asks of the devices: every method it calls (see the module docstring).

  An implementation is built whole: its constructor compiles the train and eval
  steps of the model, and nothing is assigned to it afterwards. The norms'
  synchronization (:meth:`norm_options`) depends on the layout only, so it is a
  class method, read before the model exists.
  """

  name: ClassVar[str]
  axis: ClassVar[str | tuple[str, ...]]  # the device axis (or axes) the steps reduce over

  layout: RunLayout
  _traces: list[None]  # one entry per trace of the train step
  _train: Callable[..., Any]  # (state, batch, stop) -> (state, metrics)
  _eval: Callable[..., Any]  # (variables, batch) -> sums over every device
  _mean: Callable[..., Any]  # batch_stats -> their mean over every device

  @abc.abstractmethod
  def __init__(
    self, layout: RunLayout, model, lr_fn, lam_fn, grad_accum_steps: int, probes=None
  ) -> None:
    """Compiles the train and eval steps of ``model`` (built with :meth:`norm_options`):
    ``lr_fn`` and ``lam_fn`` the learning rate and MBN's λ(t), ``grad_accum_steps``
    micro-batches per optimizer step, ``probes`` the shapes of the model's
    ``backward_probes`` (:func:`train.steps.backward_probe_shapes`)."""

  @classmethod
  @abc.abstractmethod
  def norm_options(cls, layout: RunLayout) -> dict:
    """``axis_name`` / ``axis_index_groups`` for the norms (statistics over G devices)."""

  @abc.abstractmethod
  def place(self, host_state, per_device_stats) -> Any:
    """``host_state`` on the devices, each device's ``batch_stats`` its own row."""

  @abc.abstractmethod
  def shard(self, batch: dict) -> dict:
    """This process's ``[local_devices, m, ...]`` rows as the train and eval steps take them."""

  @abc.abstractmethod
  def stop_flags(self, requested: bool) -> Any:
    """Every device's stop flag (a SIGTERM seen by this process), as the train step takes it."""

  @abc.abstractmethod
  def first(self, tree) -> Any:
    """Device 0's value of every leaf, on the host."""

  @abc.abstractmethod
  def all_rows(self, tree) -> Any:
    """Every device's row (all processes), stacked on the host: ``[devices, ...]``."""

  @abc.abstractmethod
  def precise_stats(self, params, mean_stats, batches) -> Any:
    """Population statistics pooled over every device (``batches``: host batches)."""

  @property
  def train_traces(self) -> int:
    """How often the train step was traced (1 per run)."""
    return len(self._traces)

  def train_step(self, state, batch, stop):
    """One training step on every device: ``(state, metrics)``."""
    return self._train(state, batch, stop)

  def eval_sums(self, variables, batch) -> dict:
    """The evaluation sums of one batch over every device, as host floats."""
    return {k: float(v) for k, v in self.first(self._eval(variables, batch)).items()}

  def mean_stats(self, stats):
    """The per-device ``batch_stats`` averaged over every device ({} stays {})."""
    return self._mean(stats) if jax.tree.leaves(stats) else stats

  def _counted(self, fn):
    traces = self._traces

    def counted(*args):
      traces.append(None)  # Python side effect: runs once per trace
      return fn(*args)

    return counted

  def _train_fn(self, lr_fn, lam_fn, grad_accum_steps, probes):
    return functools.partial(
      steps.train_step,
      learning_rate_fn=lr_fn,
      momentum_fn=lam_fn,
      grad_accum_steps=grad_accum_steps,
      axis_name=self.axis,
      probes=probes,
    )


# ----------------------------------------------------------------------------
# pmap


class PmapParallel(Parallel):
  """``jax.pmap`` over axis ``'batch'``: every value carries a leading local-device axis."""

  name = "pmap"
  axis: ClassVar[str] = steps.AXIS
  _model: Any  # precise_stats estimates with it

  def __init__(self, layout: RunLayout, model, lr_fn, lam_fn, grad_accum_steps: int, probes=None):
    """The compiled train and eval steps of ``model`` (``probes``: the shapes of its
    ``backward_probes``, :func:`train.steps.backward_probe_shapes`)."""
    self.layout = layout
    self._model = model
    self._traces = []
    step = self._train_fn(lr_fn, lam_fn, grad_accum_steps, probes)
    self._train = jax.pmap(self._counted(step), axis_name=self.axis, donate_argnums=(0,))
    self._eval = jax.pmap(
      functools.partial(steps.eval_step, apply_fn=model.apply, axis_name=self.axis),
      axis_name=self.axis,
    )
    self._mean = jax.pmap(lambda t: mean_over_devices(t, self.axis), axis_name=self.axis)

  @classmethod
  def norm_options(cls, layout: RunLayout) -> dict:
    g, d = layout.norm_sync_devices, layout.devices
    if g == 1:
      return {"axis_name": None, "axis_index_groups": None}
    return {"axis_name": cls.axis, "axis_index_groups": None if g == d else sync_groups(d, g)}

  def place(self, host_state, per_device_stats):
    """``host_state`` on every local device, with each device's own ``per_device_stats`` row."""
    local = self.layout.local_devices
    rows = jax.tree.map(
      lambda x: np.broadcast_to(np.asarray(x), (local,) + np.shape(x)).copy(), host_state
    )
    rows = rows.replace(batch_stats=per_device_stats)
    # Laid out as the train step's outputs are, so the first step does not trace twice.
    return jax.pmap(lambda t: t, axis_name=self.axis)(rows)

  def shard(self, batch: dict) -> dict:
    return batch  # already [local_devices, m, ...]

  def stop_flags(self, requested: bool):
    return np.full((self.layout.local_devices,), int(requested), np.int32)

  def precise_stats(self, params, mean_stats, batches):
    """Population statistics pooled over every device (``batches``: host batches)."""
    return mbn_jax.precise_batch_stats(
      _cached_estimation_fn(self._model),
      {"params": params, "batch_stats": mean_stats},
      (self.shard(b) for b in batches),
      axis_name=self.axis,
    )

  def first(self, tree):
    """Device 0's value of every leaf, on the host."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)

  def all_rows(self, tree):
    """Every device's value (all processes), stacked on the host: ``[devices, ...]``."""
    return _gather_rows(jax.tree.map(_local_rows, tree))


def _local_rows(x) -> np.ndarray:
  """This process's per-device values of a pmapped array, in device order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


@functools.lru_cache(maxsize=8)
def _cached_estimation_fn(model):
  """One estimation function per model, so repeated estimations compile once."""
  return _estimation_fn(model)


# ----------------------------------------------------------------------------
# mesh


class MeshParallel(Parallel):
  """``jax.jit`` over ``jax.shard_map`` on a Mesh ``('data', 'stats')`` of every device."""

  name = "mesh"
  axis = MESH_AXES

  def __init__(self, layout: RunLayout, model, lr_fn, lam_fn, grad_accum_steps: int, probes=None):
    """The Mesh of every device and the compiled train and eval steps of ``model`` (``probes``:
    the shapes of its ``backward_probes``, :func:`train.steps.backward_probe_shapes`)."""
    self.layout = layout
    self._traces = []
    g = layout.norm_sync_devices
    devices = np.asarray(jax.devices()).reshape(layout.devices // g, g)
    self.mesh = Mesh(devices, MESH_AXES)
    self.rows = NamedSharding(self.mesh, P(MESH_AXES))  # one row (or block) per device
    self.replicated = NamedSharding(self.mesh, P())
    step = self._train_fn(lr_fn, lam_fn, grad_accum_steps, probes)
    self._train = jax.jit(self._counted(_mesh_train_fn(self, step)), donate_argnums=(0,))
    self._eval = jax.jit(_mesh_eval_fn(self, model))
    self._mean = jax.jit(
      self._map(lambda s: mean_over_devices(s, self.axis), P(MESH_AXES), P(MESH_AXES))
    )
    # The precise-statistics pass (jit compiles it on first use, once per seam).
    self._estimators = _mesh_estimators(self, model)

  @classmethod
  def norm_options(cls, layout: RunLayout) -> dict:
    g = layout.norm_sync_devices
    return {"axis_name": "stats" if g > 1 else None, "axis_index_groups": None}

  def _state_specs(self, state):
    specs = jax.tree.map(lambda _: P(), state)
    return specs.replace(batch_stats=jax.tree.map(lambda _: P(MESH_AXES), state.batch_stats))

  def _map(self, fn, in_specs, out_specs):
    # check_vma=False: inside, every device computes as under pmap — the gradient with
    # respect to the replicated parameters is this device's own, averaged by the step's
    # pmean (with check_vma=True, shard_map's autodiff would psum it already).
    return jax.shard_map(
      fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )

  def _global(self, local, sharding, global_shape=None):
    return jax.make_array_from_process_local_data(sharding, np.asarray(local), global_shape)

  def place(self, host_state, per_device_stats):
    """Parameters and optimizer state replicated; each device's ``batch_stats`` row its own."""
    state = jax.tree.map(lambda x: self._global(x, self.replicated), host_state)
    stats = jax.tree.map(
      lambda x: self._global(x, self.rows, (self.layout.devices,) + np.shape(x)[1:]),
      per_device_stats,
    )
    return state.replace(batch_stats=stats)

  def shard(self, batch: dict) -> dict:
    """This process's ``[local_devices, m, ...]`` rows as one global ``[devices·m, ...]`` array."""
    out = {}
    for key, x in batch.items():
      flat = np.asarray(x).reshape((-1,) + np.shape(x)[2:])
      out[key] = self._global(
        flat, self.rows, (flat.shape[0] * jax.process_count(),) + flat.shape[1:]
      )
    return out

  def stop_flags(self, requested: bool):
    flags = np.full((self.layout.local_devices,), int(requested), np.int32)
    return self._global(flags, self.rows, (self.layout.devices,))

  def precise_stats(self, params, mean_stats, batches):
    """Population statistics pooled over every device (``batches``: host batches)."""
    return _mesh_precise_stats(self, params, mean_stats, (self.shard(b) for b in batches))

  def first(self, tree):
    """Device 0's value of every leaf on the host: a replicated leaf whole, a row leaf its row."""
    return jax.tree.map(_first_device_value, tree)

  def all_rows(self, tree):
    """Every device's row (all processes), stacked on the host: ``[devices, ...]``."""
    return _gather_rows(tree)


def _first_device_value(x):
  """The value of a global array on its first addressable device (its row, if sharded in rows)."""
  data = np.asarray(x.addressable_shards[0].data)
  return data[0] if _is_rows(x) else data


def _gather_rows(tree):
  """Every device's row of every leaf, from every process, on the host: ``[devices, ...]``."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils

  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def _mesh_train_fn(mp: MeshParallel, step):
  """``step`` (:func:`train.steps.train_step`) on every device of the mesh: its own rows."""

  def per_device(state, batch, stop):
    new_state, metrics = step(_own_row(state), batch, stop[0])
    return _as_row(new_state), metrics

  def train(state, batch, stop):
    specs = mp._state_specs(state)
    mapped = mp._map(per_device, (specs, P(MESH_AXES), P(MESH_AXES)), (specs, P()))
    return mapped(state, batch, stop)

  return train


def _mesh_eval_fn(mp: MeshParallel, model):
  """:func:`train.steps.eval_step` on every device of the mesh: sums over all of them."""
  evaluate = functools.partial(steps.eval_step, apply_fn=model.apply, axis_name=mp.axis)

  def eval_fn(variables, batch):
    specs = {
      "params": P(),
      "batch_stats": jax.tree.map(lambda _: P(MESH_AXES), variables["batch_stats"]),
    }

    def own(v, b):
      return evaluate({"params": v["params"], "batch_stats": _squeeze(v["batch_stats"])}, b)

    return mp._map(own, (specs, P(MESH_AXES)), P())(variables, batch)

  return eval_fn


def _mesh_precise_stats(mp: MeshParallel, params, mean_stats, batches):
  """:class:`mbn_jax.precise.PreciseStatsAccumulator` under ``shard_map``, pooled over all devices.

  The same estimation as :func:`mbn_jax.precise_batch_stats` under ``pmap``:
  every norm layer normalizes with its own (group's) batch statistics, and its
  input's moments are pooled over the devices of both mesh axes. The compiled
  pieces are built once per seam (every evaluation reuses them).
  """
  moments, update, finalize = mp._estimators
  variables = {"params": params, "batch_stats": mean_stats}
  first = next(batches)
  shapes = jax.eval_shape(moments, variables, first)
  state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  state = update(state, variables, first)
  for batch in batches:
    state = update(state, variables, batch)
  return finalize(state, mean_stats)


def _mesh_estimators(mp: MeshParallel, model):
  """(moments, update, finalize) of the estimation pass of ``model``, shard_mapped over the mesh."""
  acc = mbn_jax.precise.PreciseStatsAccumulator(_estimation_fn(model), axis_name=mp.axis)
  stat_specs = P(MESH_AXES)  # a prefix: every statistic is one row per device
  var_specs = {"params": P(), "batch_stats": stat_specs}

  def own(variables):
    return {"params": variables["params"], "batch_stats": _squeeze(variables["batch_stats"])}

  moments = mp._map(lambda v, b: acc.batch_moments(own(v), b), (var_specs, P(MESH_AXES)), P())
  update = jax.jit(
    mp._map(lambda s, v, b: acc.update(s, own(v), b), (P(), var_specs, P(MESH_AXES)), P())
  )
  finalize = jax.jit(
    mp._map(lambda s, st: _as_rows(acc.finalize(s, _squeeze(st))), (P(), stat_specs), stat_specs)
  )
  return moments, update, finalize


def _is_rows(x) -> bool:
  """Is ``x`` sharded one row per device (``P(('data', 'stats'))``)?"""
  spec = getattr(x.sharding, "spec", None)
  return bool(spec) and spec[0] in (MESH_AXES, list(MESH_AXES))


def _squeeze(tree):
  return jax.tree.map(lambda x: x[0], tree)


def _as_rows(tree):
  return jax.tree.map(lambda x: x[None], tree)


def _own_row(state):
  """Inside shard_map: this device's ``[1, ...]`` batch_stats block as its own statistics."""
  return state.replace(batch_stats=_squeeze(state.batch_stats))


def _as_row(state):
  return state.replace(batch_stats=_as_rows(state.batch_stats))


def parallel_class(name: str) -> type[Parallel]:
  """The implementation ``config.parallelism`` names."""
  if name == "pmap":
    return PmapParallel
  if name == "mesh":
    return MeshParallel
  raise ValueError(f"config.parallelism must be one of {PARALLELISMS}, got {name!r}.")


def norm_options(name: str, layout: RunLayout) -> dict:
  """The norms' synchronization under parallelism ``name`` (:meth:`Parallel.norm_options`)."""
  return parallel_class(name).norm_options(layout)


def make_parallel(
  name: str, layout: RunLayout, model, lr_fn, lam_fn, grad_accum_steps: int, probes=None
) -> Parallel:
  """The seam ``config.parallelism`` names, with the compiled steps of ``model`` (built with
  :func:`norm_options`): ``lr_fn`` and ``lam_fn`` the learning rate and MBN's λ(t),
  ``grad_accum_steps`` micro-batches per optimizer step, ``probes`` the shapes of the model's
  ``backward_probes`` (:func:`train.steps.backward_probe_shapes`)."""
  return parallel_class(name)(layout, model, lr_fn, lam_fn, grad_accum_steps, probes)
