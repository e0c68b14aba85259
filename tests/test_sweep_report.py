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
  assert "| MBN | 60.00 (n=1) | 70.00 (n=1) |" in md  # one run: no spread, not "± 0.00"
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


def test_compare_marks_missing_seeds_and_norms_without_precise_statistics(tmp_path):
  """Issues 31/36: a running experiment — arms missing seeds (or every seed), FrozenBN/MABN
  without population statistics, two baselines — reads as incomplete, never as final."""
  from tools import compare

  fake_run(tmp_path / "bn", "bn", 2, 0, [0.3, 0.40], precise=[0.3, 0.45], wall=60.0)
  fake_run(tmp_path / "bn", "bn", 2, 1, [0.3, 0.50], precise=[0.3, 0.52], wall=180.0)
  fake_run(tmp_path / "frozen", "frozen_bn", 2, 0, [0.5, 0.60], wall=120.0)  # no precise
  fake_run(tmp_path / "frozen", "frozen_bn", 2, 1, [0.5, 0.70], status="interrupted")
  seeds = [0, 1, 2]
  arms = [
    compare.load_arm(f"BN={tmp_path}/bn/bn-m2", seeds),
    compare.load_arm(f"FrozenBN={tmp_path}/frozen/frozen_bn-m2", seeds),
    compare.load_arm(f"MABN={tmp_path}/not_yet/mabn-m2", seeds),  # no directory yet
  ]
  with pytest.raises(ValueError, match="not a directory"):
    compare.load_arm(f"MABN={tmp_path}/not_yet/mabn-m2")  # without planned seeds: an error
  md = compare.comparison_markdown(arms, ["BN", "FrozenBN"], wall_times=True, seeds=seeds)
  assert md.startswith(
    "**Incomplete: 3 of 9 planned runs are in** (seeds 0, 1, 2 of every arm); pending: "
    "BN (seed 2); FrozenBN (seeds 1, 2); MABN (seeds 0, 1, 2). Nothing here is final"
  )
  # BN: 40, 50 as trained; 45, 52 precise; gaps +5, +2. FrozenBN: one seed, one value, no std.
  assert "| BN | 45.00 ± 7.07 (n=2 of 3) | 48.50 ± 4.95 (n=2 of 3) | +3.50 ± 2.12 |" in md
  assert "| FrozenBN | 60.00 (n=1 of 3) | — | — |" in md  # FrozenBN has no precise statistics
  assert "| MABN | pending (n=0 of 3) | pending (n=0 of 3) | — |" in md
  # Paired over seed 0 only: 60 − 40 = +20 points, as trained; no precise pair.
  assert "| FrozenBN | 1 of 3 | +20.00 | 1 / 0 | — | — |" in md
  assert "| MABN | 0 of 3 | — | — | — | — |" in md
  assert "| arm − FrozenBN | seeds |" in md and "| BN | 1 of 3 | -20.00 | 0 / 1 | — | — |" in md
  assert "| BN | 40.00 / 45.00 | 50.00 / 52.00 | pending |" in md
  assert "| FrozenBN | 60.00 | pending | pending |" in md  # the interrupted seed 1 is pending
  assert "| MABN | pending | pending | pending |" in md
  # No images_per_sec in these records: no training time; the wall clock of sweep.json.
  assert "| BN | — | — | 2.0 [1.0, 3.0] |" in md and "| MABN | — | — | — |" in md
  assert "| FrozenBN | — | — | 2.0 (one run) |" in md
  md = compare.comparison_markdown(arms, None, seeds=seeds, commands=True)
  assert "# MABN: no finished run yet\n```" in md
  compare.plot_curves(arms, tmp_path / "c.png")  # arms without runs or precise curves: skipped
  plt = report._plt()
  fig, axes = plt.subplots(1, 2)
  axes[0].plot([1], [1], label="FrozenBN")  # as trained only: no precise curve
  axes[0].plot([1], [1], label="BN")
  axes[1].plot([1], [1], label="BN")
  assert list(compare._every_label(axes)) == ["FrozenBN", "BN"]  # the legend names both
  plt.close(fig)
  assert (tmp_path / "c.png").stat().st_size > 0
  full = [compare.load_arm(f"BN={tmp_path}/bn/bn-m2", [0, 1])]
  assert compare.comparison_markdown(full, None, seeds=[0, 1]).startswith(
    "**All 2 planned runs are in** (seeds 0, 1 of every arm)."
  )
  # A finished run of a seed that is not planned enters no number: seed 1 left out of [0, 2].
  only = compare.comparison_markdown(
    [compare.load_arm(f"BN={tmp_path}/bn/bn-m2", [0, 2])], None, seeds=[0, 2]
  )
  assert "| BN | 40.00 (n=1 of 2) | 45.00 (n=1 of 2) | +5.00 |" in only
  assert "| BN | 40.00 / 45.00 | pending |" in only


