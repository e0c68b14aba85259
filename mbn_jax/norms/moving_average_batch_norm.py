"""Moving Average Batch Normalization (MABN; Yan, Wan, Zhang, Zhang, Wei, Sun, ICLR 2020).

One home: the pure body :func:`moving_average_batch_norm`, its backward pass
:func:`mabn_normalize` (a ``jax.custom_vjp``), the ``flax.linen`` declaration
:class:`MovingAverageBatchNorm` (``make_norm('mabn')``) and its ``flax.nnx``
front end :class:`MovingAverageBatchNormNNX` (``mbn_jax.nnx.MovingAverageBatchNorm``).

MABN, as the reference code computes it (``MABN.py`` of the authors'
repository megvii-model/MABN; where the paper and the code differ this module
follows the code), per channel, **per device** (it never communicates), at
training iteration t = 1, 2, ... (its own counter ``iters``, one per training
call), with K = ``buffer_size`` buffered iterations (the reference's
``real_B // B``: 16 at m = 2 for m0 = 32):

Forward (training)::

  χ_t = mean over (N, H, W) of x²                (no mean subtraction)
  buffer_x2[t mod K] ← χ_t
  v = χ_t                          while warming up: t ≤ K or t < warmup_iters
    = mean(buffer_x2)              after (a simple moving average of K iterations)
  z = x / √(v + ε)
  r = √(v + ε) / √(running_var + ε), held at 1 while t ≤ max(r_clip_start, warmup_iters),
      clipped to [1/r_clip, r_clip] after
  y = γ · r · z + β
  running_var ← momentum · running_var + (1 − momentum) · v     (from 1)

Backward (v and r are constants)::

  g = ∂L/∂y · γ · r
  ψ_t = mean over (N, H, W) of g · z
  buffer_gz[t mod K] ← ψ_t
  ψ̄ = ψ_t while warming up, else mean(buffer_gz)
  ∂L/∂x = (g − z · ψ̄) / √(v + ε)

Inference: y = γ · x / √(running_var + ε) + β.

**The backward pass is the method's definition, not a shortcut.** ψ̄ mixes the
current iteration's ψ_t with those of K − 1 earlier iterations (computed with
earlier weights and inputs), so ∂L/∂x above is not the gradient of any
function of x: :func:`mabn_normalize` is a ``jax.custom_vjp`` for that reason
(MBN, by contrast, gets its backward pass from ``jax.grad``). During warm-up
(v = χ_t, ψ̄ = ψ_t, r = 1) it *is* the gradient of y = γ·x/√(mean(x²) + ε) + β,
which the tests check. ψ_t is born in the backward pass, so it reaches
``buffer_gz`` through a probe (:mod:`mbn_jax.backward_statistics`): the
training step must differentiate with respect to the ``backward_probes``
collection too and fold the cotangents back.

Differences from the paper: the paper (Sec. 4) also subtracts a moving mean
of x and of g; the reference code — and this module — normalize without a
mean (the "modified normalization form", with centred convolution weights,
:func:`mbn_jax.models.centered_conv`, making the mean close to zero instead).
The paper's renormalization r uses the EMA of the second moment, as here.

Momentum convention: ``momentum`` weights the **old** value (the reference's
0.98 is the same number in both conventions' sense here: running_var ←
0.98·running_var + 0.02·v; PyTorch-style ``momentum=p`` would be 1 − p).
"""

from __future__ import annotations

import functools
import numbers
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
)

__all__ = [
  "MABN_DEFAULTS",
  "MovingAverageBatchNorm",
  "MovingAverageBatchNormNNX",
  "mabn_normalize",
  "mabn_statistics",
  "moving_average_batch_norm",
]

# The reference's defaults (MABN.py): momentum 0.98, warm-up 100 iterations, r held at 1
# for max(1000, warm-up) iterations and clipped to [1/5, 5] after; K = real_B // B.
MABN_DEFAULTS = {
  "buffer_size": 16,
  "momentum": 0.98,
  "warmup_iters": 100,
  "r_clip": 5.0,
  "r_clip_start": 1000,
}


