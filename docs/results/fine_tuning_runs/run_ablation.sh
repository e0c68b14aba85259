#!/usr/bin/env bash
# Issue 31, a labelled ablation beside the six arms: FrozenBN started from the CENTRED pretrained
# network (centred convolution weights), the network the MABN arm starts from, so that MABN's
# difference to FrozenBN can be told apart from the difference between its source network and
# FrozenBN's. Same protocol as the `frozen_bn` arm otherwise (configs/cifar10_resnet20_finetune.py,
# 4 devices x 2 images, seeds 0-2), by override only.
# Run main's copy from inside the fine-tuning worktree (commit 4020eb8), after run_sweeps.sh:
#   cd ../mbn_finetune && nohup bash ../main/docs/results/fine_tuning_runs/run_ablation.sh 2 > /dev/null 2>&1 &
# WORKERS (default 2) take the seeds through lock files; finished runs are skipped, interrupted
# ones resume. Output: workdirs/fine_tuning/frozen_bn-centred/frozen_bn-m2-s<seed>/.
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
export XLA_FLAGS=--xla_force_host_platform_device_count=4
ROOT=workdirs/fine_tuning
ARM=frozen_bn-centred
WORKERS="${1:-2}"
mkdir -p "$ROOT/locks" "$ROOT/$ARM"
worker() {
  for seed in 0 1 2; do
    dir="$ROOT/$ARM/frozen_bn-m2-s$seed"
    [ -f "$dir/summary.json" ] && grep -q '"status": "completed"' "$dir/summary.json" && continue
    flock -n "$ROOT/locks/$ARM-s$seed" \
      python -m tools.sweep --config "configs/cifar10_resnet20_finetune.py:frozen_bn" \
        --root "$ROOT/$ARM" --norms frozen_bn --batch_sizes 2 --seeds "$seed" \
        --override=progress_bar=False --override=centered_weights=True \
        --override=init_from=workdirs/pretrain/centred
  done
}
for i in $(seq 1 "$WORKERS"); do
  worker >> "$ROOT/ablation_worker$i.log" 2>&1 &
  sleep 30
done
wait
