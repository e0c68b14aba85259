#!/usr/bin/env bash
# Issue 36, a labelled ablation beside the arms: the large-batch references with CENTRED
# convolution weights, the help MABN's arms get, so that "MABN matches large-batch BN" can be
# told apart from "centring helps": SyncBN on 4 devices x 2 images (statistics over 8) and BN at
# batch 32 on one device, each by the override centered_weights=True on its baseline's setting
# (same protocol, seeds 0-2, the same pinned worktree, commit 13f4034). Run main's copy from
# inside that worktree; it waits while two trainings are running, so it can be started while
# run_sweeps.sh is still going and takes the cores it leaves free:
#   cd ../mbn_nocomm && nohup bash ../main/docs/results/no_communication_runs/run_ablation.sh 2 \
#     > /dev/null 2>&1 &
# WORKERS (default 2) take (arm, seed) jobs seed by seed through lock files; finished runs are
# skipped and interrupted ones resume. Output: workdirs/no_communication/<arm>/bn-m<m>-s<seed>/.
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
ROOT=workdirs/no_communication
WORKERS="${1:-2}"
mkdir -p "$ROOT/locks"
# label:config:per-device-batch:devices
JOBS="
syncbn-centred:configs/cifar10_resnet20_cpu_4dev.py@syncbn:2:4
1dev-bn-m32-centred:configs/cifar10_resnet20_cpu.py:32:1
"
trainings() { pgrep -fc 'python -m train --config' || true; }
worker() {
  for seed in 0 1 2; do
    for job in $JOBS; do
      IFS=: read -r label config m devices <<< "$job"
      config="${config/@/:}"
      dir="$ROOT/$label/bn-m$m-s$seed"
      [ -f "$dir/summary.json" ] && grep -q '"status": "completed"' "$dir/summary.json" && continue
      mkdir -p "$ROOT/$label"
      # One worker at a time waits for a free core (seen free twice, 45 s apart, so that the gap
      # between two of run_sweeps.sh's jobs does not count) and starts its job.
      exec 9> "$ROOT/locks/ablation-start"
      flock 9
      until [ "$(trainings)" -lt 2 ] && sleep 45 && [ "$(trainings)" -lt 2 ]; do sleep 60; done
      XLA_FLAGS=--xla_force_host_platform_device_count=$devices flock -n "$ROOT/locks/$label-s$seed" \
        python -m tools.sweep --config "$config" --root "$ROOT/$label" --norms bn \
          --batch_sizes "$m" --seeds "$seed" --override=progress_bar=False \
          --override=centered_weights=True 9>&- &
      sleep 90  # until its training process shows
      flock -u 9
      exec 9>&-
      wait $!
    done
  done
}
for i in $(seq 1 "$WORKERS"); do
  worker >> "$ROOT/ablation_worker$i.log" 2>&1 &
  sleep 5
done
wait