def mabn_statistics(cfg) -> dict:
  """MABN's ``batch_stats`` and their initial values (the reference's buffers' names).

  ``running_var`` (the EMA of v, from 1; the inference statistic — a second
  moment, not a variance), ``buffer_x2`` and ``buffer_gz`` (K × features:
  the forward χ and backward ψ of the last K iterations, from 0) and
  ``iters`` (int32 scalar: training iterations so far).
  """
  k = cfg.buffer_size
  return {
    "running_var": jnp.ones,
    "buffer_x2": lambda shape, dtype: jnp.zeros((k,) + tuple(shape), dtype),
    "buffer_gz": lambda shape, dtype: jnp.zeros((k,) + tuple(shape), dtype),
    "iters": lambda shape, dtype: jnp.zeros((), jnp.int32),
  }


def _feature_broadcast(v, x_ndim: int, feature_axes) -> jax.Array:
  shape = [1] * x_ndim
  for i, ax in enumerate(feature_axes):
    shape[ax] = v.shape[i]
  return v.reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def mabn_normalize(x, v, r, buffer_gz, slot, warm, epsilon: float, feature_axes: tuple):
  """r·z with z = x/√(v + ε), and MABN's backward pass (a ``jax.custom_vjp``: see the module).

  Args:
    x: the input. v, r: the normalizer and the renormalization factor
      (feature shape; constants: no gradient flows to them). buffer_gz: the
      ψ of the last K iterations, ``[K, *features]``. slot: one-hot ``[K]``
      (float) of this iteration's buffer slot t mod K. warm: 1.0 while
      warming up (ψ̄ = ψ_t), 0.0 after (ψ̄ = the buffer's mean).

  The cotangent it returns for ``buffer_gz`` is the buffer's **update**
  (ψ_t written into its slot, minus the old value there): add it to the
  statistic (:func:`mbn_jax.fold_backward_statistics`). ``buffer_gz`` is
  passed as the layer's probe (zero) *plus* the statistic, so that its
  cotangent reaches the probe.
  """
  return _mabn_forward(x, v, r, epsilon, feature_axes)[0]


def _mabn_forward(x, v, r, epsilon, feature_axes):
  b = functools.partial(_feature_broadcast, x_ndim=x.ndim, feature_axes=feature_axes)
  z = x.astype(jnp.float32) * jax.lax.rsqrt(b(v) + epsilon)
  return (b(r) * z).astype(x.dtype), z


def _mabn_fwd(x, v, r, buffer_gz, slot, warm, epsilon, feature_axes):
  y, z = _mabn_forward(x, v, r, epsilon, feature_axes)
  return y, (z, v, r, buffer_gz, slot, warm)


def _mabn_bwd(epsilon, feature_axes, res, ct):
  z, v, r, buffer_gz, slot, warm = res
  b = functools.partial(_feature_broadcast, x_ndim=z.ndim, feature_axes=feature_axes)
  reduction_axes = tuple(a for a in range(z.ndim) if a not in feature_axes)
  g = ct.astype(jnp.float32) * b(r)
  psi = jnp.mean(g * z, axis=reduction_axes)
  onehot = slot.reshape((-1,) + (1,) * psi.ndim)
  old = jnp.sum(onehot * buffer_gz, axis=0)
  update = onehot * (psi - old)  # the buffer's change: ψ_t into slot t mod K
  psi_bar = jnp.where(warm > 0, psi, jnp.mean(buffer_gz + update, axis=0))
  gx = (g - z * b(psi_bar)) * jax.lax.rsqrt(b(v) + epsilon)
  zeros = jnp.zeros_like
  return gx.astype(ct.dtype), zeros(v), zeros(r), update, zeros(slot), zeros(warm)


mabn_normalize.defvjp(_mabn_fwd, _mabn_bwd)


