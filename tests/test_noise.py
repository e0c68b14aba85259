"""Every formula of mbn_jax.noise against a Monte Carlo estimate.

The simulations are independent of the closed forms: they draw Gaussian
mini-batches, compute the biased batch statistics, run the EMA of Eq. 8 to
stationarity, and measure the moments directly. Tolerances are several
standard errors of the Monte Carlo estimate.
"""

import numpy as np
import pytest
from scipy.special import gamma

from mbn_jax import noise

RNG = np.random.default_rng(0)


def simulate_noise(m, lam, *, chains=20000, burn_in=None):
  """Stationary ξ_μ, ξ_σ of the EMA (momentum λ) of batch stats of N(0,1) batches."""
  burn_in = burn_in or (int(20 / (1 - lam)) if lam > 0 else 1)
  mu_m = np.zeros(chains)
  var_m = np.ones(chains)
  for _ in range(burn_in):
    x = RNG.standard_normal((chains, m))
    mu_b = x.mean(1)
    var_b = x.var(1)  # biased, as BN
    mu_m = lam * mu_m + (1 - lam) * mu_b
    var_m = lam * var_m + (1 - lam) * var_b
  return -mu_m, var_m  # ξ_μ = (μ − μ_M)/σ with μ = 0, σ = 1


@pytest.mark.parametrize("m", [2, 4, 16])
def test_bn_noise_moments(m):
  xi_mu, xi_sigma = simulate_noise(m, 0.0, chains=200000)
  assert xi_mu.var() == pytest.approx(float(noise.mean_noise_variance(m)), rel=0.02)
  assert xi_sigma.mean() == pytest.approx(float(noise.variance_noise_mean(m)), rel=0.01)
  assert xi_sigma.var() == pytest.approx(float(noise.variance_noise_variance(m)), rel=0.03)


@pytest.mark.parametrize("m,lam", [(2, 0.9), (4, 0.75), (8, 0.5)])
def test_mbn_stationary_noise_moments(m, lam):
  xi_mu, xi_sigma = simulate_noise(m, lam, chains=40000)
  var_mu = float(noise.mean_noise_variance(m, lam))
  assert xi_mu.var() == pytest.approx(var_mu, rel=0.04)
  assert xi_sigma.mean() == pytest.approx(float(noise.variance_noise_mean(m)), rel=0.01)
  assert xi_sigma.var() == pytest.approx(float(noise.variance_noise_variance(m, lam)), rel=0.05)
  # The paper's printed Eq. 10, (1 − λ)/m, is far off: Monte Carlo rejects it.
  printed = (1 - lam) / m
  assert abs(xi_mu.var() - printed) / printed > 0.2


def test_paper_example_equivalent_batch_size():
  # Section 4.1: m = 4, λ = 3/4 was said to match batch size 16; it matches 28.
  assert float(noise.equivalent_batch_size(4, 0.75)) == pytest.approx(28.0)
  xi_mu, _ = simulate_noise(4, 0.75, chains=40000)
  bn28, _ = simulate_noise(28, 0.0, chains=200000)
  assert xi_mu.var() == pytest.approx(bn28.var(), rel=0.05)
  assert xi_mu.var() == pytest.approx(1 / 28, rel=0.05)


@pytest.mark.parametrize("m", [5, 8, 32])
@pytest.mark.parametrize("x_tilde", [0.0, 0.7, -1.5])
def test_bn_output_moments_against_monte_carlo(m, x_tilde):
  n = 2_000_000
  xi_mu = RNG.standard_normal(n) / np.sqrt(m)
  xi_sigma = RNG.chisquare(m - 1, n) / m
  x_hat = (x_tilde + xi_mu) / np.sqrt(xi_sigma)
  mean, var = noise.bn_output_moments(x_tilde, m)
  se_mean = x_hat.std() / np.sqrt(n)
  assert float(mean) == pytest.approx(x_hat.mean(), abs=5 * se_mean + 1e-6)
  # Heavy tails (finite 4th moment needs m > 5): a looser relative check.
  assert float(var) == pytest.approx(x_hat.var(), rel=0.05 if m > 5 else 0.15)


def test_bn_output_moments_paper_eq4_disagrees():
  m, x_tilde = 8, 1.0
  mean, var = noise.bn_output_moments(x_tilde, m)
  printed_mean = x_tilde * np.sqrt((m - 1) / 2 * gamma((m - 2) / 2) / gamma((m - 1) / 2))
  printed_var = ((m - 1) / (m - 3) * (1 + x_tilde**2) - printed_mean**2) / m
  assert abs(printed_mean - float(mean)) > 0.05
  assert abs(printed_var - float(var)) > 0.05


def test_bn_output_moments_undefined_cases():
  mean, var = noise.bn_output_moments(1.0, 2)
  assert np.isnan(float(mean)) and np.isinf(float(var))
  mean3, var3 = noise.bn_output_moments(1.0, 3)
  assert np.isfinite(float(mean3)) and np.isinf(float(var3))
  # m = 3 mean: E[(χ²_2/3)^{-1/2}] by Monte Carlo.
  s = RNG.chisquare(2, 4_000_000) / 3
  assert float(mean3) == pytest.approx(np.mean(1 / np.sqrt(s)), rel=0.02)


def test_equivalent_batch_size_definition():
  for m, lam in [(2, 0.0), (2, 0.9375), (8, 0.5)]:
    eq = float(noise.equivalent_batch_size(m, lam))
    assert 1 / eq == pytest.approx(float(noise.mean_noise_variance(m, lam)), rel=1e-6)


def test_bad_arguments():
  with pytest.raises(ValueError, match="momentum"):
    noise.mean_noise_variance(4, 1.0)
  with pytest.raises(ValueError, match="momentum"):
    noise.variance_noise_variance(4, -0.1)
  with pytest.raises(ValueError, match="batch_size"):
    noise.mean_noise_variance(0)
  with pytest.raises(ValueError, match="batch_size"):
    noise.bn_output_moments(0.0, 1)
