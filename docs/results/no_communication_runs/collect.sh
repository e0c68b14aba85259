#!/usr/bin/env bash
# Copies the run records (not the checkpoints) of every finished run of the no-communication sweep
# from its worktree into docs/results/no_communication_runs/<arm>/<run>/:
#   bash docs/results/no_communication_runs/collect.sh [WORKTREE]   (default ../mbn_nocomm)
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")"
SRC="${1:-../../../../mbn_nocomm}/workdirs/no_communication"
for summary in "$SRC"/*/*-s*/summary.json; do
  grep -q '"status": "completed"' "$summary" || continue
  run=$(dirname "$summary"); arm=$(basename "$(dirname "$run")")
  mkdir -p "$arm/$(basename "$run")"
  for f in config.json metrics.jsonl summary.json sweep.json; do
    cp "$run/$f" "$arm/$(basename "$run")/$f"
  done
done
ls -d */*-s* 2>/dev/null | wc -l
