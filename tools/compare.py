r"""Compare labelled arms of one or more sweeps, paired by seed: a table and curves.

    python -m tools.compare --out docs/results/accumulation \
      --arm "BN, batch 2=docs/results/faithful_runs/faithful/bn-m2" \
      --arm "MBN, 16 × 2, deferred=docs/results/accumulation_runs/deferred/mbn-m2" \
      --baseline "BN, batch 2"

An *arm* is ``LABEL=PREFIX``: the finished runs ``PREFIX-s<seed>`` written by
:mod:`tools.sweep` (``PREFIX`` is ``<root>/<norm>-m<m>``), so arms can come
from different sweep roots (another schedule, gradient accumulation). Writes
into ``--out``:

* ``comparison.md`` — per arm: final validation accuracy as trained and with
  population ("precise") statistics, mean ± std over seeds (n), their
  difference; the *paired* difference of every arm to ``--baseline`` over
  the seeds both have (same seed = same initialization and data order), with
  how many seeds favour each; every run, seed by seed;
* ``curves.png`` — validation accuracy per epoch per arm (every seed thin,
  the mean bold), as trained and with precise statistics;
* ``gap.png`` — precise − as-trained accuracy per epoch per arm.
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import app, flags

from tools.report import PRECISE, _mean_std, _plt, check_one_setting, load_runs, plot_seeds_and_mean

AS_TRAINED = "final_eval_accuracy"


def parse_arm(spec: str) -> tuple[str, pathlib.Path, str, int]:
  """``'LABEL=ROOT/<norm>-m<m>'`` → (label, root, norm, m); a ValueError naming the spec."""
  label, sep, prefix = spec.rpartition("=")
  path = pathlib.Path(prefix)
  norm, _, m = path.name.rpartition("-m")
  if not sep or not label or not norm or not m.isdigit():
    raise ValueError(
      f"--arm {spec!r}: expected LABEL=ROOT/<norm>-m<m> (the runs ROOT/<norm>-m<m>-s<seed>), "
      "e.g. 'MBN, batch 2=workdirs/faithful/mbn-m2'."
    )
  return label, path.parent, norm, int(m)


def load_arm(spec: str) -> dict:
  """An arm: its label, the spec, and its completed runs by seed."""
  label, root, norm, m = parse_arm(spec)
  if not root.is_dir():
    raise ValueError(f"--arm {spec!r}: {root} is not a directory.")
  runs = {
    r["seed"]: r
    for r in load_runs(root)
    if r["norm"] == norm and r["m"] == m and r["status"] == "completed"
  }
  setting = check_one_setting(list(runs.values()), f"--arm {spec!r}")
  return {"label": label, "spec": spec, "runs": runs, "setting": setting}


def _values(arm: dict, key: str) -> dict[int, float]:
  return {s: r["summary"][key] for s, r in arm["runs"].items() if r["summary"].get(key) is not None}


def _cell(values) -> str:
  v = 100 * np.asarray(list(values), float)
  if not len(v):
    return "—"
  return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f} (n={len(v)})"


def _favour(diffs: dict) -> str:
  return f"{sum(v > 0 for v in diffs.values())} / {sum(v < 0 for v in diffs.values())}"


def _setting_text(setting: dict) -> str:
  if "devices" not in setting:
    return "—"
  g = setting["norm_sync_devices"]
  return (
    f"{setting['devices']} device(s), statistics "
    f"{'per device' if g == 1 else f'over {g} devices'}, lr by {setting['lr_batch_size']} batch"
  )


def comparison_markdown(arms: list[dict], baseline: str | None, wall_times: bool = False) -> str:
  lines = [
    "Final validation accuracy (%), mean ± std over seeds (n), as trained (the moving-average "
    "inference statistics) and with population (precise) statistics; precise − as trained in "
    "percentage points.",
    "",
    "| arm | as trained | precise statistics | precise − as trained |",
    "|---|---:|---:|---:|",
  ]
  for arm in arms:
    trained, precise = _values(arm, AS_TRAINED), _values(arm, PRECISE)
    gap = {s: precise[s] - trained[s] for s in precise if s in trained}
    lines.append(
      f"| {arm['label']} | {_cell(trained.values())} | {_cell(precise.values())} | "
      f"{_mean_std(gap.values()) if gap else '—'} |"
    )
  base = next((a for a in arms if a["label"] == baseline), None)
  if base is not None:
    lines += [
      "",
      f"Paired difference to {baseline}, same seed (percentage points): mean ± std over the "
      "seeds both have, and how many seeds favour the arm / the baseline.",
      "",
      f"| arm − {baseline} | seeds | as trained | favour | precise statistics | favour |",
      "|---|---:|---:|---:|---:|---:|",
    ]
    for arm in arms:
      if arm is base:
        continue
      cells = []
      for key in (AS_TRAINED, PRECISE):
        a, b = _values(arm, key), _values(base, key)
        d = {s: a[s] - b[s] for s in a if s in b}
        cells += [_mean_std(d.values()), _favour(d)] if d else ["—", "—"]
      seeds = len(set(_values(arm, AS_TRAINED)) & set(_values(base, AS_TRAINED)))
      lines.append(f"| {arm['label']} | {seeds} | " + " | ".join(cells) + " |")
  seeds = sorted({s for arm in arms for s in arm["runs"]})
  lines += [
    "",
    "Every run: as trained / precise statistics (%), by seed.",
    "",
    "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |",
    "|---|" + "---:|" * len(seeds),
  ]
  for arm in arms:
    cells = []
    for s in seeds:
      r = arm["runs"].get(s)
      if r is None:
        cells.append("—")
        continue
      t, p = r["summary"].get(AS_TRAINED), r["summary"].get(PRECISE)
      cells.append(f"{100 * t:.2f}" + (f" / {100 * p:.2f}" if p is not None else ""))
    lines.append(f"| {arm['label']} | " + " | ".join(cells) + " |")
  if wall_times:
    lines += [
      "",
      "Setting and wall time of every arm (minutes per run, mean and range over its seeds; "
      "the runs shared the machine two at a time).",
      "",
      "| arm | setting | minutes per run |",
      "|---|---|---:|",
    ]
    for arm in arms:
      walls = np.array([r["wall"] for r in arm["runs"].values()], float) / 60
      lines.append(
        f"| {arm['label']} | {_setting_text(arm['setting'])} | "
        f"{walls.mean():.1f} [{walls.min():.1f}, {walls.max():.1f}] |"
      )
  lines += ["", "Arms (LABEL=PREFIX of the runs PREFIX-s<seed>):", ""]
  lines += [f"* `{arm['spec']}`" for arm in arms]
  return "\n".join(lines) + "\n"


def _epoch_matrix(arm: dict, key) -> tuple[list[int], np.ndarray] | None:
  curves = []
  for r in arm["runs"].values():
    pts = [(rec["epoch"], key(rec)) for rec in r["records"]]
    pts = [(e, v) for e, v in pts if v is not None]
    if pts:
      curves.append(pts)
  if not curves:
    return None
  length = min(len(c) for c in curves)
  return [e for e, _ in curves[0][:length]], 100 * np.array(
    [[v for _, v in c[:length]] for c in curves]
  )


def _plot_panels(arms, panels, path, ylabel, zero_line=False):
  plt = _plt()
  fig, axes = plt.subplots(
    1, len(panels), figsize=(6 * len(panels), 4.2), sharey=True, squeeze=False
  )
  for ax, (title, key) in zip(axes[0], panels):
    for i, arm in enumerate(arms):
      found = _epoch_matrix(arm, key)
      if found is None:
        continue
      epochs, acc = found
      plot_seeds_and_mean(ax, epochs, acc, f"C{i}", f"{arm['label']} ({len(acc)})")
    if zero_line:
      ax.axhline(0, color="k", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(ylabel)
  axes[0][-1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_curves(arms, path):
  _plot_panels(
    arms,
    [
      ("as trained (moving-average statistics)", lambda r: r.get("eval_accuracy")),
      ("population (precise) statistics", lambda r: r.get("eval_accuracy_precise")),
    ],
    path,
    "validation accuracy (%)",
  )


def plot_gap(arms, path):
  def gap(r):
    p, t = r.get("eval_accuracy_precise"), r.get("eval_accuracy")
    return None if p is None or t is None else p - t

  _plot_panels(
    arms,
    [("precise − as trained: the cost of the moving-average statistics", gap)],
    path,
    "accuracy points",
    zero_line=True,
  )


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_multi_string("arm", [], "LABEL=ROOT/<norm>-m<m> (repeat: one per arm).")
  flags.DEFINE_string("baseline", None, "The LABEL of the arm every other arm is paired with.")
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_bool("wall_times", False, "Also tabulate each arm's setting and wall time per run.")


def main(argv):
  del argv
  if len(FLAGS.arm) < 1:
    raise SystemExit("--arm: give at least one LABEL=ROOT/<norm>-m<m>.")
  try:
    arms = [load_arm(spec) for spec in FLAGS.arm]
  except ValueError as e:
    raise SystemExit(str(e)) from None
  if FLAGS.baseline is not None and FLAGS.baseline not in [a["label"] for a in arms]:
    raise SystemExit(f"--baseline {FLAGS.baseline!r} is not the label of any --arm.")
  empty = [a["spec"] for a in arms if not a["runs"]]
  if empty:
    raise SystemExit(f"--arm: no completed runs for {empty}.")
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "comparison.md").write_text(comparison_markdown(arms, FLAGS.baseline, FLAGS.wall_times))
  plot_curves(arms, out / "curves.png")
  plot_gap(arms, out / "gap.png")
  print((out / "comparison.md").read_text())
  print(f"wrote {out}/comparison.md, curves.png, gap.png")


def cli():
  """The ``mbn-compare`` console script (``python -m tools.compare``)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
