r"""Compare labelled arms of one or more sweeps, paired by seed: a table and curves.

    python -m tools.compare --out docs/results/accumulation \
      --arm "BN, batch 2=docs/results/faithful_runs/faithful/bn-m2" \
      --arm "MBN, 16 × 2, deferred=docs/results/accumulation_runs/deferred/mbn-m2" \
      --baseline "BN, batch 2"

An *arm* is ``LABEL=PREFIX``: the finished runs ``PREFIX-s<seed>`` written by
:mod:`tools.sweep` (``PREFIX`` is ``<root>/<norm>-m<m>``), so arms can come
from different sweep roots (another schedule, gradient accumulation); or
``LABEL=WORKDIR``, one finished run of ``python -m train`` (a directory with a
summary.json: its seed is the run's). Writes into ``--out``:

* ``comparison.md`` — per arm: final validation accuracy as trained and with
  population ("precise") statistics, mean ± std over seeds (n), their
  difference; the *paired* difference of every arm to each ``--baseline``
  (repeat the flag for several) over the seeds both have (same seed = same
  initialization and data order), with how many seeds favour each; every run,
  seed by seed; with ``--wall_times`` each arm's setting and minutes per run:
  training (summed over epochs from metrics.jsonl, whatever the interruptions)
  and wall clock (of the runs not resumed: the record of a resumed run holds its
  last process only, :func:`tools.report.resume_evidence`);
  with ``--commands`` the training command of every arm, from its runs'
  sweep.json. Norms without population statistics (GN, FrozenBN, MABN) have
  "—" there;
* ``curves.png`` — validation accuracy per epoch per arm (every seed thin,
  the mean bold), as trained and with precise statistics;
* ``gap.png`` — precise − as-trained accuracy per epoch per arm;
* ``final.png`` — every arm's final accuracy, seed by seed, with its mean ± std.

``--seeds=0,1,2`` names the seeds every arm is planned to have, for an
experiment still running: an arm missing some (or all: its directory need not
exist yet) is kept, every count reads "n of 3", a missing run reads
"pending", and a line above the tables says how many runs are in.
"""

from __future__ import annotations

import pathlib
import re
import shlex

import numpy as np
from absl import app, flags

from tools.report import (
  PRECISE,
  TIME_NOTE,
  _mean_std,
  _plt,
  check_one_setting,
  load_run,
  load_runs,
  plot_seeds_and_mean,
)

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


def load_arm(spec: str, seeds: list[int] | None = None) -> dict:
  """An arm: its label, the spec, its completed runs by seed and the seeds it should have.

  ``LABEL=WORKDIR`` (a directory holding summary.json) is one run. With ``seeds`` (the
  planned seeds of a running experiment) a prefix whose directory does not exist yet is an arm
  with no runs; without, a ValueError.
  """
  label, sep, prefix = spec.rpartition("=")
  single = pathlib.Path(prefix)
  if sep and label and (single / "summary.json").is_file():
    run = load_run(single)
    runs = {run["seed"]: run} if run["status"] == "completed" else {}
  else:
    label, root, norm, m = parse_arm(spec)
    if not root.is_dir() and seeds is None:
      raise ValueError(f"--arm {spec!r}: {root} is not a directory.")
    runs = {
      r["seed"]: r
      for r in (load_runs(root) if root.is_dir() else [])
      if r["norm"] == norm and r["m"] == m and r["status"] == "completed"
    }
  if seeds is not None:  # a run of a seed that is not planned stays out of every number
    runs = {s: r for s, r in runs.items() if s in seeds}
  setting = check_one_setting(list(runs.values()), f"--arm {spec!r}")
  return {
    "label": label,
    "spec": spec,
    "runs": runs,
    "setting": setting,
    "seeds": seeds,
    "single": (single / "summary.json").is_file(),
  }


def _values(arm: dict, key: str) -> dict[int, float]:
  return {s: r["summary"][key] for s, r in arm["runs"].items() if r["summary"].get(key) is not None}


def _of(n: int, seeds) -> str:
  """``n``, or ``n of N`` when N seeds are planned."""
  return f"{n}" if seeds is None else f"{n} of {len(seeds)}"


