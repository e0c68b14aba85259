"""Copies the regenerated tables into the write-ups (run by regenerate.sh, after it).

Replaces what sits between `<!-- KEY -->` and `<!-- /KEY -->` markers:
  * docs/results/cpu_repro.md, ALL_NORMS_TABLES: every table of
    cpu_repro_faithful/results.md except the last one (the every-run list);
  * docs/results/cpu_repro.md, LAG_TABLE: the three tables of
    cpu_repro_lag_ablation/comparison.md (with their captions);
  * README.md, README_TABLE: as trained / precise statistics per norm and m
    (mean ± std over seeds, one decimal), from the faithful run records.
Idempotent: running it twice changes nothing.
"""

import pathlib
import re
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
sys.path.insert(0, str(REPO))

from train import report  # noqa: E402


def blocks(markdown: str) -> list[str]:
  """The markdown split at blank lines (a caption, a table, ...)."""
  return [b.strip() for b in markdown.split("\n\n") if b.strip()]


def put(text: str, key: str, body: str) -> str:
  begin, end = f"<!-- {key} -->", f"<!-- /{key} -->"
  if begin not in text or end not in text:
    raise SystemExit(f"marker {begin} ... {end} not found")
  pattern = re.escape(begin) + ".*?" + re.escape(end)
  return re.sub(pattern, lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)


def mean_std(values) -> str:
  v = 100 * np.asarray(values, dtype=float)
  return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def readme_table(root: pathlib.Path) -> str:
  runs = [r for r in report.load_runs(root) if r["status"] == "completed"]
  sizes = sorted({r["m"] for r in runs})
  rows = [
    "| norm | " + " | ".join(f"m = {m}" for m in sizes) + " |",
    "|---|" + "---|" * len(sizes),
  ]
  seed_counts = set()
  for norm in ("bn", "mbn", "brn", "gn"):
    cells = []
    for m in sizes:
      cell_runs = [r for r in runs if r["norm"] == norm and r["m"] == m]
      if not cell_runs:
        cells.append("—")
        continue
      seed_counts.add(len(cell_runs))
      trained = mean_std([r["summary"]["final_eval_accuracy"] for r in cell_runs])
      precise = [r["summary"].get("final_eval_accuracy_precise") for r in cell_runs]
      precise_cell = mean_std(precise) if all(p is not None for p in precise) else "—"
      cells.append(f"{trained} / {precise_cell} (n={len(cell_runs)})")
    rows.append(f"| {report.NORM_LABEL[norm]} | " + " | ".join(cells) + " |")
  note = (
    "(as trained / with precise statistics; n = seeds in the cell"
    + ("" if len(seed_counts) > 1 else f", {seed_counts.pop()} everywhere")
    + "; GN has no batch statistics.)"
  )
  return "\n".join(rows) + "\n\n" + note


def main() -> None:
  lag = blocks((RESULTS / "cpu_repro_lag_ablation" / "comparison.md").read_text())
  faithful = blocks((RESULTS / "cpu_repro_faithful" / "results.md").read_text())
  page = RESULTS / "cpu_repro.md"
  text = put(page.read_text(), "LAG_TABLE", "\n\n".join(lag[0:6]))
  text = put(text, "ALL_NORMS_TABLES", "\n\n".join(faithful[:-2]))
  page.write_text(text)
  readme = REPO / "README.md"
  table = readme_table(RESULTS / "faithful_runs" / "faithful")
  readme.write_text(put(readme.read_text(), "README_TABLE", table))


if __name__ == "__main__":
  main()
