#!/usr/bin/env bash
# (At the pinned commit the sweep tool is train.sweep; on main today it is tools.sweep.)
# Issue 15 accumulation runs, two workers (one per core); run from a git worktree of 7d195f2
# (see ../accumulation.md). Finished runs are skipped and interrupted ones resume.
cd "$(dirname "$0")/../../.."
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
S="python -m train.sweep --override=progress_bar=False --norms bn,mbn --batch_sizes 2 --seeds 0,1,2"
mkdir -p workdirs
$S --config configs/cifar10_resnet20_cpu_accum.py:sequential --root workdirs/accum_sequential > workdirs/accum_sequential.log 2>&1 &
$S --config configs/cifar10_resnet20_cpu_accum.py:deferred --root workdirs/accum_deferred > workdirs/accum_deferred.log 2>&1 &
wait
