#!/usr/bin/env bash
# Copies the run records (not the checkpoints) of every finished fine-tuning run and of the two
# pretrained runs from their worktrees into docs/results/fine_tuning_runs/<arm>/<run>/:
#   bash docs/results/fine_tuning_runs/collect.sh [WORKTREE [PRETRAIN_WORKTREE]]
#   (defaults ../mbn_finetune and ../mbn_pretrain)
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")"
SRC="${1:-../../../../mbn_finetune}/workdirs/fine_tuning"
for summary in "$SRC"/*/*-s*/summary.json; do
  grep -q '"status": "completed"' "$summary" || continue
  run=$(dirname "$summary"); arm=$(basename "$(dirname "$run")")
  mkdir -p "$arm/$(basename "$run")"
  for f in config.json metrics.jsonl summary.json sweep.json; do
    cp "$run/$f" "$arm/$(basename "$run")/$f"
  done
done
# The pretrained runs (from their own worktree, default ../mbn_pretrain).
PRE="${2:-../../../../mbn_pretrain}/workdirs/pretrain"
for arm in plain centred; do
  grep -q '"status": "completed"' "$PRE/$arm/summary.json" 2>/dev/null || continue
  mkdir -p "pretrain/$arm"
  for f in config.json metrics.jsonl summary.json; do cp "$PRE/$arm/$f" "pretrain/$arm/$f"; done
done
ls -d */*-s* pretrain/* 2>/dev/null | wc -l
