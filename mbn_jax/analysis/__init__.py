"""Analysis tools: capture per-layer batch statistics and measure BN/MBN noise.

* :mod:`.capture` — records, for every batch-statistics norm layer, the batch
  mean/variance of its input during a training ``apply`` (off by default:
  nothing is recorded, traced or computed unless you enter the context).
* :mod:`.noise_measure` — the measured ξ_μ, ξ_σ of Section 3-4 from recorded
  statistics, next to what :mod:`mbn_jax.noise` predicts.
* :mod:`.plots` — the paper's Fig. 1 and a measured-vs-predicted noise plot.
"""

from mbn_jax.analysis.capture import NORM_STATS, capture_norm_statistics, collect
from mbn_jax.analysis.noise_measure import LayerNoise, measure_noise, noise_table

__all__ = [
  "NORM_STATS",
  "capture_norm_statistics",
  "collect",
  "LayerNoise",
  "measure_noise",
  "noise_table",
]