def moving_average_batch_norm(
  cfg,
  x,
  stats: dict,
  scale,
  bias,
  *,
  use_running_average: bool,
  probes: dict | None = None,
  initializing: bool = False,
):
  """MABN as one pure function (the module docstring's equations). Returns ``(y, new_stats)``.

  ``cfg`` has the fields of :class:`MovingAverageBatchNorm`; ``probes``
  ``{"buffer_gz": zeros}`` carries ψ_t out of the backward pass
  (:mod:`mbn_jax.backward_statistics`; None: a zero constant, ψ not folded).
  """
  feature_axes, reduction_axes = F.feature_and_reduction_axes(x.ndim, cfg.axis)
  eps = cfg.epsilon
  if use_running_average:
    y = F.normalize(
      x,
      jnp.zeros_like(stats["running_var"]),
      stats["running_var"],
      scale,
      bias,
      feature_axes,
      eps,
      cfg.dtype,
    )
    return y, stats
  k = cfg.buffer_size
  t = stats["iters"] + 1  # the reference counts from 1
  x32 = x.astype(jnp.float32)
  chi = jax.lax.stop_gradient(jnp.mean(x32 * x32, axis=reduction_axes))
  slot = jax.nn.one_hot(t % k, k, dtype=jnp.float32)
  onehot = slot.reshape((-1,) + (1,) * chi.ndim)
  buffer_x2 = stats["buffer_x2"] * (1 - onehot) + onehot * chi
  warm = (t <= k) | (t < cfg.warmup_iters)
  v = jnp.where(warm, chi, jnp.mean(buffer_x2, axis=0))
  r = jnp.sqrt(v + eps) / jnp.sqrt(stats["running_var"] + eps)
  held = t <= max(cfg.r_clip_start, cfg.warmup_iters)
  r = jnp.where(held, jnp.ones_like(r), jnp.clip(r, 1.0 / cfg.r_clip, cfg.r_clip))
  probe = (probes or {}).get("buffer_gz", jnp.zeros_like(stats["buffer_gz"]))
  y = mabn_normalize(
    x, v, r, stats["buffer_gz"] + probe, slot, warm.astype(jnp.float32), eps, feature_axes
  )
  y = _affine(y, scale, bias, feature_axes, cfg.dtype)
  if initializing:
    return y, stats
  running_var = cfg.momentum * stats["running_var"] + (1 - cfg.momentum) * v
  return y, {
    "running_var": running_var,
    "buffer_x2": buffer_x2,
    "buffer_gz": stats["buffer_gz"],  # moved by the fold of the probe's cotangent
    "iters": t.astype(jnp.int32),
  }


def _affine(y, scale, bias, feature_axes, dtype):
  b = functools.partial(_feature_broadcast, x_ndim=y.ndim, feature_axes=feature_axes)
  args = [y]
  if scale is not None:
    y = y * b(scale)
    args.append(scale)
  if bias is not None:
    y = y + b(bias)
    args.append(bias)
  return jnp.asarray(y, dtype if dtype is not None else jnp.result_type(*args))


def check_mabn_fields(cfg) -> None:
  """Validates MABN's fields, naming the offending one and its allowed values."""
  F.check_epsilon(cfg.epsilon)
  schedules.validate_positive_int(cfg.buffer_size, "buffer_size")
  m = cfg.momentum
  if isinstance(m, bool) or not isinstance(m, numbers.Real) or not 0 <= float(m) < 1:
    raise ValueError(
      f"momentum must lie in [0, 1) (the weight on the OLD running_var; the reference "
      f"uses 0.98), got {m!r}."
    )
  for name in ("warmup_iters", "r_clip_start"):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
      raise ValueError(f"{name} must be a non-negative int (iterations), got {value!r}.")
  c = cfg.r_clip
  if isinstance(c, bool) or not isinstance(c, numbers.Real) or not float(c) >= 1:
    raise ValueError(
      f"r_clip must be a number >= 1 (r is clipped to [1/r_clip, r_clip]; the reference "
      f"uses 5), got {c!r}."
    )
  if getattr(cfg, "axis_name", None) is not None:
    raise ValueError(
      "MovingAverageBatchNorm never communicates: its statistics are per device (that is "
      f"the method). Leave axis_name=None, got {cfg.axis_name!r}; for shared statistics "
      "use BatchNorm or MomentumBatchNorm with axis_name."
    )


