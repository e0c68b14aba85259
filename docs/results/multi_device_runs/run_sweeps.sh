#!/usr/bin/env bash
# (At the pinned commit the sweep tool is train.sweep; on main today it is tools.sweep.)
# Issue 22: the 4-device runs (configs/cifar10_resnet20_cpu_4dev.py), 9 arms × seeds 0-2,
# two workers (one per core). Run from a git worktree of the pinned commit named in
# ../multi_device.md, with a venv in it:
#   git worktree add ../mbn_4dev <commit> && cd ../mbn_4dev && python3 -m venv .venv \
#     && . .venv/bin/activate && pip install -e ".[train]" \
#     && nohup bash docs/results/multi_device_runs/run_sweeps.sh > /dev/null 2>&1 &
# Jobs go seed by seed (every arm of seed 0 first), each claimed by one worker through a
# lock file; finished runs are skipped and interrupted ones resume from their checkpoint,
# so the script can simply be started again. Output: workdirs/multi_device/<arm>/<run>/.
cd "$(dirname "$0")/../../.."
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
export XLA_FLAGS=--xla_force_host_platform_device_count=4
ROOT=workdirs/multi_device
CONFIG=configs/cifar10_resnet20_cpu_4dev.py
mkdir -p $ROOT/locks
# arm norm per-device-batch
ARMS="bn:bn:2 mbn:mbn:2 syncbn:bn:2 syncmbn:mbn:2 gn:gn:2 bn8:bn:8 bn-globallr:bn:2 mbn-globallr:mbn:2 syncbn-globallr:bn:2"
worker() {
  for seed in 0 1 2; do
    for spec in $ARMS; do
      IFS=: read -r arm norm m <<< "$spec"
      mkdir -p "$ROOT/$arm"
      [ -f "$ROOT/$arm/$norm-m$m-s$seed/summary.json" ] \
        && grep -q '"status": "completed"' "$ROOT/$arm/$norm-m$m-s$seed/summary.json" && continue
      flock -n "$ROOT/locks/$arm-s$seed" \
        python -m train.sweep --config "$CONFIG:$arm" --root "$ROOT/$arm" --norms "$norm" \
          --batch_sizes "$m" --seeds "$seed" --override=progress_bar=False
    done
  done
}
worker >> $ROOT/worker0.log 2>&1 &
sleep 30  # the second worker claims the next job, not the same one
worker >> $ROOT/worker1.log 2>&1 &
wait
