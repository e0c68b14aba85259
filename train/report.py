r"""Turn a sweep root into a results table (markdown) and plots.

    python -m train.report --root workdirs/cpu_repro --out docs/results/cpu_repro

Reads every ``<norm>-m<m>-s<seed>`` workdir written by :mod:`train.sweep`
(``summary.json``, ``metrics.jsonl``, ``sweep.json``) and writes into ``--out``:

* ``results.md`` — final validation accuracy, mean ± std over seeds, per norm
  and per-device batch size (Fig. 4/7 style as a table), plus every run;
* ``accuracy_vs_batch_size.png`` — accuracy vs per-device batch size per norm;
* ``curves_m<m>.png`` — validation accuracy per epoch at the smallest batch
  size (Fig. 5 style), mean over seeds with the min–max band;
* ``momentum_schedules.png`` — the λ(t) that MBN runs used and τ(m).
"""

from __future__ import annotations

import collections
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import mbn_jax  # noqa: E402
from train.sweep import parse_run_name  # noqa: E402

NORM_ORDER = ["bn", "mbn", "brn", "gn", "ln", "in", "none"]
NORM_LABEL = {"bn": "BN", "mbn": "MBN", "brn": "BReN", "gn": "GN", "ln": "LN", "in": "IN",
              "none": "none"}


def load_runs(root: pathlib.Path) -> list[dict]:
  """One dict per finished run: norm, m, seed, summary, per-epoch records, wall time."""
  runs = []
  for wd in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
    try:
      norm, m, seed = parse_run_name(wd.name)
    except ValueError:
      continue
    if not (wd / "summary.json").exists():
      continue
    summary = json.loads((wd / "summary.json").read_text())
    records = []
    if (wd / "metrics.jsonl").exists():
      records = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines() if l.strip()]
    sweep = json.loads((wd / "sweep.json").read_text()) if (wd / "sweep.json").exists() else {}
    runs.append({"norm": norm, "m": m, "seed": seed, "summary": summary, "records": records,
                 "wall": sweep.get("wall_seconds", summary.get("wall_time_s", float("nan"))),
                 "status": summary.get("status", "?")})
  return runs


def _order(norms):
  return sorted(norms, key=lambda n: NORM_ORDER.index(n) if n in NORM_ORDER else 99)


def aggregate(runs):
  """{(norm, m): (mean, std, n, mean wall)} of the final validation accuracy."""
  groups = collections.defaultdict(list)
  for r in runs:
    if r["status"] == "completed":  # interrupted runs are listed, not averaged
      groups[(r["norm"], r["m"])].append(r)
  out = {}
  for key, rs in groups.items():
    acc = np.array([r["summary"]["final_eval_accuracy"] for r in rs], float)
    out[key] = (acc.mean(), acc.std(ddof=1) if len(acc) > 1 else 0.0, len(acc),
                float(np.mean([r["wall"] for r in rs])))
  return out


def results_markdown(runs) -> str:
  agg = aggregate(runs)
  norms = _order({n for n, _ in agg})
  sizes = sorted({m for _, m in agg})
  lines = ["Final validation accuracy (%), mean ± std over seeds (n = number of seeds).", "",
           "| norm | " + " | ".join(f"m = {m}" for m in sizes) + " |",
           "|---|" + "---|" * len(sizes)]
  for n in norms:
    cells = []
    for m in sizes:
      if (n, m) in agg:
        mean, std, k, _ = agg[(n, m)]
        cells.append(f"{100 * mean:.2f} ± {100 * std:.2f} (n={k})")
      else:
        cells.append("—")
    lines.append(f"| {NORM_LABEL.get(n, n)} | " + " | ".join(cells) + " |")
  lines += ["", "Every run:", "", "| run | status | epochs | final val acc | best val acc | "
            "final train acc | wall time (s) |", "|---|---|---|---|---|---|---|"]
  for r in sorted(runs, key=lambda r: (NORM_ORDER.index(r["norm"]) if r["norm"] in NORM_ORDER else 99,
                                       r["m"], r["seed"])):
    s = r["summary"]
    lines.append(f"| {r['norm']}-m{r['m']}-s{r['seed']} | {r['status']} | {s.get('epochs_completed')} | "
                 f"{100 * s['final_eval_accuracy']:.2f} | {100 * s['best_eval_accuracy']:.2f} | "
                 f"{100 * s['final_train_accuracy']:.2f} | {r['wall']:.0f} |")
  return "\n".join(lines) + "\n"


def plot_accuracy_vs_batch(runs, path):
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


def plot_curves(runs, m, path):
  fig, ax = plt.subplots(figsize=(5.5, 4))
  by_norm = collections.defaultdict(list)
  for r in runs:
    if r["m"] == m:
      by_norm[r["norm"]].append([(rec["epoch"], rec["eval_accuracy"]) for rec in r["records"]
                                 if rec.get("eval_accuracy") is not None])
  for n in _order(by_norm):
    curves = [c for c in by_norm[n] if c]
    if not curves:
      continue
    length = min(len(c) for c in curves)
    epochs = [e for e, _ in curves[0][:length]]
    acc = 100 * np.array([[a for _, a in c[:length]] for c in curves])
    line, = ax.plot(epochs, acc.mean(0), marker=".", label=NORM_LABEL.get(n, n))
    ax.fill_between(epochs, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.2)
  ax.set_xlabel("epoch")
  ax.set_ylabel("validation accuracy (%)")
  ax.set_title(f"per-device batch size {m}")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_schedules(runs, path):
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
  seen = set()
  for r in runs:
    if r["norm"] != "mbn" or r["m"] in seen:
      continue
    seen.add(r["m"])
    pts = [(rec["epoch"], rec["lambda"]) for rec in r["records"] if rec.get("lambda") is not None]
    if pts:
      a1.plot(*zip(*pts), marker=".", label=f"m = {r['m']}")
  a1.set_xlabel("epoch")
  a1.set_ylabel("training momentum λ (Eq. 11), last step of epoch")
  a1.legend()
  a1.grid(alpha=0.3)
  cfg = next((r["summary"].get("config", {}) for r in runs if r["norm"] == "mbn"), {})
  m0, tau0 = cfg.get("ideal_batch_size", 32), cfg.get("tau0", 0.85)
  sizes = np.array(sorted({r["m"] for r in runs} | {1, 64}))
  a2.plot(sizes, [mbn_jax.inference_momentum(int(m), ideal_batch_size=m0, tau0=tau0) for m in sizes],
          marker="o")
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
  flags.DEFINE_string("root", None, "Sweep root (from train.sweep).", required=True)
  flags.DEFINE_string("out", None, "Output directory for results.md and plots.", required=True)


def main(argv):
  del argv
  root, out = pathlib.Path(FLAGS.root), pathlib.Path(FLAGS.out)
  if not root.is_dir():
    raise SystemExit(f"--root: {root} is not a directory (run python -m train.sweep first).")
  runs = load_runs(root)
  if not runs:
    raise SystemExit(f"--root: no finished runs (<norm>-m<m>-s<seed>/summary.json) under {root}.")
  out.mkdir(parents=True, exist_ok=True)
  (out / "results.md").write_text(results_markdown(runs))
  plot_accuracy_vs_batch(runs, out / "accuracy_vs_batch_size.png")
  m_small = min(r["m"] for r in runs)
  plot_curves(runs, m_small, out / f"curves_m{m_small}.png")
  plot_schedules(runs, out / "momentum_schedules.png")
  print((out / "results.md").read_text())
  print(f"wrote {out}/results.md and plots")


if __name__ == "__main__":
  define_flags()
  app.run(main)
