#!/usr/bin/env bash
# Issue 36: what comes closest to SyncBN without an all-reduce of statistics — the new arms of
# configs/cifar10_resnet20_cpu_4dev.py (4 devices × 2 images) and one-device MABN at batch 2,
# plus the baselines they are compared with, rerun at the same pinned commit on the same
# machine (records of another machine or commit are never paired with these), seeds 0-2.
# Run from a git worktree of the pinned commit named in ../no_communication.md, with a venv:
#   git worktree add ../mbn_nocomm <commit> && cd ../mbn_nocomm && python3 -m venv .venv \
#     && . .venv/bin/activate && pip install -e ".[train]" \
#     && nohup bash docs/results/no_communication_runs/run_sweeps.sh [WORKERS] > /dev/null 2>&1 &
# WORKERS (default 2, one per core) workers take jobs seed by seed (every job of seed 0 first),
# each claimed through a lock file; finished runs are skipped and interrupted ones resume from
# their checkpoint, so the script can simply be started again.
# Output: workdirs/no_communication/<arm>/<norm>-m<m>-s<seed>/.
cd "$(dirname "$0")/../../.."
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
ROOT=workdirs/no_communication
WORKERS="${1:-2}"
mkdir -p $ROOT/locks
# label:config:arm-or-empty:norm:per-device-batch:devices:extra-override
JOBS="
mabn-centred:4dev:mabn-centred:mabn:2:4:
mabn:4dev:mabn:mabn:2:4:
bn-centred:4dev:bn-centred:bn:2:4:
mbn-centred:4dev:mbn-centred:mbn:2:4:
bn-g2:4dev:bn-g2:bn:2:4:
mbn-g2:4dev:mbn-g2:mbn:2:4:
1dev-mabn-centred:1dev::mabn:2:1:centered_weights=True
bn:4dev:bn:bn:2:4:
mbn:4dev:mbn:mbn:2:4:
syncbn:4dev:syncbn:bn:2:4:
1dev-bn:1dev::bn:2:1:
1dev-mbn:1dev::mbn:2:1:
1dev-bn-m32:1dev::bn:32:1:
"
run_job() {  # label config arm norm m devices extra seed
  local label=$1 cfg=$2 arm=$3 norm=$4 m=$5 devices=$6 extra=$7 seed=$8 config
  if [ "$cfg" = 4dev ]; then config="configs/cifar10_resnet20_cpu_4dev.py:$arm"
  else config="configs/cifar10_resnet20_cpu.py"; fi
  local dir="$ROOT/$label/$norm-m$m-s$seed"
  [ -f "$dir/summary.json" ] && grep -q '"status": "completed"' "$dir/summary.json" && return
  mkdir -p "$ROOT/$label"
  local overrides=(--override=progress_bar=False)
  [ -n "$extra" ] && overrides+=("--override=$extra")
  XLA_FLAGS=--xla_force_host_platform_device_count=$devices flock -n "$ROOT/locks/$label-s$seed" \
    python -m tools.sweep --config "$config" --root "$ROOT/$label" --norms "$norm" \
      --batch_sizes "$m" --seeds "$seed" "${overrides[@]}"
}
worker() {
  for seed in 0 1 2; do
    for job in $JOBS; do
      IFS=: read -r label cfg arm norm m devices extra <<< "$job"
      run_job "$label" "$cfg" "$arm" "$norm" "$m" "$devices" "$extra" "$seed"
    done
  done
}
for i in $(seq 1 "$WORKERS"); do
  worker >> "$ROOT/worker$i.log" 2>&1 &
  sleep 30  # the next worker claims the next job, not the same one
done
wait
