"""A one-minute tour of mbn_jax: ``python -m mbn_jax.demo``.

Prints the MBN schedules (Eqs. 11-12) for a tiny per-device batch, the noise
they leave (Section 4, corrected Eq. 10), and runs the layer in a jitted
training loop, showing that the step travels as data (one compilation).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import mbn_jax
from mbn_jax import noise


def main(batch_size: int = 2, total_epochs: int = 10, steps_per_epoch: int = 20) -> None:
  m, T = batch_size, total_epochs
  tau = mbn_jax.inference_momentum(m)
  print(f"Momentum Batch Normalization at m = {m} images per device, T = {T} epochs, m0 = 32")
  print(f"inference momentum τ = 0.85^(m/32) = {tau:.4f} (weight on the old value)\n")
  print(" epoch t   λ(t)    Var ξ_μ   BN-equivalent batch")
  for t in range(1, T + 1):
    lam = float(
      mbn_jax.train_momentum(
        (t - 1) * steps_per_epoch, batch_size=m, total_epochs=T, steps_per_epoch=steps_per_epoch
      )
    )
    print(
      f"  {t:5d}   {lam:.4f}   {float(noise.mean_noise_variance(m, lam)):.4f}"
      f"    {float(noise.equivalent_batch_size(m, lam)):8.1f}"
    )

  layer = mbn_jax.MomentumBatchNorm(total_epochs=T, steps_per_epoch=steps_per_epoch)
  key = jax.random.key(0)
  x = jax.random.normal(key, (m, 8, 8, 4)) * 3 + 2
  variables = layer.init(key, x, use_running_average=False)
  compilations = []

  @jax.jit
  def train_step(variables, x, step):
    compilations.append(1)
    y, updates = layer.apply(
      variables, x, use_running_average=False, step=step, mutable=["batch_stats"]
    )
    return {**variables, **updates}, y

  for step in range(T * steps_per_epoch):
    x = jax.random.normal(jax.random.fold_in(key, step), (m, 8, 8, 4)) * 3 + 2
    variables, y = train_step(variables, x, jnp.int32(step))
  stats: dict[str, Any] = dict(variables["batch_stats"])
  print(f"\nafter {T * steps_per_epoch} jitted steps ({len(compilations)} compilation):")
  print(f"  inference mean {jnp.round(stats['mean'], 2)} (population mean 2.0)")
  print(f"  inference var  {jnp.round(stats['var'], 2)} (population var 9.0)")
  left = tau ** (T * steps_per_epoch)
  print(
    f"  (still converging: τ^{T * steps_per_epoch} = {left:.2f} of the initial mean 0 / var 1"
    " remains; that is what a large τ at small m means)"
  )
  y_eval: jax.Array = layer.apply(variables, x, use_running_average=True)  # pyright: ignore[reportAssignmentType]
  print(f"  eval output mean {float(y_eval.mean()):+.3f}, std {float(y_eval.std()):.3f}")


if __name__ == "__main__":
  main()