class MovingAverageBatchNorm(BatchStatisticsFields):
  """MABN (Yan et al., ICLR 2020), as the authors' reference code computes it; see the module.

  Training normalizes without a mean by v, the simple moving average of the
  second moment χ = mean(x²) over the last ``buffer_size`` iterations, and
  renormalizes by r = √(v+ε)/√(running_var+ε); its backward pass replaces
  the current mean(g·z) by its moving average too (a ``jax.custom_vjp``,
  :func:`mabn_normalize`; fold ``backward_probes``:
  :mod:`mbn_jax.backward_statistics`). Inference:
  y = γ·x/√(running_var+ε) + β. Statistics are per device (``axis_name``
  must stay None); ``step`` is accepted and ignored (MABN counts its own
  iterations in ``batch_stats/iters``, one per training call).

  Besides the fields of :class:`~mbn_jax.norms.base.BatchStatisticsFields`:

  Attributes:
    buffer_size: K, iterations averaged (the reference's ``real_B // B``:
      m0/m, 16 for m = 2 and m0 = 32). Default 16.
    momentum: running_var ← momentum·running_var + (1 − momentum)·v
      (weight on the OLD value). Default 0.98.
    warmup_iters: iterations (besides the first K) that normalize with the
      current χ_t and ψ_t. Default 100.
    r_clip: r is clipped to [1/r_clip, r_clip]. Default 5.
    r_clip_start: r is held at 1 for the first max(r_clip_start,
      warmup_iters) iterations. Default 1000 (the reference's constant).
  """

  capabilities: ClassVar[Capabilities] = Capabilities(
    normalizer="moving_average",
    running_statistics=True,
    batch_statistics=False,
    precise_statistics=False,
    backward_statistics=True,
  )
  backward_statistic_names: ClassVar[tuple[str, ...]] = ("buffer_gz",)
  # What nnx's promote_dtype sees as (mean, var): inference has no mean, and running_var.
  inference_statistics: ClassVar[tuple[str | None, str]] = (None, "running_var")
  option_aliases: ClassVar[dict[str, str]] = {"mabn_momentum": "momentum"}

  buffer_size: int = MABN_DEFAULTS["buffer_size"]
  momentum: float = MABN_DEFAULTS["momentum"]
  warmup_iters: int = MABN_DEFAULTS["warmup_iters"]
  r_clip: float = MABN_DEFAULTS["r_clip"]
  r_clip_start: int = MABN_DEFAULTS["r_clip_start"]

  @classmethod
  def statistics_for(cls, cfg) -> dict:
    """The initial ``batch_stats`` of a layer with fields ``cfg`` (:func:`mabn_statistics`)."""
    return mabn_statistics(cfg)

  @classmethod
  def check_fields(cls, cfg) -> None:
    """Validates the fields (:func:`check_mabn_fields`)."""
    check_mabn_fields(cfg)

  @nn.compact
  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    del step  # MABN counts its own iterations.
    _refuse_mask(mask)
    return linen_call(self, moving_average_batch_norm, x, use_running_average)


def _refuse_mask(mask) -> None:
  if mask is not None:
    raise ValueError(
      "MovingAverageBatchNorm does not take a mask (the reference averages over every "
      "entry): pass mask=None, or use BatchNorm/MomentumBatchNorm for masked statistics."
    )


class MovingAverageBatchNormNNX(NNXNorm):
  """MABN for ``flax.nnx`` (``mbn_jax.nnx.MovingAverageBatchNorm``): the linen fields and body.

  ``MovingAverageBatchNormNNX(num_features, *, rngs, **fields)``; statistics
  ``running_var``, ``buffer_x2``, ``buffer_gz``, ``iters`` as ``nnx.BatchStat``
  and the probe ``buffer_gz_probe`` (a
  :class:`~mbn_jax.backward_statistics.BackwardProbe`): differentiate with
  ``nnx.DiffState(0, (nnx.Param, BackwardProbe))`` and fold with
  :func:`mbn_jax.fold_backward_statistics_nnx`.
  """

  linen = MovingAverageBatchNorm
  body = staticmethod(moving_average_batch_norm)

  def __call__(
    self,
    x: ArrayLike,
    use_running_average: bool | None = None,
    *,
    step: ArrayLike | None = None,
    mask: ArrayLike | None = None,
  ) -> jax.Array:
    """Normalizes ``x``; arguments as in :class:`MovingAverageBatchNorm`."""
    del step
    _refuse_mask(mask)
    return nnx_front_end(self, x, use_running_average)
