r"""Re-evaluate finished runs with different normalization statistics.

    python -m train.eval_stats --root workdirs/cpu_repro --out docs/results/cpu_repro/eval_stats.md

Asks *where the statistics come from* for a trained network, with its
parameters frozen. For every ``bn``/``mbn``/``brn`` workdir (a finished
``python -m train`` run, e.g. from :mod:`train.sweep`), the last checkpoint's
validation accuracy is measured with three kinds of inference statistics:

* ``moving`` — the ``mean``/``var`` in ``batch_stats`` as training left them
  (BN and BReN: the EMA with ``bn_momentum``; MBN: the inference moving
  average with τ of Eq. 12). This is the accuracy the run reported.
* ``precise`` — "precise BN" population statistics: the training set (with
  its augmentation) is passed through the frozen network in training mode in
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

    python -m train.eval_stats --workdirs workdirs/cpu_repro/mbn-m2-s0,... --replays 5 --out X.md

Run it from the directory the training ran in (dataset paths in the saved
config may be relative).
"""

from __future__ import annotations

import collections
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

from mbn_jax import analysis, schedules
from train import checkpoints as ckpt_lib
from train import input_pipeline
from train import train as train_lib
from train.sweep import is_finished, parse_run_name

FLAGS = flags.FLAGS
NORMS = ("bn", "mbn", "brn")


def define_flags():
  flags.DEFINE_string("root", None, "A sweep root: its <norm>-m<m>-s<seed> workdirs are read.")
  flags.DEFINE_list("workdirs", [], "Workdirs to evaluate instead of (or besides) --root's.")
  flags.DEFINE_string("out", None, "Markdown file for the tables (printed as well).", required=True)
  flags.DEFINE_integer("batch", 250, "Images per batch for the precise statistics.")
  flags.DEFINE_integer("precise_batches", 20, "Training batches pooled for the precise statistics.")
  flags.DEFINE_integer("replays", 0, "Re-estimations of the inference moving average at the "
                       "frozen weights (0: none).")


def pooled_statistics(batch_means: np.ndarray, batch_vars: np.ndarray):
  """Population mean/variance from equal-size batches' means and biased variances.

  Law of total variance: μ = mean_b μ_b and σ² = mean_b σ²_b + mean_b (μ_b − μ)².
  """
  mean = batch_means.mean(0)
  return mean, batch_vars.mean(0) + ((batch_means - mean) ** 2).mean(0)


def replay_ema(start: dict, batch_stats_stream, momentum: float) -> dict:
  """Runs an exponential moving average over a stream of per-layer batch statistics.

  For every layer ``path``: ``s ← momentum·s + (1 − momentum)·b`` for each
  ``b = (batch_mean, batch_var)`` in turn (Flax convention: ``momentum``
  weights the *old* value, as λ and τ do), starting from ``start[path]``.
  After n batches the start keeps weight ``momentum**n`` and batch k (1-based)
  has weight ``(1 − momentum)·momentum**(n − k)``.
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"momentum must lie in [0, 1), got {momentum}.")
  out = {p: (np.asarray(m, np.float64), np.asarray(v, np.float64)) for p, (m, v) in start.items()}
  for stats in batch_stats_stream:
    for p, (bm, bv) in stats.items():
      m, v = out[p]
      out[p] = (momentum * m + (1 - momentum) * np.asarray(bm),
                momentum * v + (1 - momentum) * np.asarray(bv))
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


def _set_stats(batch_stats: dict, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
  """A copy of ``batch_stats`` whose layers' ``mean``/``var`` are ``stats[path]``."""
  out = jax.tree.map(lambda x: x, batch_stats)
  for path, (mean, var) in stats.items():
    node = _layer(out, path)
    node["mean"] = jnp.asarray(mean, node["mean"].dtype)
    node["var"] = jnp.asarray(var, node["var"].dtype)
  return out


def _layers(batch_stats, prefix=()):
  """Paths of the layers that hold ``mean``/``var``."""
  if "mean" in batch_stats and "var" in batch_stats:
    yield "/".join(prefix)
    return
  for k, v in batch_stats.items():
    if isinstance(v, dict):
      yield from _layers(v, prefix + (k,))


