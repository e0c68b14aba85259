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

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
sys.path.insert(0, str(REPO))

from tools import report  # noqa: E402


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
