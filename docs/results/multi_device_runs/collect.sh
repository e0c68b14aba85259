#!/usr/bin/env bash
# Copies the run records (not the checkpoints) of every finished 4-device run from the sweep's
# worktree into docs/results/multi_device_runs/<arm>/<run>/:
#   bash docs/results/multi_device_runs/collect.sh [WORKTREE]   (default ../mbn_4dev)
set -euo pipefail
cd "$(dirname "$0")"
SRC="${1:-../../../../mbn_4dev}/workdirs/multi_device"
for summary in "$SRC"/*/*-s*/summary.json; do
  grep -q '"status": "completed"' "$summary" || continue
  run=$(dirname "$summary"); arm=$(basename "$(dirname "$run")")
  mkdir -p "$arm/$(basename "$run")"
  for f in config.json metrics.jsonl summary.json sweep.json; do
    cp "$run/$f" "$arm/$(basename "$run")/$f"
  done
done
ls -d */*-s* | wc -l
