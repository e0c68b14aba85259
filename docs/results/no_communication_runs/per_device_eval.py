"""Issue 36: how much evaluating with the device-averaged statistics helps the per-device arms.

The training program averages ``batch_stats`` over the devices before every evaluation and
checkpoint (one all-reduce per epoch, none in the training steps); MABN's reference code
instead validates on one GPU with that GPU's own statistics. This script re-evaluates finished
4-device runs, parameters frozen, with the averaged statistics (as the runs did: it must match
the record's final accuracy) and with each device's own (``batch_stats_per_device`` of the
last checkpoint), and writes a table.

Run main's copy from inside the pinned worktree (commit 13f4034: its code and data pipeline
are the runs'), after the runs finished (it reads their checkpoints):

    cd ../mbn_nocomm && .venv/bin/python ../main/docs/results/no_communication_runs/per_device_eval.py \
        --out ../main/docs/results/no_communication/per_device_eval.md \
        workdirs/no_communication/mabn-centred/mabn-m2-s0 ...

Every number regenerates from that command (seconds per run on one core).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path.cwd()))  # the worktree's train/ and tools/

from tools.finished_run import load_run  # noqa: E402
from train import checkpoints as ckpt_lib  # noqa: E402


def evaluate(workdir: str) -> dict:
  """Accuracy with the averaged statistics and with each device's own."""
  run = load_run(workdir)
  per_device = ckpt_lib.restore_latest(workdir)["batch_stats_per_device"]
  devices = len(jax.tree.leaves(per_device)[0])
  summary = json.loads((pathlib.Path(workdir) / "summary.json").read_text())
  own = [
    run.accuracy(jax.tree.map(lambda x, d=d: np.asarray(x[d]), per_device)) for d in range(devices)
  ]
  return {
    "workdir": workdir,
    "norm": run.config.norm,
    "seed": int(run.config.seed),
    "recorded": summary["final_eval_accuracy"],
    "averaged": run.accuracy(run.batch_stats),
    "own": own,
  }


def table(rows: list[dict]) -> str:
  lines = [
    "Validation accuracy (%) of each finished run re-evaluated with its parameters frozen: with "
    "the statistics averaged over the 4 devices (what the training program evaluates with; "
    "must equal the record) and with each device's own statistics (MABN's reference "
    "validates with one GPU's). Own − averaged: the mean over the devices, in points.",
    "",
    "| run | recorded | averaged | device 0 | device 1 | device 2 | device 3 | own − averaged |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    own = " | ".join(f"{100 * a:.2f}" for a in r["own"])
    gap = 100 * (np.mean(r["own"]) - r["averaged"])
    name = "/".join(pathlib.Path(r["workdir"]).parts[-2:])
    lines.append(
      f"| {name} | {100 * r['recorded']:.2f} | {100 * r['averaged']:.2f} | {own} | {gap:+.2f} |"
    )
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--out", required=True, help="the markdown table to write")
  args = parser.parse_args()
  rows = []
  for workdir in args.workdirs:
    rows.append(evaluate(workdir))
    print(json.dumps(rows[-1]), flush=True)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(table(rows))
  out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