def test_compare_reads_one_run_workdir_and_prints_its_commands(tmp_path):
  from tools import compare

  fake_run(tmp_path, "bn", 32, 0, [0.7, 0.80], precise=[0.7, 0.82], wall=600.0)
  run = tmp_path / "plain"
  (tmp_path / "bn-m32-s0").rename(run)
  summary = json.loads((run / "summary.json").read_text())
  summary.update(seed=0, norm="bn", per_device_batch_size=32)
  (run / "summary.json").write_text(json.dumps(summary))
  (run / "sweep.json").unlink()  # a plain `python -m train` run: no sweep.json
  arm = compare.load_arm(f"pretrained, plain={run}")
  assert arm["single"] and list(arm["runs"]) == [0]
  md = compare.comparison_markdown([arm], None, commands=True)
  assert "| pretrained, plain | 80.00 (n=1) | 82.00 (n=1) | +2.00 |" in md  # one run: no std
  assert "| pretrained, plain | 80.00 / 82.00 |" in md
  assert "# pretrained, plain (seeds 0)\n#   (no command recorded: see the write-up)" in md
  assert "or LABEL=WORKDIR of one run" in md
  # A sweep's run: its command, the seed written SEED, the device count in front.
  fake_run(tmp_path / "sweep", "bn", 2, 1, [0.3, 0.4])
  wd = tmp_path / "sweep" / "bn-m2-s1"
  argv = ["/w/.venv/bin/python", "-m", "train", "--config=c.py:bn-g2"]
  argv += ["--workdir=workdirs/x/bn-g2/bn-m2-s1", "--config.seed=1", "--config.lr=0.1"]
  (wd / "sweep.json").write_text(json.dumps({"command": argv, "wall_seconds": 1.0}))
  summary = json.loads((wd / "summary.json").read_text())
  layout = {"per_device_batch_size": 2, "devices": 4, "norm_sync_devices": 2, "grad_accum_steps": 1}
  summary.update(devices=4, per_device_batch_size=2, global_batch_size=8, layout=layout)
  (wd / "summary.json").write_text(json.dumps(summary))
  md = compare.comparison_markdown(
    [compare.load_arm(f"G2={tmp_path}/sweep/bn-m2")], None, commands=True
  )
  assert (
    "# G2 (seeds 1)\nXLA_FLAGS=--xla_force_host_platform_device_count=4 python -m train "
    "--config=c.py:bn-g2 --workdir=workdirs/x/bn-g2/bn-m2-sSEED --config.seed=SEED "
    "--config.lr=0.1\n```" in md
  )


