"""tools.sweep (run naming, skipping, commands) and tools.report (tables, plots)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tools import report, sweep

ROOT = pathlib.Path(__file__).resolve().parent.parent


def fake_run(root, norm, m, seed, accs, wall=10.0, status="completed", precise=None):
  wd = root / sweep.run_name(norm, m, seed)
  wd.mkdir(parents=True)
  records = [
    {
      "epoch": e + 1,
      "step": 10 * (e + 1),
      "eval_accuracy": a,
      "train_accuracy": a,
      "lambda": 0.1 * e if norm == "mbn" else None,
    }
    for e, a in enumerate(accs)
  ]
  for rec, p in zip(records, precise or []):
    rec["eval_accuracy_precise"] = p
  (wd / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
  (wd / "summary.json").write_text(
    json.dumps(
      {
        "status": status,
        "epochs_completed": len(accs),
        "final_eval_accuracy": accs[-1],
        "best_eval_accuracy": max(accs),
        "final_train_accuracy": accs[-1],
        "final_eval_accuracy_precise": precise[-1] if precise else None,
        "config": {"ideal_batch_size": 32, "tau0": 0.85},
      }
    )
  )
  (wd / "sweep.json").write_text(json.dumps({"wall_seconds": wall}))


def test_run_names_round_trip():
  assert sweep.parse_run_name(sweep.run_name("mbn", 2, 1)) == ("mbn", 2, 1)
  with pytest.raises(ValueError):
    sweep.parse_run_name("tensorboard")


def test_report_aggregates_over_seeds_and_plots(tmp_path):
  fake_run(tmp_path, "bn", 2, 0, [0.3, 0.40])
  fake_run(tmp_path, "bn", 2, 1, [0.3, 0.50])
  fake_run(tmp_path, "mbn", 2, 0, [0.3, 0.60])
  fake_run(tmp_path, "mbn", 8, 0, [0.3, 0.70])
  (tmp_path / "gn-m2-s0").mkdir()  # unfinished: ignored
  fake_run(tmp_path, "bn", 2, 2, [0.1], status="interrupted")  # listed, not averaged
  runs = report.load_runs(tmp_path)
  assert len(runs) == 5
  agg = report.aggregate(runs)
  mean, std, n, wall = agg[("bn", 2)]
  assert mean == pytest.approx(0.45) and std == pytest.approx(np.std([0.4, 0.5], ddof=1)) and n == 2
  md = report.results_markdown(runs)
  assert "| BN | 45.00 ± 7.07 (n=2) | — |" in md
  assert "| MBN | 60.00 ± 0.00 (n=1) | 70.00 ± 0.00 (n=1) |" in md
  out = tmp_path / "out"
  subprocess.run(
    [sys.executable, "-m", "tools.report", f"--root={tmp_path}", f"--out={out}"],
    check=True,
    capture_output=True,
    cwd=ROOT,
  )
  for name in (
    "results.md",
    "accuracy_vs_batch_size.png",
    "curves_m2.png",
    "momentum_schedules.png",
  ):
    assert (out / name).stat().st_size > 100, name


def test_sweep_skips_finished_runs_and_orders_small_batches_first(tmp_path):
  fake_run(tmp_path, "bn", 2, 0, [0.5])
  fake_run(tmp_path, "mbn", 2, 0, [0.2], status="interrupted")  # resumed, not skipped
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "tools.sweep",
      "--config=configs/quickstart.py",
      f"--root={tmp_path}",
      "--norms=bn,mbn",
      "--batch_sizes=8,2",
      "--seeds=0",
      "--override=num_epochs=1",
      "--dry_run",
    ],
    check=True,
    capture_output=True,
    text=True,
    cwd=ROOT,
  ).stdout.splitlines()
  assert out[0] == "[1/4] bn-m2-s0: finished, skipped"
  assert out[1].startswith("[2/4] mbn-m2-s0: ") and "--config.per_device_batch_size=2" in out[1]
  assert "--config.num_epochs=1" in out[1] and "--config.norm=mbn" in out[1]
  assert out[2].startswith("[3/4] bn-m8-s0")


def test_report_pairs_seeds_and_tabulates_precise_statistics(tmp_path):
  fake_run(tmp_path, "bn", 2, 0, [0.3, 0.40], precise=[0.35, 0.45])
  fake_run(tmp_path, "bn", 2, 1, [0.3, 0.50], precise=[0.35, 0.52])
  fake_run(tmp_path, "mbn", 2, 0, [0.3, 0.46], precise=[0.35, 0.47])
  fake_run(tmp_path, "mbn", 2, 1, [0.3, 0.49], precise=[0.35, 0.56])
  fake_run(tmp_path, "mbn", 2, 2, [0.3, 0.90], precise=[0.35, 0.90])  # no BN partner: unpaired
  runs = report.load_runs(tmp_path)
  diffs = report.paired_differences(runs)
  assert diffs[("mbn", 2)] == pytest.approx({0: 0.06, 1: -0.01})
  assert report.paired_differences(runs, report.PRECISE)[("mbn", 2)] == pytest.approx(
    {0: 0.02, 1: 0.04}
  )
  md = report.results_markdown(runs)
  d = 100 * np.array([0.06, -0.01])
  assert f"| MBN − BN | 2 | 2 | {d.mean():+.2f} ± {d.std(ddof=1):.2f} | 1 / 1 |" in md
  assert "| +3.00 ± 1.41 | 2 / 0 |" in md
  assert "| BN | 48.50 ± 4.95 (n=2) |\n" in md  # precise table: mean of 0.45 and 0.52
  gap = 100 * np.array([0.05, 0.02])
  assert f"| BN | 2 | 2 | {gap.mean():+.2f} ± {gap.std(ddof=1):.2f} [+2.00, +5.00] |" in md
  # Last-epoch change: BN 0.40-0.30, 0.50-0.30 (the only evaluations: 30 % of 2 is 1 step).
  d = 100 * np.array([0.10, 0.20])
  assert (
    f"| BN | 2 | 2 | {d.mean():+.2f} ± {d.std(ddof=1):.2f} [+10.00, +20.00] | 15.00 [20.00] |" in md
  )
  report.plot_curves(runs, 2, tmp_path / "c.png")
  assert (tmp_path / "c.png").stat().st_size > 100
  assert report.plot_gap_curves(runs, 2, tmp_path / "g.png")
  assert (tmp_path / "g.png").stat().st_size > 100
  assert not report.plot_gap_curves(runs, 8, tmp_path / "none.png")  # no runs at m = 8


def test_compare_pairs_arms_from_different_roots_by_seed(tmp_path):
  from tools import compare

  a, b = tmp_path / "a", tmp_path / "b"
  fake_run(a, "bn", 2, 0, [0.3, 0.40], precise=[0.3, 0.45])
  fake_run(a, "bn", 2, 1, [0.3, 0.50], precise=[0.3, 0.52])
  fake_run(b, "mbn", 2, 0, [0.3, 0.46], precise=[0.3, 0.47])
  fake_run(b, "mbn", 2, 1, [0.3, 0.48], precise=[0.3, 0.49])
  fake_run(b, "mbn", 2, 2, [0.3, 0.90], precise=[0.3, 0.90])  # no partner: not paired
  arms = [compare.load_arm(f"BN={a}/bn-m2"), compare.load_arm(f"MBN accum={b}/mbn-m2")]
  md = compare.comparison_markdown(arms, "BN")
  # as trained: BN 45.00 ± 7.07 (n=2); paired MBN − BN over seeds 0, 1: +6, −2 → +2.00 ± 5.66; precise +2, −3.
  assert "| BN | 45.00 ± 7.07 (n=2) | 48.50 ± 4.95 (n=2) | +3.50 ± 2.12 |" in md
  assert "| MBN accum | 2 | +2.00 ± 5.66 | 1 / 1 | -0.50 ± 3.54 | 1 / 1 |" in md
  assert "| MBN accum | 46.00 / 47.00 | 48.00 / 49.00 | 90.00 / 90.00 |" in md
  compare.plot_curves(arms, tmp_path / "c.png")
  compare.plot_gap(arms, tmp_path / "g.png")
  assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "g.png").stat().st_size > 0
  with pytest.raises(ValueError, match="LABEL=ROOT"):
    compare.parse_arm("no-label-here")


def test_report_tabulates_the_late_swings_of_the_as_trained_accuracy(tmp_path):
  # 10 evaluations: the last 30 % are the last 3 changes, here +0.05, -0.08, +0.02 for
  # seed 0 (largest |change| 8 points; the -0.20 earlier is outside the window) and
  # +0.00, +0.01, -0.03 for seed 1.
  a0 = [0.1, 0.2, 0.3, 0.1, 0.3, 0.35, 0.4, 0.45, 0.37, 0.39]
  a1 = [0.1, 0.2, 0.3, 0.3, 0.3, 0.35, 0.4, 0.40, 0.41, 0.38]
  fake_run(tmp_path, "bn", 2, 0, a0)
  fake_run(tmp_path, "bn", 2, 1, a1)
  md = report.results_markdown(report.load_runs(tmp_path))
  last = 100 * np.array([0.39 - 0.37, 0.38 - 0.41])
  row = (
    f"| BN | 2 | 2 | {last.mean():+.2f} ± {last.std(ddof=1):.2f} [-3.00, +2.00] | "
    f"{(8 + 3) / 2:.2f} [8.00] |"
  )
  assert row in md


def test_runs_of_different_settings_never_share_a_cell(tmp_path):
  """Issue 22: per-device and synchronized statistics (or another device count) are other cells."""
  for seed, sync in ((0, 1), (1, 4)):
    fake_run(tmp_path, "bn", 2, seed, [0.3, 0.4 + 0.1 * seed])
    path = tmp_path / sweep.run_name("bn", 2, seed) / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(devices=4, per_device_batch_size=2, global_batch_size=8)
    summary["layout"] = {
      "per_device_batch_size": 2,
      "devices": 4,
      "norm_sync_devices": sync,
      "grad_accum_steps": 1,
    }
    path.write_text(json.dumps(summary))
  runs = report.load_runs(tmp_path)
  with pytest.raises(ValueError, match="different settings.*bn-m2-s0.*bn-m2-s1"):
    report.aggregate(runs)
  from tools import compare

  with pytest.raises(ValueError, match="different settings"):
    compare.load_arm(f"BN={tmp_path / 'bn-m2'}")
  # One setting: fine, and the arm says which.
  (tmp_path / "bn-m2-s1" / "summary.json").unlink()
  arm = compare.load_arm(f"BN={tmp_path / 'bn-m2'}")
  assert arm["setting"]["norm_sync_devices"] == 1 and arm["setting"]["devices"] == 4
