r"""Turn a sweep root into a results table (markdown) and plots.

    python -m tools.report --root workdirs/cpu_repro --out docs/results/cpu_repro

Reads every ``<norm>-m<m>-s<seed>`` workdir written by :mod:`tools.sweep`
(``summary.json``, ``metrics.jsonl``, ``sweep.json``) and writes into ``--out``:

* ``results.md`` — final validation accuracy, mean ± std over seeds, per norm
  and per-device batch size (Fig. 4/7 style as a table), as the runs reported
  it and, where the runs estimated them (``config.precise_stats_batches``),
  with population ("precise") statistics; the *paired* per-seed difference of
  every norm to BN (same seed = same initialization and data order), with how
  many seeds favour each; the gap precise − as-trained; and every run;
* ``accuracy_vs_batch_size.png`` — accuracy vs per-device batch size per norm;
* ``curves_m<m>.png`` — validation accuracy per epoch at the smallest batch
  size (Fig. 5 style): every seed (thin) and the mean (bold), as trained and,
  where recorded, with precise statistics;
* ``gap_m<m>.png`` — precise − as-trained accuracy per epoch (where recorded);
* ``momentum_schedules.png`` — the λ(t) that MBN runs used and τ(m).
"""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
from absl import app, flags

import mbn_jax
from tools.sweep import parse_run_name
from train.layout import layout_of_record
from train.validation import load_saved_config

NORM_ORDER = ["bn", "mbn", "brn", "gn", "ln", "in", "none"]
NORM_LABEL = {
  "bn": "BN",
  "mbn": "MBN",
  "brn": "BReN",
  "gn": "GN",
  "ln": "LN",
  "in": "IN",
  "none": "none",
}


RESUME_MARKER = "Resuming from step"  # train.resume prints it when a process resumes a run


def images_per_epoch(summary: dict) -> int | None:
  """Images one epoch trains on: (micro-)batches per epoch × global batch (per micro-batch).

  Read from summary.json (``micro_batches_per_epoch``, or ``steps_per_epoch`` of older records,
  which counted micro-batches too; ``global_batch_size``, or the layout); None when absent.
  """
  steps = summary.get("micro_batches_per_epoch") or summary.get("steps_per_epoch")
  batch = summary.get("global_batch_size")
  if batch is None and ("layout" in summary or "devices" in summary):
    batch = layout_of_record(summary).global_batch_size
  return None if not steps or not batch else int(steps) * int(batch)


def training_seconds(summary: dict, records: list[dict]) -> float | None:
  """Seconds in the training loop, summed over the epochs of metrics.jsonl.

  Each epoch: its images (:func:`images_per_epoch`) / its ``images_per_sec``, i.e. the epoch's
  training time as train.epoch measured it (the train steps and their input, the train step's
  compilation in each process's first epoch included; evaluation, precise statistics,
  checkpoints and setup not). Every epoch is in metrics.jsonl however often the run was
  interrupted, so the sum does not depend on interruptions (an epoch resumed part-way counts at
  the speed of its resumed part). None without the numbers (an epoch without images_per_sec).
  """
  images = images_per_epoch(summary)
  speeds = [rec.get("images_per_sec") for rec in records]
  if images is None or not speeds:
    return None
  seconds = 0.0
  for v in speeds:
    if not v or not np.isfinite(v):
      return None
    seconds += images / v
  return seconds


def resume_evidence(
  wd: pathlib.Path, clocks: list[float], train_seconds: float | None
) -> str | None:
  """Why the run counts as resumed (more than one process trained it), or None.

  Its train.log (where kept) has a "Resuming from step" line per resumed process; without it,
  the records give it away when the training time summed over epochs exceeds a recorded wall
  clock (``clocks``: sweep.json's wall_seconds, summary.json's wall_time_s), which then holds
  only the last process: one process's wall clock holds all of its own training. A resume that
  leaves neither trace is not detected.
  """
  log = wd / "train.log"
  if log.is_file():
    resumes = log.read_text(errors="replace").count(RESUME_MARKER)
    if resumes:
      return f"train.log: {resumes} × {RESUME_MARKER!r}"
  finite = [c for c in clocks if np.isfinite(c)]
  if train_seconds is not None and finite and train_seconds > min(finite):
    return f"training {train_seconds:.0f} s > wall clock {min(finite):.0f} s"
  return None


