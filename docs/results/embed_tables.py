"""Copies the regenerated tables into the write-ups (run by regenerate.sh, after it).

Replaces what sits between `<!-- KEY -->` and `<!-- /KEY -->` markers:
  * docs/results/cpu_repro.md, ALL_NORMS_TABLES: every table of
    cpu_repro_faithful/results.md except the last one (the every-run list);
  * docs/results/cpu_repro.md, LAG_TABLE: the three tables of
    cpu_repro_lag_ablation/comparison.md (with their captions);
  * README.md, README_TABLE: as trained / precise statistics per norm and m
    (mean ± std over seeds, one decimal), from the faithful run records;
  * docs/results/multi_device.md, MD_MAIN / MD_VS_SYNCBN / MD_GLOBAL_LR /
    MD_GLOBAL_LR_VS_SYNCBN / MD_ONE_VS_FOUR: the tables of the comparisons
    under docs/results/multi_device/ (without their arm lists);
  * README.md, README_MULTI_DEVICE_TABLE: the four-device arms, one line each
    (as trained / precise statistics, and the paired difference to BN);
  * docs/results/no_communication.md, NC_MAIN / NC_ONE_DEVICE / NC_CENTRED_REFERENCES /
    NC_ONE_DEVICE_CENTRED_REFERENCES: the tables of no_communication/,
    no_communication/one_device/ and their centred_references/ (issue 36, running);
  * docs/results/fine_tuning.md, FT_PRETRAIN / FT_MAIN / FT_CENTRED_SOURCE: the tables of
    fine_tuning/pretrain/, fine_tuning/ and fine_tuning/centred_source/ (issue 31).
Idempotent: running it twice changes nothing.
"""

import pathlib
import re
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
sys.path.insert(0, str(REPO))

from tools import compare, report  # noqa: E402

MULTI = "docs/results/multi_device_runs"
# The four-device arms of the README's table: (label, arm spec, statistics batch, lr).
README_MULTI_ARMS = [
  ("BN", f"{MULTI}/bn/bn-m2", "2 (own device)", "0.1·2/64"),
  ("MBN", f"{MULTI}/mbn/mbn-m2", "2 (own device)", "0.1·2/64"),
  ("SyncBN", f"{MULTI}/syncbn/bn-m2", "8 (all devices)", "0.1·2/64"),
  ("SyncMBN", f"{MULTI}/syncmbn/mbn-m2", "8 (all devices)", "0.1·2/64"),
  ("GN", f"{MULTI}/gn/gn-m2", "—", "0.1·2/64"),
  ("BN", f"{MULTI}/bn-globallr/bn-m2", "2 (own device)", "0.1·8/64"),
  ("MBN", f"{MULTI}/mbn-globallr/mbn-m2", "2 (own device)", "0.1·8/64"),
  ("SyncBN", f"{MULTI}/syncbn-globallr/bn-m2", "8 (all devices)", "0.1·8/64"),
  ("BN, 8 per device", f"{MULTI}/bn8/bn-m8", "8 (own device)", "0.1·8/64"),
]


def blocks(markdown: str) -> list[str]:
  """The markdown split at blank lines (a caption, a table, ...)."""
  return [b.strip() for b in markdown.split("\n\n") if b.strip()]


def put(text: str, key: str, body: str) -> str:
  begin, end = f"<!-- {key} -->", f"<!-- /{key} -->"
  if begin not in text or end not in text:
    raise SystemExit(f"marker {begin} ... {end} not found")
  pattern = re.escape(begin) + ".*?" + re.escape(end)
  return re.sub(pattern, lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)


def readme_table(root: pathlib.Path) -> str:
  """As trained / precise statistics per norm and m, from `report.aggregate`."""
  runs = report.load_runs(root)
  trained, precise = report.aggregate(runs), report.aggregate(runs, report.PRECISE)
  sizes = sorted({m for _, m in trained})
  rows = [
    "| norm | " + " | ".join(f"m = {m}" for m in sizes) + " |",
    "|---|" + "---|" * len(sizes),
  ]

  def mean_std(cell) -> str:
    mean, std, n, _ = cell
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"

  for norm in report._order({n for n, _ in trained}):
    cells = []
    for m in sizes:
      if (norm, m) not in trained:
        cells.append("—")
        continue
      precise_cell = mean_std(precise[(norm, m)]) if (norm, m) in precise else "—"
      cells.append(f"{mean_std(trained[(norm, m)])} / {precise_cell} (n={trained[(norm, m)][2]})")
    rows.append(f"| {report.NORM_LABEL[norm]} | " + " | ".join(cells) + " |")
  seed_counts = {cell[2] for cell in trained.values()}
  note = (
    "(as trained / with precise statistics; n = seeds in the cell"
    + ("" if len(seed_counts) > 1 else f", {seed_counts.pop()} everywhere")
    + "; GN has no batch statistics.)"
  )
  return "\n".join(rows) + "\n\n" + note


