"""train/writer.py's pure pieces: the final comparison table and the precise-statistics note."""

import pytest

from train.writer import comparison_table, precise_statistics_note


def summary(acc, precise=None, **extra):
  return {
    "model": "tiny_cnn",
    "norm": "mbn",
    "final_eval_accuracy": acc,
    "final_eval_accuracy_precise": precise,
    "best_eval_accuracy": acc,
    "final_train_accuracy": 0.9,
    "epochs_completed": 10,
    "wall_time_s": 12.3,
    **extra,
  }


def cells(table):
  """The table's rows, each split into its cells (columns are separated by 2+ spaces)."""
  return [[c for c in line.strip().split("  ") if c] for line in table.splitlines()]


def test_comparison_table_shows_precise_accuracy_when_measured():
  table = comparison_table({"bn": summary(0.8, 0.85, norm="bn"), "mbn": summary(0.5, 0.9)})
  rows = [[c.strip() for c in r] for r in cells(table)]
  assert rows[0] == [
    "norm",
    "eval acc",
    "precise acc",
    "best eval acc",
    "train acc",
    "epochs",
    "time (s)",
  ]
  assert rows[1] == ["bn", "0.8000", "0.8500", "0.8000", "0.9000", "10", "12"]
  assert rows[2] == ["mbn", "0.5000", "0.9000", "0.5000", "0.9000", "10", "12"]


def test_comparison_table_marks_a_run_without_precise_statistics():
  table = comparison_table({"gn": summary(0.7, None, norm="gn"), "mbn": summary(0.5, 0.9)})
  rows = [[c.strip() for c in r] for r in cells(table)]
  assert rows[0][2] == "precise acc" and rows[1][2] == "—" and rows[2][2] == "0.9000"


def test_comparison_table_has_no_precise_column_when_none_measured():
  table = comparison_table({"bn": summary(0.8, norm="bn"), "mbn": summary(0.85)})
  assert "precise" not in table
  assert [r[0].strip() for r in cells(table)] == ["norm", "bn", "mbn"]


@pytest.mark.parametrize(
  "acc, precise",
  [
    (0.80, None),  # not measured
    (0.80, 0.805),  # half a point
    (0.80, 0.81),  # exactly one point is not more than one
    (0.90, 0.80),  # the moving statistics won
    (None, 0.9),
    (float("nan"), 0.9),
    (0.5, float("inf")),
  ],
)
def test_no_note_unless_precise_statistics_win_by_more_than_a_point(acc, precise):
  assert precise_statistics_note(summary(acc, precise)) is None


def test_note_when_precise_statistics_win_by_more_than_a_point():
  note = precise_statistics_note(summary(0.50, 1.00))
  assert note is not None and "\n" not in note
  assert note.startswith("note: tiny_cnn/mbn: precise statistics")
  assert "1.0000" in note and "0.5000" in note and "50.0 points" in note
  assert "precise_batch_stats" in note
  assert precise_statistics_note(summary(0.80, 0.8101)) is not None