def _cell(values, seeds=None, pending=False) -> str:
  """Mean ± std (n); with planned ``seeds``: "(n=k of N)", one value without a std, and
  "pending" for an arm with no finished run yet ("—": runs without this number)."""
  v = 100 * np.asarray(list(values), float)
  if not len(v):
    return f"pending (n=0 of {len(seeds)})" if pending and seeds is not None else "—"
  spread = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""  # one run has no spread
  return f"{v.mean():.2f}{spread} (n={_of(len(v), seeds)})"


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


def _progress(arms: list[dict], seeds: list[int]) -> str:
  """The line that says how many of the planned runs are in, and which are missing."""
  planned = len(arms) * len(seeds)
  done = sum(s in arm["runs"] for arm in arms for s in seeds)
  missing = []
  for arm in arms:
    absent = [s for s in seeds if s not in arm["runs"]]
    if absent:
      missing.append(
        f"{arm['label']} (seed{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))})"
      )
  seed_text = ", ".join(map(str, seeds))
  if not missing:
    return f"**All {planned} planned runs are in** (seeds {seed_text} of every arm)."
  return (
    f"**Incomplete: {done} of {planned} planned runs are in** (seeds {seed_text} of every arm); "
    f"pending: {'; '.join(missing)}. Nothing here is final: every number below changes as the "
    "other seeds come in."
  )


def _command(run: dict) -> str | None:
  """The run's training command from its sweep.json, seed written SEED, as a shell line."""
  if not run.get("command"):
    return None
  seed = str(run["seed"])
  argv = ["python"] + [
    re.sub(rf"^(--config\.seed=){seed}$", r"\g<1>SEED", re.sub(rf"-s{seed}$", "-sSEED", a))
    for a in run["command"][1:]
  ]
  devices = run["summary"].get("devices", 1)
  prefix = f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} " if devices > 1 else ""
  return prefix + shlex.join(argv)


def _commands(arms: list[dict]) -> list[str]:
  lines = [
    "",
    "The command of every arm (from its runs' sweep.json; SEED is the seed, the runs "
    "started from a worktree of the pinned commit):",
    "",
    "```bash",
  ]
  for arm in arms:
    commands = sorted({c for r in arm["runs"].values() if (c := _command(r)) is not None})
    if not arm["runs"]:
      lines += [f"# {arm['label']}: no finished run yet"]
      continue
    lines.append(f"# {arm['label']} (seeds {', '.join(map(str, sorted(arm['runs'])))})")
    lines += commands or ["#   (no command recorded: see the write-up)"]
  return lines + ["```"]


def comparison_markdown(
  arms: list[dict],
  baseline: str | list[str] | None,
  wall_times: bool = False,
  seeds: list[int] | None = None,
  commands: bool = False,
) -> str:
  """The tables of comparison.md; ``baseline``: one label or several (a paired table each).

  ``seeds``: the seeds every arm is planned to have (a running experiment): counts read
  "k of N", missing runs "pending", and a first line says what is missing.
  """
  lines = [] if seeds is None else [_progress(arms, seeds), ""]
  lines += [
    "Final validation accuracy (%), mean ± std over seeds (n; the sample std, n − 1 in the "
    "denominator; one run: no std), as trained (the moving-average "
    "inference statistics) and with population (precise) statistics; precise − as trained in "
    "percentage points."
    + ("" if seeds is None else " —: the norm has no population statistics (FrozenBN, MABN, GN)."),
    "",
    "| arm | as trained | precise statistics | precise − as trained |",
    "|---|---:|---:|---:|",
  ]
  for arm in arms:
    trained, precise = _values(arm, AS_TRAINED), _values(arm, PRECISE)
    gap = {s: precise[s] - trained[s] for s in precise if s in trained}
    lines.append(
      f"| {arm['label']} | {_cell(trained.values(), seeds, not arm['runs'])} | "
      f"{_cell(precise.values(), seeds, not arm['runs'])} | "
      f"{_mean_std(gap.values()) if gap else '—'} |"
    )
  baselines = [baseline] if isinstance(baseline, str) else list(baseline or [])
  for base_label in baselines:
    lines += _paired_lines(arms, base_label, seeds)
  lines += _seed_lines(arms, seeds)
  if wall_times:
    lines += _wall_lines(arms)
  if commands:
    lines += _commands(arms)
  if any(arm.get("single") for arm in arms):
    lines += [
      "",
      "Arms (LABEL=PREFIX of the runs PREFIX-s<seed>, or LABEL=WORKDIR of one run):",
      "",
    ]
  else:
    lines += ["", "Arms (LABEL=PREFIX of the runs PREFIX-s<seed>):", ""]
  lines += [f"* `{arm['spec']}`" for arm in arms]
  return "\n".join(lines) + "\n"


