r"""Re-evaluate finished runs with different normalization statistics.

    python -m tools.eval_stats --root workdirs/cpu_repro --out docs/results/cpu_repro/eval_stats.md

Asks *where the statistics come from* for a trained network, with its
parameters frozen. For every ``bn``/``mbn``/``brn`` workdir (a finished
``python -m train`` run, e.g. from :mod:`tools.sweep`), the last checkpoint's
validation accuracy is measured with three kinds of inference statistics:

* ``moving`` — the ``mean``/``var`` in ``batch_stats`` as training left them
  (BN and BReN: the EMA with ``bn_momentum``; MBN: the inference moving
  average with τ of Eq. 12). This is the accuracy the run reported.
* ``precise`` — "precise BN" population statistics
  (:func:`mbn_jax.precise_batch_stats`): the training set (with its
  augmentation) is passed through the frozen network in training mode in
  batches of ``--batch`` images, every norm layer normalizing with the batch
  statistics of that large batch (MBN at λ = 0, BReN with r = 1, d = 0), and
  each layer's population mean and variance are pooled over the batches
  (law of total variance). Removes both the EMA's lag behind the changing
  weights and the small-batch noise of the estimate.
* ``mbn_train`` (MBN only) — MBN's *training* moving averages
  ``train_mean``/``train_var`` (Eq. 8 with λ), the statistics the network was
  normalized with at the end of training.

If ``precise`` is far above ``moving``, the small-batch loss is in the
inference statistics (the estimate), not in what the network learned.

With ``--replays N`` it also asks *how much luck is in the moving average*:
the inference EMA is re-estimated N times at the frozen final weights, each
time from a fresh stream of training batches of the run's own size m
(different shuffles and augmentations), with the run's own inference
momentum (MBN: τ of Eq. 12; BN/BReN: ``bn_momentum``) and, for MBN, also with
the last epoch's training momentum λ(T) (Eq. 11), for enough steps that the
starting value's weight is below 1 %; the spread of the N accuracies is the
noise of that estimator alone (``replay_own``, ``replay_lambda``). For MBN,
``replay_train_mode`` collects the τ-EMA the way training does (every layer
in training mode at the last epoch's step, normalizing with its λ-averaged
training statistics; parameters frozen): the difference to ``replay_own``
is the effect of training-mode normalization on the statistics collected.

    python -m tools.eval_stats --workdirs workdirs/cpu_repro/mbn-m2-s0,... --replays 5 --out X.md

Run it from the directory the training ran in (dataset paths in the saved
config may be relative).
"""

from __future__ import annotations

import collections
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import traverse_util
from jax.typing import ArrayLike
from tqdm import tqdm

from mbn_jax import analysis, schedules
from mbn_jax import functional as F
from mbn_jax import norms as mbn_norms
from tools.finished_run import load_run
from tools.sweep import is_finished, parse_run_name

FLAGS = flags.FLAGS


def supports(norm: str) -> bool:
  """Norms whose inference statistics can be re-estimated (their class says so)."""
  caps = mbn_norms.capabilities_of(mbn_norms.norm_class(norm))
  return caps.running_statistics and caps.precise_statistics


def define_flags():
  flags.DEFINE_string("root", None, "A sweep root: its <norm>-m<m>-s<seed> workdirs are read.")
  flags.DEFINE_list("workdirs", [], "Workdirs to evaluate instead of (or besides) --root's.")
  flags.DEFINE_string("out", None, "Markdown file for the tables (printed as well).", required=True)
  flags.DEFINE_integer("batch", 250, "Images per batch for the precise statistics.")
  flags.DEFINE_integer("precise_batches", 20, "Training batches pooled for the precise statistics.")
  flags.DEFINE_integer(
    "replays", 0, "Re-estimations of the inference moving average at the frozen weights (0: none)."
  )


def replay_ema(start: dict, batch_stats_stream, momentum: float) -> dict:
  """Runs the layers' exponential moving average over a stream of per-layer batch statistics.

  For every layer ``path``: ``s ← momentum·s + (1 − momentum)·b``
  (:func:`mbn_jax.functional.moving_average`, the update the layers
  themselves use; ``momentum`` weights the *old* value, as λ and τ do) for
  each ``b = (batch_mean, batch_var)`` in turn, starting from ``start[path]``.
  After n batches the start keeps weight ``momentum**n`` and batch k (1-based)
  has weight ``(1 − momentum)·momentum**(n − k)``.
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"momentum must lie in [0, 1), got {momentum}.")
  out = {p: (np.asarray(m, np.float64), np.asarray(v, np.float64)) for p, (m, v) in start.items()}
  for stats in batch_stats_stream:
    for p, (bm, bv) in stats.items():
      m, v = out[p]
      out[p] = (  # NumPy float64 in, NumPy float64 out: asarray only tells the type checker
        np.asarray(F.moving_average(m, np.asarray(bm, np.float64), momentum)),
        np.asarray(F.moving_average(v, np.asarray(bv, np.float64), momentum)),
      )
  return out


def replay_steps(momentum: float, residual: float = 0.01) -> int:
  """Steps after which an EMA's starting value has weight ≤ ``residual``: ⌈log r / log momentum⌉."""
  if momentum <= 0.0:
    return 1
  return int(np.ceil(np.log(residual) / np.log(momentum)))