TIME_NOTE = (
  "Training: the sum over the epochs of metrics.jsonl of the epoch's images (batches per "
  "epoch × global batch) / its images per second, i.e. the training loop only (with the train "
  "step's compilation in each process's first epoch; without evaluation, precise statistics, "
  "checkpoints and setup), whether or not the run was interrupted. Wall clock: sweep.json's "
  "wall_seconds (or summary.json's wall_time_s): setup, training, evaluation and checkpoints "
  "alike, but incomplete for a run interrupted and resumed (summary.json's holds its last "
  "process only; sweep.json's adds up the processes whose sweep lived to record them): such a "
  "run is marked "
  'resumed (a "Resuming from step" line in its train.log, or, where no train.log is kept, '
  "training time above a recorded wall clock, sweep.json's or summary.json's) and its wall "
  "clock is not shown."
)


def load_run(wd: pathlib.Path, norm: str | None = None, m: int | None = None, seed=None) -> dict:
  """One run's records: norm, m, seed (from summary.json where not given), summary, per-epoch
  records, wall time, training time (:func:`training_seconds`), whether it was resumed
  (:func:`resume_evidence`: then ``wall`` holds only the last process), status, and the
  command of sweep.json (None without one)."""
  summary = json.loads((wd / "summary.json").read_text())
  records = []
  if (wd / "metrics.jsonl").exists():
    records = [
      json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
  sweep = json.loads((wd / "sweep.json").read_text()) if (wd / "sweep.json").exists() else {}
  nan = float("nan")
  clocks = [float(sweep.get("wall_seconds", nan)), float(summary.get("wall_time_s", nan))]
  wall = clocks[0] if np.isfinite(clocks[0]) else clocks[1]
  train_seconds = training_seconds(summary, records)
  return {
    "norm": summary.get("norm") if norm is None else norm,
    "m": summary.get("per_device_batch_size") if m is None else m,
    "seed": summary.get("seed") if seed is None else seed,
    "summary": summary,
    "records": records,
    "wall": wall,
    "train_seconds": train_seconds,
    "resumed": resume_evidence(wd, clocks, train_seconds),
    "status": summary.get("status", "?"),
    "command": sweep.get("command"),
  }


def load_runs(root: pathlib.Path) -> list[dict]:
  """One dict per finished run (:func:`load_run`) of the ``<norm>-m<m>-s<seed>`` dirs of root."""
  runs = []
  for wd in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
    try:
      norm, m, seed = parse_run_name(wd.name)
    except ValueError:
      continue
    if (wd / "summary.json").exists():
      runs.append(load_run(wd, norm, m, seed))
  return runs


def _plt():
  """matplotlib's pyplot on the Agg backend (imported only when a plot is drawn)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _rank(norm: str) -> int:
  return NORM_ORDER.index(norm) if norm in NORM_ORDER else len(NORM_ORDER)


def _order(norms):
  return sorted(norms, key=_rank)


PRECISE = "final_eval_accuracy_precise"  # summary.json key of the precise-statistics accuracy


def _completed(runs):
  return [r for r in runs if r["status"] == "completed"]  # interrupted runs are listed only


def run_setting(summary: dict) -> dict:
  """What makes runs comparable beyond norm, m and seed: devices, shared statistics, lr, accumulation.

  Read from the run record's layout (:func:`train.layout.layout_of_record`,
  older records included) and config.
  """
  config = load_saved_config(summary.get("config", {}))  # absent fields at their defaults
  setting = {"lr_batch_size": config.lr_batch_size, "grad_accum_stats": config.grad_accum_stats}
  if "layout" in summary or "devices" in summary:  # a record of the training program
    layout = layout_of_record(summary)
    setting.update(
      devices=layout.devices,
      norm_sync_devices=layout.norm_sync_devices,
      grad_accum_steps=layout.grad_accum_steps,
    )
  return setting


def check_one_setting(runs, where: str) -> dict:
  """The common :func:`run_setting` of ``runs``; a ValueError naming the runs that differ."""
  settings = {}
  for r in runs:
    settings.setdefault(json.dumps(run_setting(r["summary"]), sort_keys=True), []).append(r)
  if len(settings) > 1:
    name = lambda x: "{}-m{}-s{}".format(x["norm"], x["m"], x["seed"])
    detail = "; ".join(f"{', '.join(map(name, rs))}: {k}" for k, rs in settings.items())
    raise ValueError(
      f"{where}: runs of different settings would share one cell ({detail}). Put each setting "
      "in its own sweep root (or arm)."
    )
  return json.loads(next(iter(settings))) if settings else {}


def aggregate(runs, key: str = "final_eval_accuracy"):
  """{(norm, m): (mean, std, n, mean wall)} of ``key`` over the completed runs that have it.

  Every cell holds runs of one setting (:func:`check_one_setting`).
  """
  groups = collections.defaultdict(list)
  for r in _completed(runs):
    if r["summary"].get(key) is not None:
      groups[(r["norm"], r["m"])].append(r)
  for (norm, m), rs in groups.items():
    check_one_setting(rs, f"{norm} at m = {m}")
  out = {}
  for k, rs in groups.items():
    acc = np.array([r["summary"][key] for r in rs], float)
    out[k] = (
      acc.mean(),
      acc.std(ddof=1) if len(acc) > 1 else 0.0,
      len(acc),
      float(np.mean([r["wall"] for r in rs])),
    )
  return out


def paired_differences(runs, key: str = "final_eval_accuracy", baseline: str = "bn"):
  """{(norm, m): per-seed differences norm − baseline of ``key``, over the seeds both have}.

  Runs with the same seed share initialization and data order, so the
  difference cancels what the seed alone explains.
  """
  by = {(r["norm"], r["m"], r["seed"]): r["summary"].get(key) for r in _completed(runs)}
  out = {}
  for norm, m in {(n, m) for n, m, _ in by if n != baseline}:
    seeds = sorted(
      s
      for n, mm, s in by
      if n == norm
      and mm == m
      and by.get((baseline, m, s)) is not None
      and by[(norm, m, s)] is not None
    )
    if seeds:
      out[(norm, m)] = {s: by[(norm, m, s)] - by[(baseline, m, s)] for s in seeds}
  return out


def _mean_std(values) -> str:
  """Mean ± sample std (n − 1 in the denominator) in points; one value: no std."""
  v = 100 * np.asarray(list(values), float)
  return f"{v.mean():+.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():+.2f}"


def _accuracy_table(agg, title: str) -> list[str]:
  norms = _order({n for n, _ in agg})
  sizes = sorted({m for _, m in agg})
  lines = [
    title,
    "",
    "| norm | " + " | ".join(f"m = {m}" for m in sizes) + " |",
    "|---|" + "---|" * len(sizes),
  ]
  for n in norms:
    cells = []
    for m in sizes:
      if (n, m) in agg:
        mean, std, k, _ = agg[(n, m)]
        spread = f" ± {100 * std:.2f}" if k > 1 else ""  # one run has no spread
        cells.append(f"{100 * mean:.2f}{spread} (n={k})")
      else:
        cells.append("—")
    lines.append(f"| {NORM_LABEL.get(n, n)} | " + " | ".join(cells) + " |")
  return lines


def _paired_table(runs) -> list[str]:
  reported = paired_differences(runs)
  precise = paired_differences(runs, PRECISE)
  if not reported:
    return []
  lines = [
    "",
    "Paired difference to BN, same seed (percentage points): mean ± std over seeds, "
    "and how many seeds favour each.",
    "",
    "| norm − BN | m | seeds | as reported | favour norm / BN | precise statistics "
    "| favour norm / BN |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for norm, m in sorted(reported, key=lambda k: (k[1], _rank(k[0]))):
    d = reported[(norm, m)]
    cells = [
      _mean_std(d.values()),
      f"{sum(v > 0 for v in d.values())} / {sum(v < 0 for v in d.values())}",
    ]
    p = precise.get((norm, m))
    cells += (
      [
        _mean_std(p.values()),
        f"{sum(v > 0 for v in p.values())} / {sum(v < 0 for v in p.values())}",
      ]
      if p
      else ["—", "—"]
    )
    lines.append(
      f"| {NORM_LABEL.get(norm, norm)} − BN | {m} | {len(d)} | " + " | ".join(cells) + " |"
    )
  return lines


def _gap_table(runs) -> list[str]:
  groups = collections.defaultdict(list)
  for r in _completed(runs):
    if r["summary"].get(PRECISE) is not None:
      groups[(r["norm"], r["m"])].append(
        r["summary"][PRECISE] - r["summary"]["final_eval_accuracy"]
      )
  if not groups:
    return []
  lines = [
    "",
    "Precise − as trained (percentage points; > 0: the moving-average inference "
    "statistics cost accuracy), mean ± std over seeds [min, max]:",
    "",
    "| norm | m | seeds | precise − as trained |",
    "|---|---:|---:|---:|",
  ]
  for (n, m), gaps in sorted(groups.items(), key=lambda kv: (kv[0][1], _rank(kv[0][0]))):
    g = 100 * np.asarray(gaps)
    lines.append(
      f"| {NORM_LABEL.get(n, n)} | {m} | {len(g)} | {_mean_std(gaps)} "
      f"[{g.min():+.2f}, {g.max():+.2f}] |"
    )
  return lines


def _last_epoch_table(runs) -> list[str]:
  """How far the as-trained accuracy moved in the last epoch, and the largest such move.

  Per norm and batch size: the change from the second-to-last to the last
  evaluation (mean ± std [min, max] over seeds) and the largest |change|
  between consecutive evaluations in the last 30 % of the evaluations (where
  the paper's schedule has already divided the learning rate twice).
  """
  last, swing = collections.defaultdict(list), collections.defaultdict(list)
  for r in _completed(runs):
    acc = [rec["eval_accuracy"] for rec in r["records"] if rec.get("eval_accuracy") is not None]
    if len(acc) < 2:
      continue
    steps = np.diff(acc)
    tail = steps[-max(1, round(0.3 * len(acc))) :]
    last[(r["norm"], r["m"])].append(steps[-1])
    swing[(r["norm"], r["m"])].append(np.abs(tail).max())
  if not last:
    return []
  lines = [
    "",
    "Stability of the as-trained accuracy at the end (percentage points): the change over "
    "the last epoch, mean ± std over seeds [min, max], and the largest |change| between "
    "consecutive evaluations in the last 30 % of them (mean over seeds) [max]:",
    "",
    "| norm | m | seeds | last-epoch change | largest late |change| |",
    "|---|---:|---:|---:|---:|",
  ]
  for (n, m), d in sorted(last.items(), key=lambda kv: (kv[0][1], _rank(kv[0][0]))):
    d, w = 100 * np.asarray(d), 100 * np.asarray(swing[(n, m)])
    lines.append(
      f"| {NORM_LABEL.get(n, n)} | {m} | {len(d)} | {_mean_std(d / 100)} "
      f"[{d.min():+.2f}, {d.max():+.2f}] | {w.mean():.2f} [{w.max():.2f}] |"
    )
  return lines


def _percent(value) -> str:
  """An accuracy in % with 2 decimals; "—" when missing or not finite."""
  if value is None or not np.isfinite(value):
    return "—"
  return f"{100 * value:.2f}"


def results_markdown(runs) -> str:
  lines = _accuracy_table(
    aggregate(runs),
    "Final validation accuracy (%), mean ± std over "
    "seeds (n = number of seeds), as the runs reported it.",
  )
  precise = aggregate(runs, PRECISE)
  if precise:
    lines += [""] + _accuracy_table(
      precise,
      "The same networks evaluated with population "
      '("precise") statistics (%), mean ± std over seeds.',
    )
  lines += _paired_table(runs) + _gap_table(runs) + _last_epoch_table(runs)
  lines += [
    "",
    "Every run. " + TIME_NOTE,
    "",
    "| run | status | epochs | final val acc | precise val acc | "
    "best val acc | final train acc | training (s) | wall clock (s) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in sorted(runs, key=lambda r: (_rank(r["norm"]), r["m"], r["seed"])):
    s = r["summary"]
    cells = [
      _percent(s.get(k))
      for k in ("final_eval_accuracy", PRECISE, "best_eval_accuracy", "final_train_accuracy")
    ]
    train = "—" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
    wall = "— (resumed)" if r.get("resumed") else f"{r['wall']:.0f}"
    lines.append(
      f"| {r['norm']}-m{r['m']}-s{r['seed']} | {r['status']} | "
      f"{s.get('epochs_completed')} | " + " | ".join(cells) + f" | {train} | {wall} |"
    )
  return "\n".join(lines) + "\n"


def plot_accuracy_vs_batch(runs, path):
  plt = _plt()
  agg = aggregate(runs)
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for n in _order({n for n, _ in agg}):
    sizes = sorted(m for nn, m in agg if nn == n)
    mean = [100 * agg[(n, m)][0] for m in sizes]
    std = [100 * agg[(n, m)][1] for m in sizes]
    ax.errorbar(sizes, mean, yerr=std, marker="o", capsize=3, label=NORM_LABEL.get(n, n))
  ax.set_xscale("log", base=2)
  ax.set_xlabel("per-device batch size m")
  ax.set_ylabel("validation accuracy (%)")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _curves(runs, m, key):
  """{norm: [[(epoch, accuracy), ...] per seed]} of per-epoch ``key`` at batch size m."""
  by_norm = collections.defaultdict(list)
  for r in runs:
    if r["m"] == m:
      curve = [(rec["epoch"], rec[key]) for rec in r["records"] if rec.get(key) is not None]
      if curve:
        by_norm[r["norm"]].append(curve)
  return by_norm


def plot_seeds_and_mean(ax, epochs, values, color, label):
  """One curve per seed (thin rows of ``values``) and their mean (bold, labelled)."""
  for row in values:
    ax.plot(epochs, row, color=color, alpha=0.35, linewidth=0.8)
  ax.plot(epochs, values.mean(0), color=color, marker=".", linewidth=2, label=label)


def plot_curves(runs, m, path):
  """Validation accuracy per epoch: every seed thin, the mean bold; as trained | precise."""
  plt = _plt()
  panels = [("eval_accuracy", "as trained (moving-average statistics)")]
  if _curves(runs, m, "eval_accuracy_precise"):
    panels.append(("eval_accuracy_precise", "population (precise) statistics"))
  fig, axes = plt.subplots(
    1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True, squeeze=False
  )
  for ax, (key, title) in zip(axes[0], panels):
    by_norm = _curves(runs, m, key)
    for i, n in enumerate(_order(by_norm)):
      curves = by_norm[n]
      color = f"C{i}"
      length = min(len(c) for c in curves)
      epochs = [e for e, _ in curves[0][:length]]
      acc = 100 * np.array([[a for _, a in c[:length]] for c in curves])
      plot_seeds_and_mean(ax, epochs, acc, color, f"{NORM_LABEL.get(n, n)} (mean of {len(curves)})")
    ax.set_xlabel("epoch")
    ax.set_title(f"m = {m}: {title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0][0].set_ylabel("validation accuracy (%)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_gap_curves(runs, m, path) -> bool:
  """Precise − as-trained validation accuracy per epoch at batch size m (every seed thin, mean
  bold): how much the moving-average inference statistics cost, epoch by epoch. Returns False
  (and draws nothing) when the runs recorded no precise statistics."""
  by_norm = collections.defaultdict(list)
  for r in runs:
    if r["m"] != m:
      continue
    gap = [
      (rec["epoch"], rec["eval_accuracy_precise"] - rec["eval_accuracy"])
      for rec in r["records"]
      if rec.get("eval_accuracy_precise") is not None and rec.get("eval_accuracy") is not None
    ]
    if gap:
      by_norm[r["norm"]].append(gap)
  if not by_norm:
    return False
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for i, n in enumerate(_order(by_norm)):
    curves = by_norm[n]
    length = min(len(c) for c in curves)
    epochs = [e for e, _ in curves[0][:length]]
    gap = 100 * np.array([[g for _, g in c[:length]] for c in curves])
    plot_seeds_and_mean(ax, epochs, gap, f"C{i}", f"{NORM_LABEL.get(n, n)} (mean of {len(curves)})")
  ax.axhline(0, color="k", linewidth=0.8)
  ax.set_xlabel("epoch")
  ax.set_ylabel("precise − as trained (accuracy points)")
  ax.set_title(f"m = {m}: cost of the moving-average inference statistics", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def _has_momentum_schedule(norm: str) -> bool:
  """Does this norm's class follow a momentum schedule (MBN's λ)? Unknown names: no."""
  try:
    return mbn_jax.norms.capabilities_of(mbn_jax.norms.norm_class(norm)).momentum_schedule
  except ValueError:
    return False


def plot_schedules(runs, path):
  plt = _plt()
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
  seen = set()
  scheduled = [r for r in runs if _has_momentum_schedule(r["norm"])]
  for r in scheduled:
    if r["m"] in seen:
      continue
    seen.add(r["m"])
    pts = [(rec["epoch"], rec["lambda"]) for rec in r["records"] if rec.get("lambda") is not None]
    if pts:
      a1.plot(*zip(*pts), marker=".", label=f"m = {r['m']}")
  a1.set_xlabel("epoch")
  a1.set_ylabel("training momentum λ (Eq. 11), last step of epoch")
  a1.legend()
  a1.grid(alpha=0.3)
  cfg = load_saved_config(next((r["summary"].get("config", {}) for r in scheduled), {}))
  m0, tau0 = cfg.ideal_batch_size, cfg.tau0
  sizes = np.array(sorted({r["m"] for r in runs} | {1, 64}))
  a2.plot(
    sizes,
    [mbn_jax.inference_momentum(int(m), ideal_batch_size=m0, tau0=tau0) for m in sizes],
    marker="o",
  )
  a2.set_xscale("log", base=2)
  a2.set_xlabel("per-device batch size m")
  a2.set_ylabel(f"inference momentum τ (Eq. 12, τ0={tau0}, m0={m0})")
  a2.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


FLAGS = flags.FLAGS


def define_flags():
  """Flags of the command line program (defined only when run as a program)."""
  flags.DEFINE_string("root", None, "Sweep root (from tools.sweep).", required=True)
  flags.DEFINE_string("out", None, "Output directory for results.md and plots.", required=True)


def main(argv):
  del argv
  root, out = pathlib.Path(FLAGS.root), pathlib.Path(FLAGS.out)
  if not root.is_dir():
    raise SystemExit(f"--root: {root} is not a directory (run python -m tools.sweep first).")
  runs = load_runs(root)
  if not runs:
    raise SystemExit(f"--root: no finished runs (<norm>-m<m>-s<seed>/summary.json) under {root}.")
  out.mkdir(parents=True, exist_ok=True)
  (out / "results.md").write_text(results_markdown(runs))
  plot_accuracy_vs_batch(runs, out / "accuracy_vs_batch_size.png")
  for m in sorted({r["m"] for r in runs}):
    plot_curves(runs, m, out / f"curves_m{m}.png")
    plot_gap_curves(runs, m, out / f"gap_m{m}.png")
  plot_schedules(runs, out / "momentum_schedules.png")
  print((out / "results.md").read_text())
  print(f"wrote {out}/results.md and plots")


def cli():
  """The ``mbn-report`` console script (``python -m tools.report``)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