def _paired_lines(arms: list[dict], baseline: str, seeds: list[int] | None) -> list[str]:
  lines = []
  base = next((a for a in arms if a["label"] == baseline), None)
  if base is not None:
    lines += [
      "",
      f"Paired difference to {baseline}, same seed (percentage points): mean ± std over the "
      "seeds both have, and how many seeds favour the arm / the baseline (a tie favours neither).",
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
      paired = len(set(_values(arm, AS_TRAINED)) & set(_values(base, AS_TRAINED)))
      lines.append(f"| {arm['label']} | {_of(paired, seeds)} | " + " | ".join(cells) + " |")
  return lines


def _seed_lines(arms: list[dict], planned: list[int] | None) -> list[str]:
  seeds = sorted({s for arm in arms for s in arm["runs"]} | set(planned or []))
  lines = [
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
        cells.append("pending" if planned is not None and s in planned else "—")
        continue
      t, p = r["summary"].get(AS_TRAINED), r["summary"].get(PRECISE)
      cells.append(f"{100 * t:.2f}" + (f" / {100 * p:.2f}" if p is not None else ""))
    lines.append(f"| {arm['label']} | " + " | ".join(cells) + " |")
  return lines


def _minutes(seconds: list[float]) -> str:
  """Minutes: mean [min, max] over runs, "x (one run)", or "—" for none."""
  m = np.asarray(seconds, float) / 60
  if len(m) > 1:
    return f"{m.mean():.1f} [{m.min():.1f}, {m.max():.1f}]"
  return f"{m[0]:.1f} (one run)" if len(m) else "—"


def _wall_lines(arms: list[dict]) -> list[str]:
  lines = [
    "",
    "Setting and time of every arm, minutes per run: mean [min, max] over its seeds (the runs "
    "shared the machine two at a time). " + TIME_NOTE,
    "",
    "| arm | setting | training, minutes per run | wall clock, minutes per run |",
    "|---|---|---:|---:|",
  ]
  for arm in arms:
    runs = list(arm["runs"].values())
    train = _minutes([r["train_seconds"] for r in runs if r.get("train_seconds") is not None])
    whole = [r for r in runs if not r.get("resumed")]
    wall = _minutes([r["wall"] for r in whole])
    resumed = len(runs) - len(whole)
    if resumed and not whole:
      wall = "— (resumed: last segment only)"
    elif resumed:
      wall += f"; {resumed} resumed run{'s' if resumed > 1 else ''} left out"
    lines.append(f"| {arm['label']} | {_setting_text(arm['setting'])} | {train} | {wall} |")
  return lines


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


def _every_label(axes) -> dict:
  """{label: handle} of every labelled line of ``axes``, in order of first appearance."""
  handles = {}
  for ax in axes:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  return handles


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
      planned = arm.get("seeds")
      count = f"{len(acc)}" if planned is None else f"{len(acc)} of {len(planned)}"
      plot_seeds_and_mean(ax, epochs, acc, f"C{i}", f"{arm['label']} ({count})")
    if zero_line:
      ax.axhline(0, color="k", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(ylabel)
  if any(arm.get("seeds") is not None for arm in arms):
    # A running experiment: name every arm drawn in any panel (an arm without precise
    # statistics, MABN or FrozenBN, has no curve in the last one).
    handles = _every_label(axes[0])
    axes[0][-1].legend(list(handles.values()), list(handles), fontsize=8)
  else:
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


def final_points(arm: dict, key: str = AS_TRAINED) -> tuple[list[int], np.ndarray]:
  """(seeds, final validation accuracy in %) of the arm's finished runs that have ``key``."""
  values = _values(arm, key)
  seeds = sorted(values)
  return seeds, 100 * np.array([values[s] for s in seeds], float)


def final_figure(arms):
  """The figure of ``final.png``: every arm's final validation accuracy, one row per arm (top
  to bottom in the order given): each seed a dot (filled: as trained; hollow: with precise
  statistics) and the as-trained mean ± sample std (n − 1) as a bar, the numbers of
  comparison.md's first table."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.42 * len(arms)))
  for row, arm in enumerate(arms):
    y = len(arms) - 1 - row
    color = f"C{row % 10}"
    _, trained = final_points(arm, AS_TRAINED)
    _, precise = final_points(arm, PRECISE)
    if len(trained):
      spread = trained.std(ddof=1) if len(trained) > 1 else 0.0
      ax.errorbar(
        trained.mean(),
        y,
        xerr=spread,
        fmt="|",
        markersize=16,
        capsize=4,
        color=color,
        linewidth=1.5,
      )
      ax.scatter(trained, np.full(len(trained), y + 0.12), color=color, s=22, zorder=3)
    if len(precise):
      ax.scatter(
        precise,
        np.full(len(precise), y - 0.12),
        facecolors="none",
        edgecolors=color,
        s=22,
        zorder=3,
      )
  ax.set_yticks(range(len(arms)), [a["label"] for a in reversed(arms)], fontsize=9)
  ax.set_ylim(-0.7, len(arms) - 0.3)
  ax.set_xlabel("final validation accuracy (%)")
  ax.set_title(
    "every seed: ● as trained, ○ precise statistics; bar: as-trained mean ± std", fontsize=9
  )
  ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  return fig


def plot_final(arms, path):
  """Write :func:`final_figure` of ``arms`` to ``path`` (final.png)."""
  fig = final_figure(arms)
  fig.savefig(path, dpi=120)
  _plt().close(fig)


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_multi_string(
    "arm", [], "LABEL=ROOT/<norm>-m<m>, or LABEL=WORKDIR of one run (repeat: one per arm)."
  )
  flags.DEFINE_multi_string(
    "baseline", [], "The LABEL of the arm every other arm is paired with (repeat: a table each)."
  )
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_bool(
    "wall_times",
    False,
    "Also tabulate each arm's setting, training minutes and wall-clock minutes per run.",
  )
  flags.DEFINE_bool("commands", False, "Also list each arm's training command (its sweep.json).")
  flags.DEFINE_list(
    "seeds",
    None,
    "The seeds every arm is planned to have (an experiment still running): arms may miss some "
    "or all of them, and the tables say which.",
  )


def main(argv):
  del argv
  if len(FLAGS.arm) < 1:
    raise SystemExit("--arm: give at least one LABEL=ROOT/<norm>-m<m>.")
  try:
    seeds = None if FLAGS.seeds is None else [int(s) for s in FLAGS.seeds]
    arms = [load_arm(spec, seeds) for spec in FLAGS.arm]
  except ValueError as e:
    raise SystemExit(str(e)) from None
  for baseline in FLAGS.baseline:
    if baseline not in [a["label"] for a in arms]:
      raise SystemExit(f"--baseline {baseline!r} is not the label of any --arm.")
  empty = [a["spec"] for a in arms if not a["runs"]]
  if empty and (seeds is None or len(empty) == len(arms)):
    raise SystemExit(f"--arm: no completed runs for {empty}.")
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  markdown = comparison_markdown(arms, FLAGS.baseline, FLAGS.wall_times, seeds, FLAGS.commands)
  (out / "comparison.md").write_text(markdown)
  plot_curves(arms, out / "curves.png")
  plot_gap(arms, out / "gap.png")
  plot_final(arms, out / "final.png")
  print((out / "comparison.md").read_text())
  print(f"wrote {out}/comparison.md, curves.png, gap.png, final.png")


def cli():
  """The ``mbn-compare`` console script (``python -m tools.compare``)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