def evaluate_run(workdir: str, *, batch: int, precise_batches: int, replays: int = 0) -> dict:
  """Validation accuracy of ``workdir``'s last checkpoint under each kind of statistics."""
  saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  config = ml_collections.ConfigDict(saved["config"])
  if config.norm not in NORMS:
    raise ValueError(f"{workdir}: eval_stats supports norms {NORMS}, not {config.norm!r}.")
  # BReN with a warm-up longer than any step normalizes with plain batch statistics at step 0.
  config.brn_warmup_steps = 2**30
  data = input_pipeline.load_dataset(config.dataset)
  spe = saved["run_info"]["steps_per_epoch"]
  model = train_lib.build_model(config, num_classes=data.num_classes, steps_per_epoch=spe)
  restored = ckpt_lib.restore_latest(workdir)
  params = jax.tree.map(jnp.asarray, restored["params"])
  batch_stats = jax.tree.map(jnp.asarray, restored["batch_stats"])

  @jax.jit
  def batch_statistics(images):
    # step 0: MBN's λ(0) = 0 and BReN's (r, d) = (1, 0) -> every layer uses batch statistics.
    with analysis.capture_norm_statistics():
      _, upd = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                           step=jnp.int32(0), mutable=["batch_stats", analysis.NORM_STATS])
    return upd[analysis.NORM_STATS]

  @jax.jit
  def correct(stats, images, labels, mask):
    logits = model.apply({"params": params, "batch_stats": stats}, images, train=False, step=None)
    return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)

  def accuracy(stats):
    hits = n = 0
    for b in input_pipeline.eval_batches(data, per_device_batch_size=batch, local_devices=1,
                                         process_index=0, process_count=1):
      hits += float(correct(stats, b["image"][0], b["label"][0], b["mask"][0]))
      n += int(b["mask"].sum())
    return hits / n

  batches = input_pipeline.TrainBatches(
      data, per_device_batch_size=batch, local_devices=1, process_index=0, process_count=1,
      seed=config.seed, augment=config.dataset.augment, pad=config.dataset.crop_padding)
  order = batches.order(0)
  sown = collections.defaultdict(lambda: ([], []))
  for i in range(min(precise_batches, batches.steps_per_epoch)):
    images = jnp.asarray(batches.batch(0, i, order)["image"][0])
    for path, st in analysis.collect(jax.device_get(batch_statistics(images))).items():
      sown[path][0].append(np.asarray(st["batch_mean"]))
      sown[path][1].append(np.asarray(st["batch_var"]))
  precise = {p: pooled_statistics(np.stack(ms), np.stack(vs)) for p, (ms, vs) in sown.items()}

  result = {"workdir": str(workdir), "norm": config.norm, "m": config.per_device_batch_size,
            "seed": config.seed, "moving": accuracy(batch_stats),
            "precise": accuracy(_set_stats(batch_stats, precise))}
  if config.norm == "mbn":
    train_stats = {path: (_layer(batch_stats, path)["train_mean"],
                           _layer(batch_stats, path)["train_var"])
                    for path in _layers(batch_stats)}
    result["mbn_train"] = accuracy(_set_stats(batch_stats, train_stats))
  if replays:
    m = config.per_device_batch_size
    momenta = {"replay_own": (schedules.inference_momentum(
        m, ideal_batch_size=config.ideal_batch_size, tau0=config.tau0)
        if config.norm == "mbn" else float(config.bn_momentum))}
    if config.norm == "mbn":
      final_step = int(restored["step"]) - 1  # the run's last step (as noise_probe)
      momenta["replay_lambda"] = float(schedules.train_momentum(
          final_step, batch_size=m, total_epochs=config.mbn_total_epochs,
          steps_per_epoch=spe, ideal_batch_size=config.ideal_batch_size))
    result["replay_momentum"] = momenta

    def replay_images(r: int, momentum: float):
      """Replay r's stream of m-image training batches, long enough for ``momentum``."""
      stream = input_pipeline.TrainBatches(
          data, per_device_batch_size=m, local_devices=1, process_index=0, process_count=1,
          seed=config.seed + 1000 + r, augment=config.dataset.augment,
          pad=config.dataset.crop_padding)
      order = stream.order(0)
      for i in range(min(replay_steps(momentum), stream.steps_per_epoch)):
        yield jnp.asarray(stream.batch(0, i, order)["image"][0])

    for name, momentum in momenta.items():
      accs = []
      for r in range(replays):
        batch_stream = ({p: (st["batch_mean"], st["batch_var"]) for p, st in
                         analysis.collect(jax.device_get(batch_statistics(images))).items()}
                        for images in replay_images(r, momentum))
        accs.append(accuracy(_set_stats(batch_stats, replay_ema(precise, batch_stream,
                                                                momentum))))
      result[name] = accs
    if config.norm == "mbn":
      # The same τ-EMA, but collected the way training collects it: the layers
      # in training mode at the last epoch's step (each normalizing with its
      # λ-averaged training statistics, which keep updating), the layers' own
      # update of mean/var; only the parameters stay frozen.
      @jax.jit
      def train_mode_update(stats, images):
        _, upd = model.apply({"params": params, "batch_stats": stats}, images, train=True,
                             step=jnp.int32(final_step), mutable=["batch_stats"])
        return upd["batch_stats"]

      accs = []
      for r in range(replays):
        stats = _set_stats(batch_stats, precise)
        for images in replay_images(r, momenta["replay_own"]):
          stats = train_mode_update(stats, images)
        accs.append(accuracy(stats))
      result["replay_train_mode"] = accs
      result["replay_momentum"]["replay_train_mode"] = momenta["replay_own"]
  return result


