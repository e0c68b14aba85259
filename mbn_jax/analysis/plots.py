"""Plots: the paper's Fig. 1 and measured-vs-predicted noise (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np

try:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from scipy import stats
except ImportError as e:  # the optional extra
  raise ImportError(
    "mbn_jax.analysis.plots needs matplotlib and scipy: pip install 'mbn-jax[train]'."
  ) from e

__all__ = ["plot_batch_statistics", "plot_noise"]


def plot_batch_statistics(
  batch_means, batch_vars, *, batch_size: int, channel: int = 0, title: str = "", path=None
):
  """Fig. 1: one channel's batch means and variances over iterations, with histograms.

  The mean histogram is overlaid with the fitted Gaussian; the variance
  histogram with the scaled χ² of Eq. 2, σ²/m·χ²(m−1) with σ² fitted from the
  data, and with a scaled χ² whose degrees of freedom are fitted by moments
  (k = 2·mean²/var), which shows how many independent samples the batch
  statistics really pool (for convolutions, more than m).

  Returns the matplotlib Figure (saved to ``path`` when given).
  """
  mu = np.asarray(batch_means)[:, channel]
  var = np.asarray(batch_vars)[:, channel]
  m = batch_size
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [2, 1, 1]})
  it = np.arange(len(mu))
  axes[0].scatter(it, mu, s=4, c="tab:green", label="batch mean")
  axes[0].scatter(it, var, s=4, c="tab:blue", label="batch variance")
  axes[0].set_xlabel("iteration")
  axes[0].legend(loc="upper right")
  axes[0].set_title(title or f"channel {channel}, m = {m}")

  axes[1].hist(mu, bins=40, density=True, color="tab:green", alpha=0.6)
  grid = np.linspace(mu.min(), mu.max(), 200)
  axes[1].plot(grid, stats.norm.pdf(grid, mu.mean(), mu.std()), "k-", label="Gaussian fit")
  axes[1].set_title("batch mean")
  axes[1].legend(fontsize=8)

  axes[2].hist(var, bins=40, density=True, color="tab:blue", alpha=0.6)
  grid = np.linspace(max(var.min(), 1e-9), var.max(), 200)
  pop_var = var.mean() + mu.var()
  if m > 1:
    scale = pop_var / m  # σ²_B ~ σ²/m · χ²(m − 1)
    axes[2].plot(
      grid, stats.chi2.pdf(grid / scale, m - 1) / scale, "k--", label=f"σ²/m·χ²({m - 1}) (Eq. 2)"
    )
  k = 2 * var.mean() ** 2 / max(var.var(), 1e-30)
  s = var.var() / (2 * var.mean())
  axes[2].plot(grid, stats.chi2.pdf(grid / s, k) / s, "r-", label=f"χ² fit, dof = {k:.1f}")
  axes[2].set_title("batch variance")
  axes[2].legend(fontsize=8)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=120)
    plt.close(fig)
  return fig


def plot_noise(rows, *, path=None, title: str = "measured vs predicted noise"):
  """Bars of measured Var ξ_μ and Var ξ_σ per layer, with the predictions as lines.

  ``rows``: :class:`mbn_jax.analysis.LayerNoise` records (e.g. BN and MBN).
  """
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  labels = [f"{r.layer}\nm={r.batch_size} λ={r.momentum:.2f}" for r in rows]
  x = np.arange(len(rows))
  for ax, measured, predicted, name in (
    (axes[0], [r.var_xi_mu for r in rows], [r.predicted_var_xi_mu for r in rows], "Var ξ_μ"),
    (axes[1], [r.var_xi_sigma for r in rows], [r.predicted_var_xi_sigma for r in rows], "Var ξ_σ"),
  ):
    ax.bar(x, measured, color="tab:blue", alpha=0.7, label="measured")
    ax.scatter(x, predicted, color="k", marker="_", s=400, label="predicted (i.i.d. model)")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_title(name)
    ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=120)
    plt.close(fig)
  return fig
