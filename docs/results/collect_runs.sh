#!/usr/bin/env bash
# Copies the run records (not the checkpoints) of every finished run of one experiment from the
# git worktree that ran it into the repository, where docs/results/regenerate.sh reads them:
#
#   bash docs/results/collect_runs.sh multi_device     [WORKTREE]                      (../mbn_4dev)
#   bash docs/results/collect_runs.sh no_communication [WORKTREE]                      (../mbn_nocomm)
#   bash docs/results/collect_runs.sh fine_tuning      [WORKTREE [PRETRAIN_WORKTREE]]  (../mbn_finetune, ../mbn_pretrain)
#
# WORKTREE paths are read from the current directory; the defaults sit beside the repository's
# root. A run is WORKTREE/workdirs/EXPERIMENT/<arm>/<norm>-m<m>-s<seed>/ and is copied to
# docs/results/EXPERIMENT_runs/<arm>/<norm>-m<m>-s<seed>/ (config.json, metrics.jsonl,
# summary.json, sweep.json, and train.log where kept) only when its summary.json says "status": "completed"; unfinished runs
# are left alone. fine_tuning also copies the two pretrained runs,
# PRETRAIN_WORKTREE/workdirs/pretrain/{plain,centred}/ (config.json, metrics.jsonl, summary.json),
# to docs/results/fine_tuning_runs/pretrain/. Prints how many run records the folder then holds.
set -euo pipefail
shopt -s nullglob
usage() { echo "usage: bash docs/results/collect_runs.sh multi_device|no_communication|fine_tuning [WORKTREE [PRETRAIN_WORKTREE]]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 3 ] || usage
experiment=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
case "$experiment" in
  multi_device) default=mbn_4dev ;;
  no_communication) default=mbn_nocomm ;;
  fine_tuning) default=mbn_finetune ;;
  *) usage ;;
esac
[ "$experiment" = fine_tuning ] || [ $# -le 2 ] || usage
worktree=$(cd "${2:-$repo/../$default}" && pwd)  # absolute, from the caller's directory
pretrain=""
if [ "$experiment" = fine_tuning ]; then pretrain=$(cd "${3:-$repo/../mbn_pretrain}" && pwd); fi
dest="$repo/docs/results/${experiment}_runs"

copy_run() {  # source directory, destination directory, files...
  local src=$1 dst=$2 f
  shift 2
  for f in "$@"; do
    [ -f "$src/$f" ] || { echo "error: $src is completed but has no $f" >&2; exit 1; }
  done
  mkdir -p "$dst"
  for f in "$@"; do cp "$src/$f" "$dst/$f"; done
  # The program's log, where kept: its "Resuming from step" lines tell a resumed run's wall clock.
  if [ -f "$src/train.log" ]; then cp "$src/train.log" "$dst/train.log"; fi
}

for summary in "$worktree/workdirs/$experiment"/*/*-s*/summary.json; do
  grep -q '"status": "completed"' "$summary" || continue
  run=$(dirname "$summary")
  arm=$(basename "$(dirname "$run")")
  copy_run "$run" "$dest/$arm/$(basename "$run")" config.json metrics.jsonl summary.json sweep.json
done
if [ -n "$pretrain" ]; then
  for arm in plain centred; do
    src="$pretrain/workdirs/pretrain/$arm"
    grep -q '"status": "completed"' "$src/summary.json" 2>/dev/null || continue
    copy_run "$src" "$dest/pretrain/$arm" config.json metrics.jsonl summary.json
  done
fi
cd "$dest"
runs=(*/*-s*/summary.json pretrain/*/summary.json)
echo "${#runs[@]} run records in docs/results/${experiment}_runs"
