"""Momentum Batch Normalization (Yong et al., ECCV 2020): Eq. 8, Algorithm 1, Eqs. 11-12.

One home: the pure body :func:`momentum_batch_norm`, the ``flax.linen``
declaration :class:`MomentumBatchNorm` (``mbn_jax.MomentumBatchNorm``) and
its ``flax.nnx`` front end :class:`MomentumBatchNormNNX`
(``mbn_jax.nnx.MomentumBatchNorm``), which takes the same fields.

Momentum convention: λ and τ weight the **old** value (Flax's convention;
PyTorch's ``momentum`` is 1 − τ).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike

from mbn_jax import functional as F
from mbn_jax import schedules
from mbn_jax.norms.base import (
  BatchStatisticsFields,
  Capabilities,
  NNXNorm,
  linen_call,
  nnx_front_end,
  statistics_with_accumulator,
)

__all__ = [
  "MBN_STATISTICS",
  "MomentumBatchNorm",
  "MomentumBatchNormNNX",
  "check_tau",
  "mbn_statistics",
  "momentum_batch_norm",
  "momentum_normalizer_statistics",
  "resolve_train_momentum",
]

# MBN's four statistics and their initial values (inference mean/var: Flax's names).
MBN_STATISTICS = {
  "mean": jnp.zeros,
  "var": jnp.ones,
  "train_mean": jnp.zeros,
  "train_var": jnp.ones,
}


def check_tau(tau) -> None:
  """Raises a ValueError unless a fixed τ lies in [0, 1] (the weight on the old value)."""
  if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not 0 <= float(tau) <= 1:
    raise ValueError(
      f"tau (flax.nnx.BatchNorm's momentum: the inference statistics' momentum, weight on "
      f"the OLD value) must lie in [0, 1], or be None for Eq. 12's τ; got {tau!r}."
    )


def momentum_normalizer_statistics(
  batch_mean: ArrayLike,
  batch_var: ArrayLike,
  train_mean: ArrayLike,
  train_var: ArrayLike,
  momentum: ArrayLike,
) -> tuple[jax.Array, jax.Array]:
  r"""Eq. 8 / Algorithm 1: the statistics MBN normalizes with during training.

  μ ← λ μ + (1 − λ) μ_B,   σ² ← λ σ² + (1 − λ) σ²_B.

  The previous moving values ``train_mean``/``train_var`` are constants for
  this step (``stop_gradient``), so ``jax.grad`` through the result gives
  exactly the paper's Eq. 13: the gradient flows only through the current
  batch statistics, scaled by (1 − λ). λ weights the *old* value.

  Returns:
    ``(mean, var)``: both the normalizer and the new training moving values.
  """
  lam = jnp.asarray(momentum, jnp.result_type(batch_var))  # real, also for complex input
  mean = F.moving_average(jax.lax.stop_gradient(train_mean), batch_mean, lam)
  var = F.moving_average(jax.lax.stop_gradient(train_var), batch_var, lam)
  return jnp.asarray(mean), jnp.asarray(var)


def mbn_statistics(
  batch: F.Moments, train_mean, train_var, mean, var, lam, tau, *, guard_nonfinite: bool = True
):
  r"""One training step of MBN's statistics (Eq. 8 and Algorithm 1).

  * normalizer μ, σ² = λ·(train_mean, train_var) + (1 − λ)·(μ_B, σ²_B)
    (:func:`momentum_normalizer_statistics`; Eq. 13 under ``jax.grad``);
  * the new training statistics are μ, σ² (no gradient);
  * the new inference statistics are τ·(mean, var) + (1 − τ)·(μ_B, σ²_B).

  λ and τ weight the *old* value. Where :func:`mbn_jax.functional.updatable` is False (no
  valid entry, or non-finite batch statistics with ``guard_nonfinite``) the
  feature keeps all four statistics and normalizes with its previous
  training statistics. With λ = 0 (and finite batches) the normalizer is
  (μ_B, σ²_B) exactly: ``flax.linen.BatchNorm(momentum=τ)``.

  Returns:
    ``((norm_mean, norm_var), (new_train_mean, new_train_var), (new_mean, new_var))``.
  """
  ok = F.updatable(batch, guard_nonfinite)
  norm_mean, norm_var = momentum_normalizer_statistics(
    batch.mean, batch.var, train_mean, train_var, lam
  )
  norm_mean = jnp.where(ok, norm_mean, jax.lax.stop_gradient(train_mean))
  norm_var = jnp.where(ok, norm_var, jax.lax.stop_gradient(train_var))
  new_train = (jax.lax.stop_gradient(norm_mean), jax.lax.stop_gradient(norm_var))
  return (norm_mean, norm_var), new_train, F.guarded_moving_average(batch, mean, var, tau, ok)


def resolve_train_momentum(cfg, *, step, momentum, batch_size: int):
  """λ for this training step: ``momentum`` if given, else the schedule at ``step``.

  The schedule is ``cfg.momentum_schedule`` when set (any ``step -> λ``
  function; a :class:`mbn_jax.schedules.MomentumSchedule` must have been
  built for this layer's statistics batch ``batch_size``), else
  :func:`mbn_jax.schedules.momentum_schedule` of the layer's fields (Eq. 11).

  A concrete ``momentum`` outside [0, 1) or NaN raises a ValueError. A
  *traced* ``momentum`` cannot be checked without ``checkify``; it is made
  safe instead: NaN becomes 0 (plain BN for that step) and other values are
  clipped to [0, 1 − 2⁻²³] (the largest float32 below 1), so the moving
  statistics stay finite. ``step`` must be an integer scalar that fits in
  int32 (:func:`mbn_jax.functional.check_step`). Raises a ValueError that
  says what to pass when neither is available.
  """
  layer = type(cfg).__name__
  if momentum is not None:
    lam = jnp.asarray(momentum, jnp.result_type(float))
    if lam.ndim:
      raise ValueError(f"momentum must be a scalar λ in [0, 1), got shape {lam.shape}.")
    try:
      bad = not bool((lam >= 0) & (lam < 1))  # NaN compares False: rejected too
    except jax.errors.ConcretizationTypeError:  # traced: sanitize (documented above)
      return jnp.where(jnp.isnan(lam), 0.0, jnp.clip(lam, 0.0, 1.0 - 2.0**-23)).astype(lam.dtype)
    if bad:
      raise ValueError(
        f"momentum must lie in [0, 1) (weight on the old value; NaN is not allowed), got "
        f"{momentum}."
      )
    return lam
  F.check_step(step)
  if step is None:
    raise ValueError(
      f"{layer} in training mode needs the training step: call it with "
      "step=<0-based global step> (e.g. model.apply(..., step=state.step)), "
      "or pass a fixed training momentum with momentum=<λ in [0, 1)>. For "
      "inference, pass use_running_average=True."
    )
  schedule = cfg.momentum_schedule
  if schedule is None:
    if cfg.total_epochs is None or cfg.steps_per_epoch is None:
      missing = [
        n
        for n, v in (("total_epochs", cfg.total_epochs), ("steps_per_epoch", cfg.steps_per_epoch))
        if v is None
      ]
      raise ValueError(
        f"{layer} got step= but no {' and '.join(missing)}: Eq. 11 needs the "
        f"schedule length. Construct it with {layer}(total_epochs=T, "
        "steps_per_epoch=S, ...) or momentum_schedule=mbn_jax.momentum_schedule(...), or "
        "pass momentum=<λ> instead of step=."
      )
    schedule = schedules.momentum_schedule(
      batch_size=batch_size,
      total_epochs=cfg.total_epochs,
      steps_per_epoch=cfg.steps_per_epoch,
      ideal_batch_size=cfg.ideal_batch_size,
    )
  elif isinstance(schedule, schedules.MomentumSchedule) and schedule.batch_size != batch_size:
    raise ValueError(
      f"{layer}: momentum_schedule was built for a statistics batch of m={schedule.batch_size}, "
      f"but this call computes its statistics over m={batch_size} (per-device batch × devices "
      "that share statistics, or batch_size=): build the schedule with "
      f"batch_size={batch_size}."
    )
  return schedule(step)


def momentum_batch_norm(
  cfg,
  x,
  stats: dict,
  scale,
  bias,
  *,
  use_running_average: bool,
  step=None,
  momentum=None,
  mask=None,
  initializing: bool = False,
):
  """The whole MomentumBatchNorm layer as one pure function: the body of both front ends.

  ``cfg`` has the fields of :class:`MomentumBatchNorm` (the linen or the nnx
  module itself); ``stats`` holds ``mean``, ``var``, ``train_mean``,
  ``train_var`` (and the deferred accumulator when ``accumulation_steps`` >
  1). Training (Algorithm 1): μ_B, σ²_B (:func:`mbn_jax.functional.batch_moments`),
  λ from :func:`resolve_train_momentum`, τ = τ0^(m·k/m0) (Eq. 12) unless
  ``cfg.tau`` fixes it, then
  :func:`mbn_statistics` (Eq. 8). During ``init``
  (``initializing``) no devices are synchronized, λ may be omitted (0) and
  nothing is updated.

  Returns:
    ``(y, new_stats)``: the output (Eq. 8 normalization in training, the
    inference statistics otherwise) and the updated ``stats``.
  """
  feature_axes, reduction_axes = F.feature_and_reduction_axes(x.ndim, cfg.axis)
  if use_running_average:
    return F.normalize(
      x, stats["mean"], stats["var"], scale, bias, feature_axes, cfg.epsilon, cfg.dtype
    ), stats
  axis_name = None if initializing else cfg.axis_name
  batch = F.layer_batch_moments(cfg, x, reduction_axes, mask, initializing)
  m = F.statistics_batch_size(
    x, axis_name=axis_name, axis_index_groups=cfg.axis_index_groups, batch_size=cfg.batch_size
  )
  if initializing and step is None and momentum is None:
    lam = jnp.float32(0.0)
  else:
    lam = resolve_train_momentum(cfg, step=step, momentum=momentum, batch_size=m)
  k = cfg.accumulation_steps
  tau = (
    schedules.inference_momentum(m * k, ideal_batch_size=cfg.ideal_batch_size, tau0=cfg.tau0)
    if cfg.tau is None
    else cfg.tau
  )
  (mean, var), new_train, new_inference = mbn_statistics(
    batch,
    stats["train_mean"],
    stats["train_var"],
    stats["mean"],
    stats["var"],
    lam,
    tau,
    guard_nonfinite=cfg.guard_nonfinite,
  )
  y = F.normalize(x, mean, var, scale, bias, feature_axes, cfg.epsilon, cfg.dtype)
  if initializing:
    return y, stats
  new_stats = {"train_mean": new_train[0], "train_var": new_train[1]}
  if k > 1:  # deferred: the inference statistics move once per k micro-batches
    new_stats.update(
      F.deferred_moving_average(batch, stats, tau, k, F.updatable(batch, cfg.guard_nonfinite))
    )
  else:
    new_stats.update(mean=new_inference[0], var=new_inference[1])
  return y, new_stats


class MomentumBatchNorm(BatchStatisticsFields):
  r"""Momentum Batch Normalization (Yong et al., ECCV 2020), ``flax.linen``.

  Training (``use_running_average=False``), per feature, Algorithm 1:

  * μ_B, σ²_B: batch mean and *biased* variance over every axis but the
    feature axis (over all devices in ``axis_name`` when given);
  * μ ← λ μ + (1 − λ) μ_B,  σ² ← λ σ² + (1 − λ) σ²_B  (Eq. 8; stored as
    ``batch_stats/train_mean``, ``batch_stats/train_var``);
  * y = γ (x − μ)/√(σ² + ε) + β;
  * mean ← τ·mean + (1 − τ) μ_B,  var ← τ·var + (1 − τ) σ²_B (the inference
    statistics, ``batch_stats/mean`` and ``batch_stats/var``: the same names
    as ``flax.linen.BatchNorm``).

  Inference (``use_running_average=True``): y = γ (x − mean)/√(var + ε) + β.

  λ is ``momentum`` if given to ``__call__``, else ``momentum_schedule(step)``
  when that field is set (e.g. :func:`mbn_jax.momentum_schedule`, built once
  by a training loop that also logs λ), else :func:`mbn_jax.train_momentum`
  (Eq. 11) at ``step`` with m the per-device batch ``x.shape[0]`` (times the
  devices in ``axis_name`` — or in one group of ``axis_index_groups`` — when
  statistics are synchronized) unless ``batch_size`` overrides it. τ =
  :func:`mbn_jax.inference_momentum` (Eq. 12) of the same m. **Both λ and τ
  weight the old value** (Flax convention; PyTorch's ``momentum`` is 1 − τ).
  With λ = 0 the layer is exactly ``flax.linen.BatchNorm(momentum=τ)`` (fix τ
  with the field ``tau``), complex input included: a complex mean, the real
  variance ``E[|x − μ|²]``, as Flax's.

  The previous training statistics are constants for the step, so
  ``jax.grad`` yields the paper's Eq. 13 (no hand-written backward pass).

  During ``init`` nothing is updated and ``step`` may be omitted (λ = 0).

  Attributes:
    use_running_average: as in ``flax.linen.BatchNorm``; may also be given to
      ``__call__``.
    axis: the feature axis (or axes); default -1 (channels last).
    epsilon: added to the variance (default 1e-5, as in Flax).
    dtype: the output dtype (statistics are always float32 or wider).
    param_dtype: dtype of scale and bias.
    use_bias, use_scale, bias_init, scale_init: the affine part, as in Flax.
    axis_name: the ``pmap``/``shard_map`` axis to synchronize statistics over
      (None: per-device statistics, as in the paper).
    axis_index_groups: groups of devices within ``axis_name`` (under
      ``pmap``; on a Mesh, a second mesh axis names the groups instead).
    use_fast_variance: Var = E[x²] − E[x]² in one pass (as in Flax).
    force_float32_reductions: compute statistics in at least float32.
    total_epochs: T of Eq. 11 (needed with ``step`` unless ``momentum_schedule``).
    steps_per_epoch: optimizer steps per epoch (likewise).
    ideal_batch_size: m0 of Eqs. 11-12 (paper: 32).
    tau0: τ0 of Eq. 12, in (0, 1) (paper: 0.85).
    tau: a fixed τ in [0, 1] for the inference statistics instead of Eq. 12's
      τ0^(m·k/m0) (None, the default: Eq. 12) — what ``flax.linen.BatchNorm``
      calls ``momentum``; the nnx front end also takes it as ``momentum=``
      (``flax.nnx.BatchNorm``'s name). With λ = 0 (``momentum=0.0`` at the
      call) and ``tau=p`` the layer is ``flax.linen.BatchNorm(momentum=p)``.
    batch_size: overrides the m used for λ and τ (e.g. when the leading axis
      is not the example axis).
    momentum_schedule: a ``step -> λ`` function used instead of building
      Eq. 11 from the fields above (a :class:`mbn_jax.MomentumSchedule` is
      checked against this layer's m; any other callable is your own λ(t)).
    guard_nonfinite: keep a feature's four statistics unchanged when its
      batch statistics are NaN/±inf (default True; finite batches give
      bit-identical results either way). A feature with no valid entry
      (empty mask on every device) always keeps them.
    accumulation_steps: k for gradient accumulation's *deferred* statistics
      (default 1: every training call updates every statistic — also the
      right setting for *sequential* accumulation). With k > 1 the training
      statistics still follow Eq. 8 at every call (micro-batch), but the
      inference statistics move once per k calls, with the pooled moments of
      those k micro-batches and τ for m·k
      (:func:`mbn_jax.functional.deferred_moving_average`); the accumulator
      lives in ``batch_stats`` (``acc_mean``, ``acc_var``, ``acc_count``,
      ``acc_calls``), so a checkpoint taken mid-accumulation resumes exactly.
  """

  capabilities: ClassVar[Capabilities] = Capabilities(
    normalizer="moving",
    running_statistics=True,
    batch_statistics=True,
    precise_statistics=True,
    takes_step=True,
    momentum_schedule=True,
    training_statistics=True,
    deferred_accumulation=True,
    synchronizes=True,
    complex_input=True,
  )
  # flax.nnx.BatchNorm's momentum (the inference statistics' momentum) is τ here.
  flax_arguments: ClassVar[dict[str, str | None]] = {"momentum": "tau"}

  # The fields of BatchStatisticsFields (Flax's BatchNorm's but momentum, guard_nonfinite), and:
  total_epochs: int | None = None
  steps_per_epoch: int | None = None
  ideal_batch_size: int = 32
  tau0: float = 0.85
  tau: float | None = None
  batch_size: int | None = None
  momentum_schedule: Callable | None = None
  accumulation_steps: int = 1

  @classmethod
  def statistics_for(cls, cfg) -> dict:
    """The initial ``batch_stats`` of a layer with fields ``cfg``."""
    return statistics_with_accumulator(MBN_STATISTICS, cfg.accumulation_steps)

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates the MBN hyper-parameters, naming the offending argument."""
    for name in ("total_epochs", "steps_per_epoch", "batch_size"):
      if getattr(cfg, name) is not None:
        schedules.validate_positive_int(getattr(cfg, name), name)
    schedules.validate_positive_int(cfg.accumulation_steps, "accumulation_steps")
    schedules.validate_positive_int(cfg.ideal_batch_size, "ideal_batch_size")
    schedules.inference_momentum(1, ideal_batch_size=cfg.ideal_batch_size, tau0=cfg.tau0)
    if cfg.tau is not None:
      check_tau(cfg.tau)
    F.check_epsilon(cfg.epsilon)
    if cfg.momentum_schedule is not None and not callable(cfg.momentum_schedule):
      raise TypeError(
        f"momentum_schedule must be a step -> λ function (e.g. mbn_jax.momentum_schedule(...)), "
        f"got {cfg.momentum_schedule!r}."
      )

  @nn.compact
  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    momentum: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; see the class docstring for the equations.

    Args:
      x: the input; statistics are per feature along ``axis``.
      use_running_average: True for inference (stored ``mean``/``var``).
      step: 0-based global training step (int or traced array) for Eq. 11.
      momentum: a fixed training momentum λ in [0, 1), overriding ``step``.
      mask: boolean array broadcastable to ``x``: which entries enter the
        batch statistics.

    Returns:
      The normalized input, with the shape of ``x``.
    """
    return linen_call(
      self, momentum_batch_norm, x, use_running_average, step=step, momentum=momentum, mask=mask
    )


class MomentumBatchNormNNX(NNXNorm):
  r"""Momentum Batch Normalization for ``flax.nnx`` (``mbn_jax.nnx.MomentumBatchNorm``).

  The same equations, fields and arithmetic as :class:`MomentumBatchNorm`
  (both run :func:`momentum_batch_norm`): ``MomentumBatchNormNNX(num_features,
  *, rngs, **fields)`` with every field of the linen layer (same names and
  defaults; ``use_running_average`` defaults to False as in ``nnx.BatchNorm``).
  ``num_features`` is an int, or one int per feature axis for a tuple
  ``axis``. The four statistics are ``nnx.BatchStat`` variables ``mean``,
  ``var`` (inference) and ``train_mean``, ``train_var`` (Eq. 8); λ and τ
  weight the old value. ``model.eval()`` / ``model.train()`` toggle
  ``use_running_average``. ``flax.nnx.BatchNorm``'s arguments are taken too:
  ``momentum=`` here is τ (the field ``tau``: the inference statistics'
  momentum, as in Flax), while ``momentum=`` of ``__call__`` is λ;
  ``promote_dtype``, ``scale_metadata``, ``bias_metadata`` as in Flax.
  """

  linen = MomentumBatchNorm
  body = staticmethod(momentum_batch_norm)

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    momentum: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; arguments as in :class:`MomentumBatchNorm`."""
    return nnx_front_end(self, x, use_running_average, step=step, momentum=momentum, mask=mask)
