#!/usr/bin/env bash
# (At the pinned commit the sweep tool is train.sweep; on main today it is tools.sweep.)
# Issue 11 sweeps, two workers (each XLA:CPU process at m=2 keeps ~1 core busy).
cd "$(dirname "$0")/../../.."  # the repository root (or a git worktree of it)
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
S="python -m train.sweep"
worker_a() {
  $S --config configs/cifar10_resnet20_cpu.py --root workdirs/faithful --norms bn,mbn --batch_sizes 2 --seeds 0,1,2 --override=progress_bar=False
  $S --config configs/cifar10_resnet20_cpu.py --root workdirs/faithful --norms brn --batch_sizes 2 --seeds 0,1,2 --override=progress_bar=False
  # GN has no batch statistics; commit 8501ba1 needs precise statistics turned off for it.
  $S --config configs/cifar10_resnet20_cpu.py --root workdirs/faithful --norms gn --batch_sizes 2 --seeds 0,1,2 --override=progress_bar=False --override=precise_stats_batches=0
  $S --config configs/cifar10_resnet20_cpu.py --root workdirs/faithful --norms bn,mbn --batch_sizes 2 --seeds 3,4 --override=progress_bar=False
}
worker_b() {
  $S --config configs/cifar10_resnet20_cpu_one_decay.py --root workdirs/one_decay --norms bn,mbn --batch_sizes 2 --seeds 0,1,2 --override=progress_bar=False
  $S --config configs/cifar10_resnet20_cpu.py --root workdirs/faithful --norms bn,mbn --batch_sizes 8,32 --seeds 0,1,2 --override=progress_bar=False
  $S --config configs/cifar10_resnet20_cpu_one_decay.py --root workdirs/one_decay --norms bn,mbn --batch_sizes 2 --seeds 3,4 --override=progress_bar=False
}
mkdir -p workdirs
worker_a > workdirs/worker_a.log 2>&1 &
worker_b > workdirs/worker_b.log 2>&1 &
wait