def _std(values) -> float:
  """Sample standard deviation (ddof = 1, as train.report uses); 0 for one value."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def tables(results: list[dict]) -> str:
  """Per-run table and a mean ± std (sample std over seeds) summary per (norm, m)."""
  kinds = ("moving", "precise", "mbn_train")
  lines = ["| norm | m | seeds | " + " | ".join(f"{k} acc %" for k in kinds) + " | precise − moving |",
           "|---|---:|---:|" + "---:|" * (len(kinds) + 1)]
  groups = collections.defaultdict(list)
  for r in results:
    groups[(r["norm"], r["m"])].append(r)
  order = {n: i for i, n in enumerate(NORMS)}
  for (norm, m), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
    cells = []
    for k in kinds:
      v = [100 * r[k] for r in rs if k in r]
      cells.append(f"{np.mean(v):.1f} ± {_std(v):.1f}" if v else "—")
    gain = [100 * (r["precise"] - r["moving"]) for r in rs]
    lines.append(f"| {norm} | {m} | {len(rs)} | " + " | ".join(cells)
                 + f" | {np.mean(gain):+.1f} |")
  lines += ["", "| run | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
  for r in results:
    lines.append(f"| {pathlib.Path(r['workdir']).name} | "
                 + " | ".join(f"{100 * r[k]:.2f}" if k in r else "—" for k in kinds) + " |")
  replayed = [r for r in results if "replay_own" in r]
  if replayed:
    lines += ["", "Inference EMA re-estimated at the frozen weights (accuracy % over replays, "
              "mean ± std [min, max]):", "",
              "| run | moving (as trained) | replay, own momentum | replay, λ(T) (MBN) "
              "| replay in training mode, τ (MBN) |",
              "|---|---:|---:|---:|---:|"]
    for r in replayed:
      cells = []
      for k in ("replay_own", "replay_lambda", "replay_train_mode"):
        if k in r:
          v = 100 * np.asarray(r[k])
          cells.append(f"{v.mean():.1f} ± {_std(v):.1f} [{v.min():.1f}, {v.max():.1f}] "
                       f"(momentum {r['replay_momentum'][k]:.4f}, {len(v)}×)")
        else:
          cells.append("—")
      lines.append(f"| {pathlib.Path(r['workdir']).name} | {100 * r['moving']:.2f} | "
                   + " | ".join(cells) + " |")
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
      if wd.is_dir() and norm in NORMS and is_finished(wd):
        workdirs.append(str(wd))
  if not workdirs:
    raise app.UsageError("Nothing to evaluate: give --root (a sweep root) or --workdirs.")
  results = [evaluate_run(wd, batch=FLAGS.batch, precise_batches=FLAGS.precise_batches,
                          replays=FLAGS.replays)
             for wd in tqdm(workdirs, desc="runs")]
  text = tables(results)
  print(text)
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text + "\n")
  out.with_suffix(".json").write_text(json.dumps(results, indent=1))
  print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
