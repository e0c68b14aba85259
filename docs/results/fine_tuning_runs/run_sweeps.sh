#!/usr/bin/env bash
# Issue 31: the fine-tuning arms of configs/cifar10_resnet20_finetune.py (4 devices × 2 images),
# seeds 0-2, from the pretrained networks of run_pretrain.sh. Run from the root of a git worktree
# of the pinned commit named in ../fine_tuning.md, with a venv in it and the pretrained runs'
# workdirs at workdirs/pretrain/{plain,centred} (a symbolic link to the pretraining worktree's
# workdirs/pretrain is fine; the fine-tuning runs only read them):
#   git worktree add ../mbn_finetune <commit> && cd ../mbn_finetune && python3 -m venv .venv \
#     && . .venv/bin/activate && pip install -e ".[train]" \
#     && mkdir -p workdirs && ln -s ../../mbn_pretrain/workdirs/pretrain workdirs/pretrain \
#     && nohup bash docs/results/fine_tuning_runs/run_sweeps.sh [WORKERS] > /dev/null 2>&1 &
# WORKERS (default 2) workers take jobs seed by seed, each claimed through a lock file; an arm
# waits for its pretrained network (summary.json completed); finished runs are skipped and
# interrupted ones resume from their checkpoint. Output: workdirs/fine_tuning/<arm>/.
cd "$(dirname "$0")/../../.."
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
export XLA_FLAGS=--xla_force_host_platform_device_count=4
ROOT=workdirs/fine_tuning
WORKERS="${1:-2}"
mkdir -p $ROOT/locks
# arm:norm:pretrained
ARMS="frozen_bn:frozen_bn:plain bn:bn:plain syncbn:bn:plain mbn:mbn:plain mbn-pretrained:mbn:plain mabn:mabn:centred"
pending() {  # an arm whose pretrained network is not finished yet
  for source in plain centred; do
    grep -q '"status": "completed"' "workdirs/pretrain/$source/summary.json" 2>/dev/null || return 0
  done
  return 1
}
worker() {
  one_pass
  while pending; do sleep 300; one_pass; done  # the arms that waited for their network
}
one_pass() {
  for seed in 0 1 2; do
    for spec in $ARMS; do
      IFS=: read -r arm norm source <<< "$spec"
      grep -q '"status": "completed"' "workdirs/pretrain/$source/summary.json" 2>/dev/null || continue
      dir="$ROOT/$arm/$norm-m2-s$seed"
      [ -f "$dir/summary.json" ] && grep -q '"status": "completed"' "$dir/summary.json" && continue
      mkdir -p "$ROOT/$arm"
      flock -n "$ROOT/locks/$arm-s$seed" \
        python -m tools.sweep --config "configs/cifar10_resnet20_finetune.py:$arm" --root "$ROOT/$arm" \
          --norms "$norm" --batch_sizes 2 --seeds "$seed" --override=progress_bar=False
    done
  done
}
for i in $(seq 1 "$WORKERS"); do
  worker >> "$ROOT/worker$i.log" 2>&1 &
  sleep 30
done
wait