def test_compare_cli_pairs_with_several_baselines_and_planned_seeds(tmp_path):
  fake_run(tmp_path, "bn", 2, 0, [0.3, 0.40], precise=[0.3, 0.45])
  fake_run(tmp_path, "mbn", 2, 0, [0.3, 0.46], precise=[0.3, 0.47])
  out = tmp_path / "out"
  args = [sys.executable, "-m", "tools.compare", f"--out={out}", "--seeds=0,1"]
  args += [f"--arm=BN={tmp_path}/bn-m2", f"--arm=MBN={tmp_path}/mbn-m2"]
  args += [f"--arm=MABN={tmp_path}/missing/mabn-m2", "--baseline=BN", "--baseline=MBN"]
  subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
  md = (out / "comparison.md").read_text()
  assert "| MBN | 1 of 2 | +6.00 | 1 / 0 | +2.00 | 1 / 0 |" in md
  assert "| BN | 1 of 2 | -6.00 | 0 / 1 | -2.00 | 0 / 1 |" in md
  assert "| MABN | pending | pending |" in md
  assert (out / "curves.png").stat().st_size > 0 and (out / "gap.png").stat().st_size > 0
  assert (out / "final.png").stat().st_size > 0
  # Without planned seeds an arm with no runs is an error, as before.
  p = subprocess.run(args[:4] + args[5:8], capture_output=True, text=True, cwd=ROOT)
  assert p.returncode != 0 and "missing" in p.stderr


def test_final_points_are_the_tables_numbers_and_final_png_draws_every_seed(tmp_path):
  """final.png plots the same per-seed finals comparison.md's first table averages: each
  seed's last-epoch accuracy (as trained filled, precise hollow), in %, seed order."""
  from tools import compare

  fake_run(tmp_path, "bn", 2, 1, [0.30, 0.42], precise=[0.31, 0.44])
  fake_run(tmp_path, "bn", 2, 0, [0.30, 0.40], precise=[0.32, 0.41])
  fake_run(tmp_path, "mabn", 2, 0, [0.30, 0.50])  # no precise statistics
  bn = compare.load_arm(f"BN={tmp_path}/bn-m2")
  mabn = compare.load_arm(f"MABN={tmp_path}/mabn-m2")
  seeds, acc = compare.final_points(bn)
  assert seeds == [0, 1] and np.allclose(acc, [40.0, 42.0])
  assert np.allclose(compare.final_points(bn, compare.PRECISE)[1], [41.0, 44.0])
  assert len(compare.final_points(mabn, compare.PRECISE)[1]) == 0
  # The table's mean ± std is the bar's.
  assert "| BN | 41.00 ± 1.41 (n=2) |" in compare.comparison_markdown([bn], None)

  from matplotlib.collections import LineCollection, PathCollection

  ax = compare.final_figure([bn, mabn]).axes[0]
  labels = [t.get_text() for t in ax.get_yticklabels()]
  offsets = [np.asarray(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)]
  assert labels == ["MABN", "BN"]  # the first arm on top
  dots = sorted(map(tuple, np.concatenate([o for o in offsets if len(o)]).round(3)))
  # BN (row 1): as trained at y 1.12, precise at 0.88; MABN (row 0): as trained only.
  assert dots == sorted([(40.0, 1.12), (42.0, 1.12), (41.0, 0.88), (44.0, 0.88), (50.0, 0.12)])
  # BN's bar: its mean, 41, ± the sample std, √2 (MABN's one run: no spread).
  bars = [
    np.asarray(s) for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()
  ]
  assert any(np.allclose(s, [[41 - 2**0.5, 1.0], [41 + 2**0.5, 1.0]]) for s in bars)
  compare.plot_final([bn, mabn], tmp_path / "final.png")
  assert (tmp_path / "final.png").stat().st_size > 0