def _layer(batch_stats: dict, path: str) -> dict:
  """The ``batch_stats`` entry of the layer at ``path`` ("a/b/c")."""
  node = batch_stats
  for part in path.split("/"):
    node = node[part]
  return node


def _set_stats(batch_stats: dict, stats: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> dict:
  """A copy of ``batch_stats`` whose layers' ``mean``/``var`` are ``stats[path]``."""
  out = jax.tree.map(lambda x: x, batch_stats)
  for path, (mean, var) in stats.items():
    node = _layer(out, path)
    node["mean"] = jnp.asarray(mean, node["mean"].dtype)
    node["var"] = jnp.asarray(var, node["var"].dtype)
  return out


def _inference_stats(
  batch_stats: dict, key_mean="mean", key_var="var"
) -> dict[str, tuple[ArrayLike, ArrayLike]]:
  """{layer path: (batch_stats[key_mean], batch_stats[key_var])} of every layer that has them."""
  flat: dict[str, Any] = traverse_util.flatten_dict(batch_stats, sep="/")  # array leaves
  paths = [k.rsplit("/", 1)[0] for k in flat if k.endswith("/" + key_mean)]
  return {
    p: (flat[f"{p}/{key_mean}"], flat[f"{p}/{key_var}"]) for p in paths if f"{p}/{key_var}" in flat
  }


def evaluate_run(workdir: str, *, batch: int, precise_batches: int, replays: int = 0) -> dict:
  """Validation accuracy of ``workdir``'s last checkpoint under each kind of statistics."""
  run = load_run(workdir)
  config, caps = run.config, run.capabilities
  if not supports(config.norm):
    raise ValueError(
      f"{workdir}: eval_stats supports norms with re-estimable running statistics "
      f"({', '.join(n for n in mbn_norms.NORM_NAMES if supports(n))}), not {config.norm!r}."
    )
  precise_tree = run.precise_stats(batch=batch, num_batches=precise_batches)
  m = run.replay_batch_size  # the run's statistics batch m·G
  result = {
    "workdir": str(workdir),
    "norm": config.norm,
    "m": m,
    "seed": config.seed,
    "moving": run.accuracy(run.batch_stats),
    "precise": run.accuracy(precise_tree),
  }
  if caps.training_statistics:
    train_stats = _inference_stats(run.batch_stats, "train_mean", "train_var")
    result["mbn_train"] = run.accuracy(_set_stats(run.batch_stats, train_stats))
  if not replays:
    return result

  momenta = {
    "replay_own": (
      schedules.inference_momentum(m, ideal_batch_size=config.ideal_batch_size, tau0=config.tau0)
      if caps.momentum_schedule
      else float(config.bn_momentum)
    )
  }
  if caps.momentum_schedule:
    momenta["replay_lambda"] = run.final_lambda
  result["replay_momentum"] = momenta
  precise = _inference_stats(precise_tree)

  @jax.jit
  def batch_statistics(images):
    # step 0: MBN's λ(0) = 0 and BReN's (r, d) = (1, 0) at the start of any warm-up:
    # the layers normalize with the batch statistics they record.
    with analysis.capture_norm_statistics():
      _, upd = run.model.apply(
        {"params": run.params, "batch_stats": run.batch_stats},
        images,
        train=True,
        step=jnp.int32(0),
        mutable=["batch_stats", analysis.NORM_STATS],
      )
    return upd[analysis.NORM_STATS]

  def replay_images(r: int, momentum: float):
    """Replay r's stream of m-image training batches, long enough for ``momentum``."""
    return run.train_images(m, config.seed + 1000 + r, replay_steps(momentum))

  for name, momentum in momenta.items():
    accs = []
    for r in range(replays):
      batch_stream = (
        {
          p: (st["batch_mean"], st["batch_var"])
          for p, st in analysis.collect(jax.device_get(batch_statistics(images))).items()
        }
        for images in replay_images(r, momentum)
      )
      accs.append(
        run.accuracy(_set_stats(run.batch_stats, replay_ema(precise, batch_stream, momentum)))
      )
    result[name] = accs
  if caps.training_statistics:
    # The same τ-EMA, but collected the way training collects it: the layers
    # in training mode at the last epoch's step (each normalizing with its
    # λ-averaged training statistics, which keep updating), the layers' own
    # update of mean/var; only the parameters stay frozen.
    @jax.jit
    def train_mode_update(stats, images):
      _, upd = run.model.apply(
        {"params": run.params, "batch_stats": stats},
        images,
        train=True,
        step=jnp.int32(run.final_step),
        mutable=["batch_stats"],
      )
      return upd["batch_stats"]

    accs = []
    for r in range(replays):
      stats = precise_tree
      for images in replay_images(r, momenta["replay_own"]):
        stats = train_mode_update(stats, images)
      accs.append(run.accuracy(stats))
    result["replay_train_mode"] = accs
    result["replay_momentum"]["replay_train_mode"] = momenta["replay_own"]
  return result


def _std(values) -> float:
  """Sample standard deviation (ddof = 1, as tools.report uses); 0 for one value."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def tables(results: list[dict]) -> str:
  """Per-run table and a mean ± std (sample std over seeds) summary per (norm, m)."""
  kinds = ("moving", "precise", "mbn_train")
  lines = [
    "| norm | m | seeds | " + " | ".join(f"{k} acc %" for k in kinds) + " | precise − moving |",
    "|---|---:|---:|" + "---:|" * (len(kinds) + 1),
  ]
  groups = collections.defaultdict(list)
  for r in results:
    groups[(r["norm"], r["m"])].append(r)
  order = {n: i for i, n in enumerate(mbn_norms.NORM_NAMES)}
  for (norm, m), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
    cells = []
    for k in kinds:
      v = [100 * r[k] for r in rs if k in r]
      cells.append(f"{np.mean(v):.1f} ± {_std(v):.1f}" if v else "—")
    gain = [100 * (r["precise"] - r["moving"]) for r in rs]
    lines.append(
      f"| {norm} | {m} | {len(rs)} | " + " | ".join(cells) + f" | {np.mean(gain):+.1f} |"
    )
  lines += ["", "| run | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
  for r in results:
    lines.append(
      f"| {pathlib.Path(r['workdir']).name} | "
      + " | ".join(f"{100 * r[k]:.2f}" if k in r else "—" for k in kinds)
      + " |"
    )
  replayed = [r for r in results if "replay_own" in r]
  if replayed:
    lines += [
      "",
      "Inference EMA re-estimated at the frozen weights (accuracy % over replays, "
      "mean ± std [min, max]):",
      "",
      "| run | moving (as trained) | replay, own momentum | replay, λ(T) (MBN) "
      "| replay in training mode, τ (MBN) |",
      "|---|---:|---:|---:|---:|",
    ]
    for r in replayed:
      cells = []
      for k in ("replay_own", "replay_lambda", "replay_train_mode"):
        if k in r:
          v = 100 * np.asarray(r[k])
          cells.append(
            f"{v.mean():.1f} ± {_std(v):.1f} [{v.min():.1f}, {v.max():.1f}] "
            f"(momentum {r['replay_momentum'][k]:.4f}, {len(v)}×)"
          )
        else:
          cells.append("—")
      lines.append(
        f"| {pathlib.Path(r['workdir']).name} | {100 * r['moving']:.2f} | "
        + " | ".join(cells)
        + " |"
      )
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO.
  workdirs = list(FLAGS.workdirs)
  if FLAGS.root:
    for wd in sorted(pathlib.Path(FLAGS.root).iterdir()):
      try:
        norm = parse_run_name(wd.name)[0]
      except ValueError:  # not a run directory (.jax_cache, logs)
        continue
      if wd.is_dir() and supports(norm) and is_finished(wd):
        workdirs.append(str(wd))
  if not workdirs:
    raise app.UsageError("Nothing to evaluate: give --root (a sweep root) or --workdirs.")
  results = [
    evaluate_run(
      wd, batch=FLAGS.batch, precise_batches=FLAGS.precise_batches, replays=FLAGS.replays
    )
    for wd in tqdm(workdirs, desc="runs")
  ]
  text = tables(results)
  print(text)
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text + "\n")
  out.with_suffix(".json").write_text(json.dumps(results, indent=1))
  print(f"wrote {out} and {out.with_suffix('.json')}")


def cli():
  """The ``mbn-eval-stats`` console script (``python -m tools.eval_stats``)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
