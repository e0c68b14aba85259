r"""Measure the noise each normalization layer injects, on a trained network.

    python -m tools.noise_probe --workdirs workdirs/cpu_repro/bn-m2-s0,workdirs/cpu_repro/mbn-m2-s0 \
        --out docs/results/noise --steps 1000

For each workdir (a finished ``python -m train`` run with norm ``bn`` or
``mbn``), restores the last checkpoint and replays ``--steps`` training
batches (the same augmented data order as epoch 1 of training) through the
network **in training mode with the parameters frozen**, as in the last
epoch of training once the learning rate has decayed. Every batch-norm layer's
input statistics are recorded (:mod:`mbn_jax.analysis.capture`); the
statistics the layer normalized with are μ_B, σ²_B for BN and MBN's training
moving averages (Eq. 8, λ at its final value) for MBN. Per layer, the
measured Var ξ_μ, E ξ_σ, Var ξ_σ against the population statistics of the
replayed epoch are tabulated next to :mod:`mbn_jax.noise`'s prediction for the
same m and λ (``noise.md``, ``noise.png``), and the first norm layer's channel
0 is drawn as the paper's Fig. 1 (``fig1_<run>.png``).

Run it from the directory the training ran in (dataset paths in the saved
config may be relative).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from mbn_jax import analysis
from mbn_jax.analysis import plots
from tools.finished_run import load_run

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list("workdirs", None, "Finished bn/mbn training workdirs.", required=True)
  flags.DEFINE_string(
    "out", None, "Output directory (noise.md, noise.png, fig1_*.png).", required=True
  )
  flags.DEFINE_integer("steps", 1000, "Training batches to replay per run.")
  flags.DEFINE_integer("skip", 100, "Leading replayed steps to drop (MBN's EMA warm-up).")
  flags.DEFINE_string(
    "fig1_layer",
    "",
    "Norm layer path for Fig. 1 (default: the stem's norm, "
    "i.e. the first norm of the network, else the first in sorted order).",
  )


def probe_run(workdir: str, steps: int, skip: int, fig1_layer: str = ""):
  """Replays ``steps`` batches of a finished run; returns (LayerNoise rows, fig-1 data)."""
  run = load_run(workdir)
  config, caps = run.config, run.capabilities
  # The probe measures the noise of what training normalizes with: the batch's own
  # statistics (BN) or their moving averages (MBN's training statistics).
  if caps.normalizer not in ("batch", "moving"):
    raise ValueError(
      f"{workdir}: the noise probe needs a norm that normalizes with its batch statistics or "
      f"with their moving averages (bn, mbn), not {config.norm!r} ({caps.normalizer})."
    )
  # One device replays the run's statistics batch m·G (= m without shared statistics).
  m = run.replay_batch_size
  lam = run.final_lambda
  moving = caps.normalizer == "moving"

  @jax.jit
  def replay(batch_stats, images):
    with analysis.capture_norm_statistics():
      _, upd = run.model.apply(
        {"params": run.params, "batch_stats": batch_stats},
        images,
        train=True,
        step=jnp.int32(run.final_step),
        mutable=["batch_stats", analysis.NORM_STATS],
      )
    return upd["batch_stats"], upd[analysis.NORM_STATS]

  records = []
  batch_stats = run.batch_stats
  for images in run.train_images(m, config.seed, steps):  # epoch 1's data order
    batch_stats, sown = replay(batch_stats, images)
    rec = {}
    for path, st in analysis.collect(jax.device_get(sown)).items():
      node = batch_stats
      for part in path.split("/"):
        node = node[part]
      norm_mean = node["train_mean"] if moving else st["batch_mean"]
      norm_var = node["train_var"] if moving else st["batch_var"]
      rec[path] = (st["batch_mean"], st["batch_var"], np.asarray(norm_mean), np.asarray(norm_var))
    records.append(rec)
  n = len(records)

  name = pathlib.Path(workdir).name
  rows = []
  for path in records[0]:
    bm, bv, nm, nv = (np.stack([r[path][k] for r in records]) for k in range(4))
    skip_ = min(skip, n - 2)
    rows.append(
      analysis.measure_noise(
        f"{name}:{path}",
        bm,
        bv,
        batch_size=m,
        momentum=lam,
        norm_means=nm,
        norm_vars=nv,
        skip=skip_,
      )
    )
    if moving:  # the same layer's raw batch statistics (what BN would use)
      rows.append(
        analysis.measure_noise(f"{name}:{path} [batch stats]", bm, bv, batch_size=m, skip=skip_)
      )
  paths = list(records[0])
  if fig1_layer and fig1_layer not in paths:
    raise ValueError(f"--fig1_layer={fig1_layer!r} is not a norm layer of {workdir}: {paths}")
  first = fig1_layer or next((p for p in paths if "stem" in p), paths[0])
  fig1 = (
    np.stack([r[first][0] for r in records]),
    np.stack([r[first][1] for r in records]),
    m,
    f"{name}: {first}",
  )
  return rows, fig1


def main(argv):
  del argv
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  all_rows, shown = [], []
  for wd in FLAGS.workdirs:
    rows, (bm, bv, m, title) = probe_run(wd, FLAGS.steps, FLAGS.skip, FLAGS.fig1_layer)
    all_rows += rows
    main_rows = [r for r in rows if not r.layer.endswith("]")]
    shown += [main_rows[0], main_rows[len(main_rows) // 2], main_rows[-1]]  # first/middle/last
    plots.plot_batch_statistics(
      bm, bv, batch_size=m, title=title, path=out / f"fig1_{pathlib.Path(wd).name}.png"
    )
    print(analysis.noise_table(rows), flush=True)
  (out / "noise.md").write_text(analysis.noise_table(all_rows) + "\n")
  plots.plot_noise(shown, path=out / "noise.png")
  print(f"wrote {out}/noise.md, noise.png and fig1_*.png")


def cli():
  """The ``mbn-noise-probe`` console script (``python -m tools.noise_probe``)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
