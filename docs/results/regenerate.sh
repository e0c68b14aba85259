#!/usr/bin/env bash
# Regenerates every table and plot of docs/results/cpu_repro.md,
# docs/results/accumulation.md and docs/results/multi_device.md from the run records kept in
# the repository (docs/results/faithful_runs/, accumulation_runs/, multi_device_runs/).
# Seconds, no training.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=docs/results/faithful_runs
A=docs/results/accumulation_runs

# Issue 11: the paper's schedule shape — every norm and batch size (tables, curves, gaps).
python -m tools.report --root $R/faithful --out docs/results/cpu_repro_faithful

# Issue 11: the lag ablation — paper shape (÷10 three times) vs one decay (÷10 once), m = 2.
python -m tools.compare --out docs/results/cpu_repro_lag_ablation --baseline "BN, paper shape" \
  --arm "BN, paper shape=$R/faithful/bn-m2" --arm "MBN, paper shape=$R/faithful/mbn-m2" \
  --arm "BN, one decay=$R/one_decay/bn-m2" --arm "MBN, one decay=$R/one_decay/mbn-m2"
# ... and MBN − BN paired within the one-decay ablation.
python -m tools.compare --out docs/results/cpu_repro_lag_ablation/one_decay_pairs --baseline "BN, one decay" \
  --arm "BN, one decay=$R/one_decay/bn-m2" --arm "MBN, one decay=$R/one_decay/mbn-m2"

# Issue 15: gradient accumulation, 16 micro-batches of 2 (optimizer batch 32), paper shape.
python -m tools.compare --out docs/results/accumulation --baseline "BN, batch 2" \
  --arm "BN, batch 2=$R/faithful/bn-m2" --arm "MBN, batch 2=$R/faithful/mbn-m2" \
  --arm "BN, 16×2 sequential=$A/sequential/bn-m2" --arm "MBN, 16×2 sequential=$A/sequential/mbn-m2" \
  --arm "BN, 16×2 deferred=$A/deferred/bn-m2" --arm "MBN, 16×2 deferred=$A/deferred/mbn-m2" \
  --arm "BN, batch 32=$R/faithful/bn-m32"

# Issue 22: 2 images per device on 4 devices (configs/cifar10_resnet20_cpu_4dev.py), paper shape.
M=docs/results/multi_device_runs
python -m tools.compare --out docs/results/multi_device --baseline "BN" --wall_times \
  --arm "BN=$M/bn/bn-m2" --arm "MBN=$M/mbn/mbn-m2" --arm "SyncBN=$M/syncbn/bn-m2" \
  --arm "SyncMBN=$M/syncmbn/mbn-m2" --arm "GN=$M/gn/gn-m2" --arm "BN, 8 per device=$M/bn8/bn-m8"
# ... MBN (no communication) against SyncBN, paired.
python -m tools.compare --out docs/results/multi_device/vs_syncbn --baseline "SyncBN" \
  --arm "SyncBN=$M/syncbn/bn-m2" --arm "MBN=$M/mbn/mbn-m2" --arm "SyncMBN=$M/syncmbn/mbn-m2"
# ... the other reading of the learning rate, 0.1·(global batch 8)/64.
python -m tools.compare --out docs/results/multi_device/global_lr --baseline "BN, global lr" --wall_times \
  --arm "BN, global lr=$M/bn-globallr/bn-m2" --arm "MBN, global lr=$M/mbn-globallr/mbn-m2" \
  --arm "SyncBN, global lr=$M/syncbn-globallr/bn-m2"
python -m tools.compare --out docs/results/multi_device/global_lr/vs_syncbn --baseline "SyncBN, global lr" \
  --arm "SyncBN, global lr=$M/syncbn-globallr/bn-m2" --arm "MBN, global lr=$M/mbn-globallr/mbn-m2"
# ... the one-device runs of issue 11 beside the four-device ones (same data, seeds, schedule).
python -m tools.compare --out docs/results/multi_device/one_vs_four_devices --wall_times \
  --baseline "1 device, BN, batch 8" \
  --arm "1 device, BN, batch 8=$R/faithful/bn-m8" --arm "1 device, MBN, batch 8=$R/faithful/mbn-m8" \
  --arm "4 devices, SyncBN, global lr=$M/syncbn-globallr/bn-m2" \
  --arm "4 devices, SyncMBN=$M/syncmbn/mbn-m2" \
  --arm "1 device, BN, batch 2=$R/faithful/bn-m2" --arm "1 device, MBN, batch 2=$R/faithful/mbn-m2" \
  --arm "4 devices, BN=$M/bn/bn-m2" --arm "4 devices, MBN=$M/mbn/mbn-m2" \
  --arm "4 devices, BN, global lr=$M/bn-globallr/bn-m2" \
  --arm "4 devices, MBN, global lr=$M/mbn-globallr/mbn-m2"

# Copy the tables into docs/results/cpu_repro.md, multi_device.md and the README (between markers).
python docs/results/embed_tables.py
