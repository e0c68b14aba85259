r"""The noise model of BN and MBN (Sections 3-4 of Yong et al., ECCV 2020).

For one channel whose activations are i.i.d. N(μ, σ²), a mini-batch of m
samples with mean μ_B and *biased* variance σ²_B defines (Eq. 2)

    ξ_μ = (μ − μ_B) / σ ~ N(0, 1/m),        ξ_σ = σ²_B / σ² ~ χ²(m−1) / m,

and BN's output is x̂ = (x̃ + ξ_μ)/√ξ_σ with x̃ = (x − μ)/σ (Eq. 3).
MBN replaces μ_B, σ²_B by their exponential moving averages with momentum λ
(weight on the *old* value, Eq. 8); at stationarity (Eqs. 9-10) the noises
become the weighted sums (1 − λ) Σ_k λ^k ξ_k of independent per-batch noises.

Every function returns the exact value under this model; each is checked
against a Monte Carlo estimate in ``tests/test_noise.py``. Two of the paper's
printed formulas disagree with Monte Carlo (Eq. 4 and the ξ_μ part of Eq. 10);
the docstrings below say what is printed, what is true, and why.

All functions accept Python numbers or arrays and return JAX arrays (float32
unless x64 is enabled).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import gammaln

__all__ = [
  "mean_noise_variance",
  "variance_noise_mean",
  "variance_noise_variance",
  "bn_output_moments",
  "equivalent_batch_size",
  "stationary_weight_sum_of_squares",
]


def _check_momentum(momentum):
  m = jnp.asarray(momentum, jnp.result_type(float))
  try:
    bad = bool(jnp.any((m < 0) | (m >= 1)))
  except Exception:  # traced: cannot check, documented precondition.
    bad = False
  if bad:
    raise ValueError(f"momentum must lie in [0, 1) (weight on the old value), got {momentum}.")
  return m


def _check_batch_size(batch_size, minimum=1):
  m = jnp.asarray(batch_size, jnp.result_type(float))
  try:
    bad = bool(jnp.any(m < minimum))
  except Exception:
    bad = False
  if bad:
    raise ValueError(f"batch_size must be >= {minimum}, got {batch_size}.")
  return m


def stationary_weight_sum_of_squares(momentum):
  r"""Σ_k w_k² for the EMA weights w_k = (1 − λ) λ^k, i.e. (1 − λ)/(1 + λ).

  This is the factor by which an exponential moving average with momentum λ
  (weight on the old value) shrinks the variance of i.i.d. inputs:
  Var[(1 − λ) Σ λ^k ξ_k] = (1 − λ)²/(1 − λ²) · Var ξ = (1 − λ)/(1 + λ) · Var ξ.
  """
  lam = _check_momentum(momentum)
  return (1.0 - lam) / (1.0 + lam)


def mean_noise_variance(batch_size, momentum=0.0):
  r"""Var ξ_μ: the variance of the additive (mean) noise.

  BN (``momentum=0``), Eq. 2: Var ξ_μ = 1/m.

  MBN at stationarity (``momentum=λ``): Var ξ_μ = (1 − λ) / ((1 + λ) m).

  **The paper's Eq. 10 prints N(0, (1 − λ)/m); that is wrong.** From Eq. 9,
  μ_M = (1 − λ) Σ_k λ^k μ_{B,k} with independent batches, so
  Var μ_M = (1 − λ)² Σ_k λ^{2k} σ²/m = (1 − λ)²/(1 − λ²) · σ²/m
  = (1 − λ)/(1 + λ) · σ²/m. (The paper applies the factor (1 − λ)/(1 + λ)
  correctly to Var ξ_σ in the same section but drops it for ξ_μ.) Monte Carlo
  agrees with this value, not with the printed one: at m = 4, λ = 3/4 the
  printed formula gives 1/16, the truth is 1/28.
  """
  m = _check_batch_size(batch_size)
  return stationary_weight_sum_of_squares(momentum) / m


def variance_noise_mean(batch_size):
  r"""E ξ_σ = (m − 1)/m (Eq. 2; the same for MBN at stationarity, Eq. 10).

  ξ_σ = σ²_B/σ² ~ χ²(m − 1)/m because σ²_B is the *biased* batch variance;
  the EMA of MBN has weights summing to one, so its mean is unchanged.
  """
  m = _check_batch_size(batch_size)
  return (m - 1.0) / m


def variance_noise_variance(batch_size, momentum=0.0):
  r"""Var ξ_σ: the variance of the multiplicative (variance) noise.

  BN (Eq. 2): Var ξ_σ = 2(m − 1)/m². MBN at stationarity (Eq. 10):
  Var ξ_σ = (1 − λ)/(1 + λ) · 2(m − 1)/m². Both printed formulas agree with
  Monte Carlo.
  """
  m = _check_batch_size(batch_size)
  return stationary_weight_sum_of_squares(momentum) * 2.0 * (m - 1.0) / m**2


def bn_output_moments(x_tilde, batch_size):
  r"""Mean and variance of BN's output x̂ = (x̃ + ξ_μ)/√ξ_σ (Eqs. 2-4).

  Under the model of Eq. 3, with ξ_μ ~ N(0, 1/m) and ξ_σ ~ χ²(m − 1)/m
  independent (as they are for Gaussian samples):

  .. math::

      E[x̂] = x̃ \sqrt{m/2}\; Γ((m−2)/2) / Γ((m−1)/2)            (m > 2)

      Var[x̂] = \frac{m}{m−3}\,(x̃² + 1/m) − E[x̂]²                (m > 3)

  derived from E[ξ_σ^{−1/2}] = √m · E[(χ²_{m−1})^{−1/2}]
  = √m Γ((m−2)/2) / (√2 Γ((m−1)/2)) and E[1/ξ_σ] = m/(m − 3).

  **The paper's Eq. 4 is wrong on both counts.** It prints
  E[x̂] = x̃ √((m−1)/2 · Γ((m−2)/2)/Γ((m−1)/2)) — the noncentral-t mean,
  which belongs to a t statistic built from the *unbiased* variance, and with
  the square root misplaced (as printed it grows like m^{1/4}) — and
  Var[x̂] = (1/m)((m−1)/(m−3)(1 + x̃²) − E[x̂]²), which mixes that
  t-parametrisation with an extra 1/m. Monte Carlo of the model above agrees
  with the formulas here (``tests/test_noise.py``).

  Undefined moments are reported, not faked: the mean is ``nan`` for m ≤ 2
  (E[ξ_σ^{−1/2}] diverges) and the variance is ``inf`` for m ≤ 3
  (E[1/ξ_σ] diverges).

  Note: this is the paper's idealised model, in which the normalised sample
  x is independent of the batch statistics. In a real BN layer x is itself
  one of the m batch members, which bounds ``|x̂| ≤ √(m − 1)``.

  Args:
    x_tilde: the population-normalised input x̃ = (x − μ)/σ (array-like).
    batch_size: m.

  Returns:
    ``(mean, variance)`` arrays broadcast from ``x_tilde`` and ``batch_size``.
  """
  m = _check_batch_size(batch_size, minimum=2)
  x = jnp.asarray(x_tilde, jnp.result_type(float))
  safe_m = jnp.where(m > 3, m, 4.0)
  inv_sqrt_moment = jnp.sqrt(safe_m / 2.0) * jnp.exp(
    gammaln((safe_m - 2.0) / 2.0) - gammaln((safe_m - 1.0) / 2.0)
  )
  # m = 3: E[(χ²_2)^{-1/2}] = Γ(1/2)/(√2 Γ(1)) = √(π/2), so E ξ_σ^{-1/2} = √(3π/2).
  inv_sqrt_moment = jnp.where(m == 3, jnp.sqrt(1.5 * jnp.pi), inv_sqrt_moment)
  mean = jnp.where(m > 2, x * inv_sqrt_moment, jnp.nan)
  second = (x**2 + 1.0 / safe_m) * safe_m / (safe_m - 3.0)
  var = jnp.where(m > 3, second - mean**2, jnp.inf)
  return mean, var


def equivalent_batch_size(batch_size, momentum):
  r"""The BN batch size whose mean noise equals MBN's at momentum λ.

  Solving 1/m_eq = (1 − λ)/((1 + λ) m) gives m_eq = m (1 + λ)/(1 − λ).

  The paper's example (Section 4.1: "batch size 4 with λ = 3/4 has the noise
  level of batch size 16") uses the printed, incorrect Var ξ_μ = (1 − λ)/m,
  i.e. m_eq = m/(1 − λ). The true equivalent size is larger: 28 there. The
  same m_eq also equates Var ξ_σ to leading order in 1/m.
  """
  m = _check_batch_size(batch_size)
  lam = _check_momentum(momentum)
  return m * (1.0 + lam) / (1.0 - lam)
