"""The training program's state and steps, as module-level pure functions.

The seam (:mod:`train.parallel`) maps :func:`train_step` and :func:`eval_step`
over the devices along axis ``'batch'`` — ``jax.pmap``, or ``jax.jit`` over
``jax.shard_map`` on a Mesh — and nothing here knows which; ``benchmarks/``
and the tests import and time/check the same functions (in the manner of
Flax's ImageNet example):

    step = functools.partial(train_step, learning_rate_fn=lr, momentum_fn=lam)
    p_train = jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))   # what PmapParallel does

One step: ``model.apply(..., train=True, step=state.step,
mutable=['batch_stats'])`` (every norm computes λ(step) itself; the step is
traced data, so one compilation serves the run), softmax cross-entropy,
``jax.grad`` (also with respect to the ``backward_probes`` of norms with
backward statistics, folded into ``batch_stats`` per device),
``pmean`` of the gradients over devices, SGD with momentum and
weight decay (optax). A step that would leave anything non-finite — its
input batch, loss or gradient, or the *updated* parameters, optimizer state
or ``batch_stats`` (an update can overflow with a finite loss and gradient)
— changes nothing but the step counter (parameters, optimizer state and
``batch_stats`` stay) and is counted in the metrics (``nonfinite``, and
``nonfinite_kind``: what was non-finite, :mod:`train.divergence`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from mbn_jax.backward_statistics import BACKWARD_PROBES, fold_backward_statistics

__all__ = [
  "AXIS",
  "TrainState",
  "TrainingRule",
  "backward_probe_shapes",
  "create_train_state",
  "eval_step",
  "learning_rate_fn",
  "make_optimizer",
  "optimizer_step",
  "train_step",
  "training_rule",
]

AXIS = "batch"  # the pmap axis of the loop


class TrainState(train_state.TrainState):
  """Flax's TrainState plus the norms' ``batch_stats``."""

  batch_stats: Any = None


def learning_rate_fn(config, per_device_batch: int, global_batch: int, steps_per_epoch: int):
  """The step-decay learning rate, an optax schedule (a pure ``step -> lr`` function).

  lr(step) = base · factor^⌊step / (lr_decay_epochs · steps_per_epoch)⌋ with
  base = ``base_learning_rate`` · m / ``lr_reference_batch_size`` (m: the
  per-device or global batch, ``lr_batch_size``) and factor =
  ``lr_decay_factor``: the paper's ``0.1·m/64``, ÷10 every 60 of 200 epochs is
  ``lr_decay_epochs=60``; a 10-epoch run of the same shape uses 3. With
  gradient accumulation the caller passes the *optimizer's* batches
  (per-device m·k, global·k) and optimizer steps per epoch.
  """
  m = per_device_batch if config.lr_batch_size == "per_device" else global_batch
  base = config.base_learning_rate * m / config.lr_reference_batch_size
  return optax.exponential_decay(
    init_value=base,
    transition_steps=config.lr_decay_epochs * steps_per_epoch,
    decay_rate=config.lr_decay_factor,
    staircase=True,
  )


def make_optimizer(config, lr_fn: Callable) -> optax.GradientTransformation:
  """SGD (momentum ``config.momentum``, Nesterov optional) with weight decay ``config.weight_decay``.

  With ``config.grad_accum_steps`` k > 1 the whole chain is wrapped in
  ``optax.MultiSteps(every_k_schedule=k)``: every call accumulates the
  micro-batch gradient and returns zero updates, the k-th applies the chain
  to the *mean* of the k gradients (weight decay and momentum once per
  update); ``lr_fn`` then counts optimizer updates.
  """
  tx = optax.chain(
    optax.add_decayed_weights(config.weight_decay),
    optax.sgd(lr_fn, momentum=config.momentum or None, nesterov=config.nesterov),
  )
  k = config.grad_accum_steps
  return optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation() if k > 1 else tx


@dataclasses.dataclass(frozen=True)
class TrainingRule:
  """What moves the state at optimizer step t, built once per run by :func:`training_rule`.

  ``learning_rate(t)`` (:func:`learning_rate_fn`), MBN's ``momentum(t)`` = λ(t)
  (Eq. 11, :func:`train.models.momentum_schedule_of`; the object the norms are
  built with) and the ``optimizer`` that applies ``learning_rate``
  (:func:`make_optimizer`), the one in the run's :class:`TrainState`.
  """

  learning_rate: Callable
  momentum: Callable
  optimizer: optax.GradientTransformation


def training_rule(config, layout, optimizer_steps_per_epoch: int) -> TrainingRule:
  """The run's :class:`TrainingRule`, from the config and its batch layout.

  The learning rate scales with the optimizer's batches (per-device m·k and
  global·k with k = ``grad_accum_steps``); λ(t) uses the statistics batch m·G;
  both count optimizer steps (``optimizer_steps_per_epoch``).
  """
  from train.models import momentum_schedule_of

  k = layout.grad_accum_steps
  lr = learning_rate_fn(
    config,
    layout.per_device_batch_size * k,
    layout.global_batch_size * k,
    optimizer_steps_per_epoch,
  )
  lam = momentum_schedule_of(config, layout.statistics_batch_size, optimizer_steps_per_epoch)
  return TrainingRule(learning_rate=lr, momentum=lam, optimizer=make_optimizer(config, lr))


def create_train_state(
  model, tx, image_shape: tuple[int, ...], *, batch_size: int, seed: int
) -> TrainState:
  """Initial parameters and ``batch_stats`` (``model.init`` in inference mode) and the optimizer."""
  dummy = jnp.zeros((batch_size,) + tuple(image_shape), jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(seed), dummy)
  state = TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    tx=tx,
    batch_stats=variables.get("batch_stats", {}),
  )
  # A strongly typed int32 step, as train_step returns it: one trace of the step.
  return state.replace(step=jnp.zeros((), jnp.int32))


def backward_probe_shapes(model, image_shape: tuple[int, ...], batch_size: int = 1) -> dict:
  """``ShapeDtypeStruct`` s of the model's ``backward_probes`` ({} without a norm that has them)."""
  dummy = jax.ShapeDtypeStruct((batch_size,) + tuple(image_shape), jnp.float32)
  shapes = jax.eval_shape(
    functools.partial(model.init, train=False),
    jax.ShapeDtypeStruct((), jax.random.key(0).dtype),
    dummy,
  )
  return dict(shapes.get(BACKWARD_PROBES, {}))


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def optimizer_step(step, grad_accum_steps: int = 1):
  """The optimizer step of (micro-)batch ``step``: ``step // k`` (k = ``grad_accum_steps``)."""
  return step // grad_accum_steps if grad_accum_steps > 1 else step


