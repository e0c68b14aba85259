r"""Measured noise of a normalization layer, Sections 3-4 of the paper.

Given, for one layer over one epoch (parameters nearly fixed, e.g. the last
epoch), the per-step batch statistics μ_B, σ²_B of its input and the
statistics μ_N, σ²_N it actually normalized with (μ_B, σ²_B for BN; the
training moving averages of Eq. 8 for MBN), the population statistics of the
epoch are estimated by pooling the batches,

    μ = mean_t μ_B,      σ² = mean_t σ²_B + var_t μ_B      (law of total variance),

and the noises are ξ_μ = (μ − μ_N)/σ and ξ_σ = σ²_N/σ² (Eqs. 2 and 10).
:func:`measure_noise` returns their moments, averaged over channels, next to
what :mod:`mbn_jax.noise` predicts for the same m and λ.

For convolutional layers the statistics pool m·H·W correlated positions, so
the effective sample size lies between m and m·H·W: the measured Var ξ_μ is
usually below the i.i.d. prediction 1/m, and this is what the measurement is
for.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mbn_jax import noise, precise

__all__ = ["LayerNoise", "measure_noise", "noise_table"]


@dataclasses.dataclass(frozen=True)
class LayerNoise:
  """Measured and predicted noise moments of one layer (channel averages)."""

  layer: str
  batch_size: int
  momentum: float
  steps: int
  var_xi_mu: float
  mean_xi_sigma: float
  var_xi_sigma: float
  predicted_var_xi_mu: float
  predicted_mean_xi_sigma: float
  predicted_var_xi_sigma: float

  @property
  def effective_batch_size(self) -> float:
    """The i.i.d. batch size whose Var ξ_μ equals the measured one."""
    lam = self.momentum
    return (1 - lam) / ((1 + lam) * self.var_xi_mu) if self.var_xi_mu > 0 else float("inf")


def measure_noise(
  layer: str,
  batch_means,
  batch_vars,
  *,
  batch_size: int,
  momentum: float = 0.0,
  norm_means=None,
  norm_vars=None,
  skip: int = 0,
) -> LayerNoise:
  """Measures ξ_μ, ξ_σ of one layer from per-step statistics.

  Args:
    layer: a name for the table.
    batch_means, batch_vars: (steps, C) batch statistics of the layer input.
    batch_size: m, for the prediction.
    momentum: λ the layer used (0 for BN), for the prediction.
    norm_means, norm_vars: (steps, C) statistics the layer normalized with;
      default: the batch statistics (BN).
    skip: leading steps to drop (e.g. while an EMA warms up).
  """
  bm = np.asarray(batch_means, np.float64)[skip:]
  bv = np.asarray(batch_vars, np.float64)[skip:]
  nm = bm if norm_means is None else np.asarray(norm_means, np.float64)[skip:]
  nv = bv if norm_vars is None else np.asarray(norm_vars, np.float64)[skip:]
  if bm.ndim != 2 or bm.shape != bv.shape or nm.shape != bm.shape or nv.shape != bm.shape:
    raise ValueError(
      f"statistics must all have shape (steps, channels); got {bm.shape}, {bv.shape}, "
      f"{nm.shape}, {nv.shape}."
    )
  if bm.shape[0] < 2:
    raise ValueError(f"need at least 2 steps after skip={skip}, got {bm.shape[0]}.")
  pooled = precise.pool_moments(bm, bv)  # law of total variance over the steps
  pop_mean = np.asarray(pooled.mean, np.float64)
  pop_var = np.asarray(pooled.var, np.float64)
  keep = pop_var > 1e-12  # dead channels (e.g. all-zero after ReLU) carry no noise
  if not keep.any():
    raise ValueError(f"layer {layer}: every channel has zero variance.")
  xi_mu = (pop_mean - nm) / np.sqrt(np.where(keep, pop_var, 1.0))
  xi_sigma = nv / np.where(keep, pop_var, 1.0)
  return LayerNoise(
    layer=layer,
    batch_size=int(batch_size),
    momentum=float(momentum),
    steps=int(bm.shape[0]),
    var_xi_mu=float(xi_mu.var(0)[keep].mean()),
    mean_xi_sigma=float(xi_sigma.mean(0)[keep].mean()),
    var_xi_sigma=float(xi_sigma.var(0)[keep].mean()),
    predicted_var_xi_mu=float(noise.mean_noise_variance(batch_size, momentum)),
    predicted_mean_xi_sigma=float(noise.variance_noise_mean(batch_size)),
    predicted_var_xi_sigma=float(noise.variance_noise_variance(batch_size, momentum)),
  )


def noise_table(rows: list[LayerNoise]) -> str:
  """A markdown table of measured vs predicted noise."""
  head = (
    "| layer | m | λ | Var ξ_μ measured | predicted | E ξ_σ measured | predicted "
    "| Var ξ_σ measured | predicted | effective m |\n|" + "---|" * 10
  )
  lines = [head]
  for r in rows:
    lines.append(
      f"| {r.layer} | {r.batch_size} | {r.momentum:.3f} | {r.var_xi_mu:.4f} | "
      f"{r.predicted_var_xi_mu:.4f} | {r.mean_xi_sigma:.3f} | {r.predicted_mean_xi_sigma:.3f} | "
      f"{r.var_xi_sigma:.4f} | {r.predicted_var_xi_sigma:.4f} | {r.effective_batch_size:.1f} |"
    )
  return "\n".join(lines)