def timed_run(root, seed, speeds, wall, log=None, **summary_fields):
  """A finished bn-m2 run whose epochs trained at ``speeds`` images per second."""
  fake_run(root, "bn", 2, seed, [0.3] * len(speeds), wall=wall)
  wd = root / sweep.run_name("bn", 2, seed)
  records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  for rec, v in zip(records, speeds):
    rec["images_per_sec"] = v
  (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  summary = json.loads((wd / "summary.json").read_text())
  summary.update(summary_fields)
  (wd / "summary.json").write_text(json.dumps(summary))
  if log is not None:
    (wd / "train.log").write_text(log)
  return wd


def test_training_time_sums_epochs_and_resumed_runs_lose_their_wall_clock(tmp_path):
  """A resumed run's sweep.json/summary.json hold the last process's wall clock only; the
  training time summed over the epochs of metrics.jsonl does not depend on interruptions."""
  from tools import compare

  # 100 batches of 6 images per epoch = 600 images.
  epoch = {"steps_per_epoch": 100, "global_batch_size": 6}
  # Seed 0: 600/10 + 600/20 = 90 s of training in 120 s of wall clock: one process.
  timed_run(tmp_path / "a", 0, [10.0, 20.0], wall=120.0, **epoch)
  # Seed 1: 600/5 + 600/5 = 240 s of training, but 180 s of wall clock: resumed (records).
  timed_run(tmp_path / "a", 1, [5.0, 5.0], wall=180.0, **epoch)
  # Seed 2: 600/20 · 2 = 60 s of training, 300 s of wall clock, and train.log says resumed.
  log = "resnet20/bn: ...\n{}\nResuming from step 100 (epoch 2) in w\nresnet20/bn: ...\n"
  timed_run(tmp_path / "a", 2, [20.0, 20.0], wall=300.0, log=log, **epoch)
  # A four-device run (layout: 2 × 4 = 8 images per batch, 50 batches = 400 images per
  # epoch): 400/4 · 3 = 300 s of training in 200 s: resumed.
  layout = {"per_device_batch_size": 2, "devices": 4, "norm_sync_devices": 1, "grad_accum_steps": 1}
  timed_run(tmp_path / "b", 0, [4.0] * 3, wall=200.0, micro_batches_per_epoch=50, layout=layout)
  # 600/20 · 3 = 90 s of training: sweep.json's 95 s would do, summary.json's 85 s cannot.
  timed_run(tmp_path / "c", 0, [20.0] * 3, wall=95.0, wall_time_s=85.0, **epoch)
  runs = {r["seed"]: r for r in report.load_runs(tmp_path / "a")}
  assert runs[0]["train_seconds"] == pytest.approx(90.0) and runs[0]["resumed"] is None
  assert runs[1]["train_seconds"] == pytest.approx(240.0)
  assert runs[1]["resumed"] == "training 240 s > wall clock 180 s"
  assert runs[2]["train_seconds"] == pytest.approx(60.0)
  assert runs[2]["resumed"] == "train.log: 1 × 'Resuming from step'"
  (four,) = report.load_runs(tmp_path / "b")
  assert report.images_per_epoch(four["summary"]) == 400
  assert four["train_seconds"] == pytest.approx(300.0) and four["resumed"]
  (late,) = report.load_runs(tmp_path / "c")
  assert late["wall"] == 95.0 and late["resumed"] == "training 90 s > wall clock 85 s"
  # An epoch without its speed, or a record without the batch numbers: no training time.
  assert report.training_seconds(epoch, [{"images_per_sec": 1.0}, {}]) is None
  assert report.training_seconds({}, [{"images_per_sec": 1.0}]) is None

  md = report.results_markdown(list(runs.values()))
  assert "| bn-m2-s0 | completed | 2 |" in md and md.count("| 90 | 120 |") == 1
  assert "| 240 | — (resumed) |" in md and "| 60 | — (resumed) |" in md
  assert "training (s) | wall clock (s) |" in md and "Resuming from step" in md

  arms = [compare.load_arm(f"BN={tmp_path}/a/bn-m2"), compare.load_arm(f"4 dev={tmp_path}/b/bn-m2")]
  md = compare.comparison_markdown(arms, None, wall_times=True)
  # Training: 1.5, 4.0, 1.0 minutes → mean 6.5/3 = 2.17; wall clock: seed 0 only (2.0).
  assert "| BN | — | 2.2 [1.0, 4.0] | 2.0 (one run); 2 resumed runs left out |" in md
  assert (
    "| 4 dev | 4 device(s), statistics per device, lr by per_device batch | 5.0 (one run) | "
    "— (resumed: last segment only) |" in md
  )
  assert "| arm | setting | training, minutes per run | wall clock, minutes per run |" in md