def _mean_std(values) -> str:
  v = 100 * np.asarray(list(values), float)
  return f"{v.mean():+.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():+.1f}"


def readme_multi_device_table() -> str:
  """The four-device arms: as trained / precise, and the paired difference to BN at the same lr."""
  rows = [
    "| norm | statistics over | lr | as trained / precise (%) | − BN at the same lr, paired (points) |",
    "|---|---|---|---|---|",
  ]
  arms = [
    (label, stats, lr, compare.load_arm(f"{label}={REPO / spec}"))
    for label, spec, stats, lr in README_MULTI_ARMS
  ]
  bn_of_lr = {lr: arm for label, stats, lr, arm in arms if label == "BN"}
  for label, stats, lr, arm in arms:
    trained = compare._values(arm, compare.AS_TRAINED)
    precise = compare._values(arm, compare.PRECISE)
    cell = _mean_std(trained.values()).lstrip("+")
    cell += f" / {_mean_std(precise.values()).lstrip('+')}" if precise else " / —"
    base = compare._values(bn_of_lr[lr], compare.AS_TRAINED)
    diff = {s: trained[s] - base[s] for s in trained if s in base}
    paired = "—" if label == "BN" else f"{_mean_std(diff.values())} ({compare._favour(diff)} seeds)"
    rows.append(f"| {label} | {stats} | {lr} | {cell} (n={len(trained)}) | {paired} |")
  return "\n".join(rows)


def comparison_tables(name: str, under: str = "multi_device") -> str:
  """A comparison.md of docs/results/<under>/ without its trailing list of arms."""
  parts = blocks((RESULTS / under / name / "comparison.md").read_text())
  return "\n\n".join(parts[:-2])


def main() -> None:
  lag = blocks((RESULTS / "cpu_repro_lag_ablation" / "comparison.md").read_text())
  faithful = blocks((RESULTS / "cpu_repro_faithful" / "results.md").read_text())
  page = RESULTS / "cpu_repro.md"
  text = put(page.read_text(), "LAG_TABLE", "\n\n".join(lag[0:6]))
  text = put(text, "ALL_NORMS_TABLES", "\n\n".join(faithful[:-2]))
  page.write_text(text)
  readme = REPO / "README.md"
  table = readme_table(RESULTS / "faithful_runs" / "faithful")
  text = put(readme.read_text(), "README_TABLE", table)
  readme.write_text(put(text, "README_MULTI_DEVICE_TABLE", readme_multi_device_table()))
  page = RESULTS / "multi_device.md"
  text = page.read_text()
  for key, name in [
    ("MD_MAIN", "."),
    ("MD_VS_SYNCBN", "vs_syncbn"),
    ("MD_GLOBAL_LR", "global_lr"),
    ("MD_GLOBAL_LR_VS_SYNCBN", "global_lr/vs_syncbn"),
    ("MD_ONE_VS_FOUR", "one_vs_four_devices"),
  ]:
    text = put(text, key, comparison_tables(name))
  page.write_text(text)
  for page_name, keys in [
    (
      "no_communication.md",
      [
        ("NC_MAIN", "."),
        ("NC_ONE_DEVICE", "one_device"),
        ("NC_CENTRED_REFERENCES", "centred_references"),
        ("NC_ONE_DEVICE_CENTRED_REFERENCES", "one_device/centred_references"),
      ],
    ),
    (
      "fine_tuning.md",
      [("FT_PRETRAIN", "pretrain"), ("FT_MAIN", "."), ("FT_CENTRED_SOURCE", "centred_source")],
    ),
  ]:
    page = RESULTS / page_name
    text = page.read_text()
    for key, name in keys:
      text = put(text, key, comparison_tables(name, page_name.removesuffix(".md")))
    page.write_text(text)


if __name__ == "__main__":
  main()