def train_step(
  state: TrainState,
  batch: dict,
  stop,
  *,
  learning_rate_fn: Callable,
  momentum_fn: Callable,
  grad_accum_steps: int = 1,
  axis_name: str | tuple[str, ...] = AXIS,
  probes: Any = None,
) -> tuple[TrainState, dict]:
  """One data-parallel SGD step (one micro-batch) on one device's share of the batch.

  Called under ``jax.pmap(..., axis_name=AXIS)`` or inside ``jax.shard_map``
  (:mod:`train.parallel`); ``axis_name`` names the mapped axis (or axes) that
  gradients and metrics are averaged over.

  With gradient accumulation (``grad_accum_steps`` k > 1, the optimizer an
  ``optax.MultiSteps``; see :func:`make_optimizer`) this is one micro-batch:
  ``state.step`` counts micro-batches, the norms see the *optimizer* step
  ``state.step // k`` (so λ(t)'s epochs stay epochs), the gradient is
  accumulated and applied, averaged, on every k-th call, and the
  ``batch_stats`` update after every micro-batch (the norms' own
  ``accumulation_steps`` field defers their inference statistics).

  Args:
    state: this device's replica (its own ``batch_stats``: per-device
      statistics unless the model synchronizes them).
    batch: ``{"image": [m, H, W, C], "label": [m]}``, this device's images.
    stop: this device's stop flag (SIGTERM seen); summed over devices into
      ``metrics["stop"]`` so every process stops at the same step.
    learning_rate_fn, momentum_fn: ``optimizer step -> value`` for the
      metrics (the optimizer and the layers compute their own).
    grad_accum_steps: k, micro-batches per optimizer update (1: none).
    axis_name: the device axis (or axes) of the data-parallel batch.
    probes: the shapes of the model's ``backward_probes``
      (:func:`backward_probe_shapes`; None or {}: the model has no norm with
      backward statistics). The loss is differentiated with respect to zero
      probes too, and their cotangents — per device, never averaged — are
      folded into ``batch_stats`` (:func:`mbn_jax.fold_backward_statistics`;
      MABN's ψ buffer), after every micro-batch.

  Returns:
    ``(new_state, metrics)``; metrics (identical on every device) hold the
    device-mean ``loss`` and ``accuracy``, ``lr`` and ``lambda`` at this
    step, ``stop``, ``nonfinite`` (1 if this update was skipped) and
    ``nonfinite_kind`` (0, or the bit mask of :mod:`train.divergence`: data 1,
    loss 2, gradients 4, updated state 8, OR-ed over devices).
  """

  step = optimizer_step(state.step, grad_accum_steps)

  def loss_fn(params, probe_values):
    variables = {"params": params, "batch_stats": state.batch_stats}
    if probe_values:  # norms with backward statistics (MABN): differentiated, then folded
      variables[BACKWARD_PROBES] = probe_values
    logits, updates = state.apply_fn(
      variables,
      batch["image"],
      train=True,
      step=step,
      mutable=["batch_stats"],
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), (grads, probe_grads) = jax.value_and_grad(
    loss_fn, argnums=(0, 1), has_aux=True
  )(state.params, jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), dict(probes or {})))
  grads = jax.lax.pmean(grads, axis_name)  # the probes' cotangents stay per device
  batch_stats = fold_backward_statistics(updates.get("batch_stats", {}), probe_grads)
  updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  # What is non-finite on any device (train.divergence's bits: data, loss, gradients, the
  # updated state); anything at all: keep everything but the step counter.
  bad = jnp.stack(
    [
      ~_all_finite(batch["image"]),
      ~jnp.isfinite(loss),
      ~_all_finite(grads),
      ~_all_finite((updated.params, updated.opt_state, updated.batch_stats)),
    ]
  ).astype(jnp.int32)
  bad = jax.lax.pmax(bad, axis_name)
  kind = jnp.sum(bad * jnp.asarray([1, 2, 4, 8], jnp.int32))
  finite = kind == 0
  new_state = jax.tree.map(
    lambda new, old: jnp.where(finite, new, old), updated, state.replace(step=updated.step)
  )
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  metrics = jax.lax.pmean({"loss": loss, "accuracy": accuracy}, axis_name)
  metrics["lr"] = learning_rate_fn(step)
  metrics["lambda"] = momentum_fn(step)
  metrics["stop"] = jax.lax.psum(stop, axis_name)
  metrics["nonfinite"] = 1 - finite.astype(jnp.int32)
  metrics["nonfinite_kind"] = kind
  return new_state, metrics


def eval_step(
  variables: dict, batch: dict, *, apply_fn: Callable, axis_name: str | tuple[str, ...] = AXIS
) -> dict:
  """Sums of loss, correct predictions and valid examples over every device (``psum``).

  ``batch["mask"]`` marks the real examples of a padded last batch.
  """
  logits = apply_fn(variables, batch["image"], train=False, step=None)
  mask = batch["mask"].astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  return jax.lax.psum(
    {"loss": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)},
    axis_name,
  )
