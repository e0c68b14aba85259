#!/usr/bin/env bash
# Issue 31: the two pretrained networks the fine-tuning arms start from
# (configs/cifar10_resnet20_pretrain.py:plain and :centred), one after the other, one device.
# Run from the root of a git worktree of the pinned commit named in ../fine_tuning.md, with a
# venv in it (the script may come from another checkout):
#   git worktree add ../mbn_pretrain <commit> && cd ../mbn_pretrain && python3 -m venv .venv \
#     && . .venv/bin/activate && pip install -e ".[train]" \
#     && nohup bash PATH/TO/run_pretrain.sh > /dev/null 2>&1 &
# A finished run is skipped; an interrupted one resumes from its last checkpoint, so the script
# can simply be started again. Output: workdirs/pretrain/<arm>/.
set -u
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
mkdir -p workdirs/pretrain
for arm in plain centred; do
  dir=workdirs/pretrain/$arm
  [ -f "$dir/summary.json" ] && grep -q '"status": "completed"' "$dir/summary.json" && continue
  python -m train --config "configs/cifar10_resnet20_pretrain.py:$arm" --workdir "$dir" \
    --config.progress_bar=False >> "workdirs/pretrain/$arm.log" 2>&1
done
