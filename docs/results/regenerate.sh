#!/usr/bin/env bash
# Regenerates every table and plot of docs/results/cpu_repro.md,
# docs/results/accumulation.md, docs/results/multi_device.md, docs/results/no_communication.md
# and docs/results/fine_tuning.md from the run records kept in the repository
# (docs/results/faithful_runs/, accumulation_runs/, multi_device_runs/, no_communication_runs/,
# fine_tuning_runs/; bash docs/results/collect_runs.sh copies them out of a worktree).
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

# Issue 36: without an all-reduce of statistics (still running: --seeds names the planned seeds,
# so missing runs read "pending"). Only the records of no_communication_runs/ (one pinned commit,
# one machine), never paired with multi_device_runs/ or faithful_runs/.
N=docs/results/no_communication_runs
python -m tools.compare --out docs/results/no_communication --seeds 0,1,2 --wall_times --commands \
  --baseline "MBN" --baseline "BN" --baseline "SyncBN" \
  --arm "MABN, centred=$N/mabn-centred/mabn-m2" --arm "MABN=$N/mabn/mabn-m2" \
  --arm "BN, centred=$N/bn-centred/bn-m2" --arm "MBN, centred=$N/mbn-centred/mbn-m2" \
  --arm "BN, G = 2=$N/bn-g2/bn-m2" --arm "MBN, G = 2=$N/mbn-g2/mbn-m2" \
  --arm "BN=$N/bn/bn-m2" --arm "MBN=$N/mbn/mbn-m2" --arm "SyncBN=$N/syncbn/bn-m2"
# ... one device at batch 2 (and BN at batch 32, the large-batch reference).
python -m tools.compare --out docs/results/no_communication/one_device --seeds 0,1,2 \
  --wall_times --commands \
  --baseline "MBN, batch 2" --baseline "BN, batch 2" --baseline "BN, batch 32" \
  --arm "MABN, centred, batch 2=$N/1dev-mabn-centred/mabn-m2" \
  --arm "BN, batch 2=$N/1dev-bn/bn-m2" --arm "MBN, batch 2=$N/1dev-mbn/mbn-m2" \
  --arm "BN, batch 32=$N/1dev-bn-m32/bn-m32"
# ... the pairs the tables above do not print: what centring does to MABN (MABN, centred − MABN),
# MABN against MBN with the same centring (MABN, centred − MBN, centred), and what MBN adds once
# statistics are shared by pairs (MBN, G = 2 − BN, G = 2).
python -m tools.compare --out docs/results/no_communication/pairs --seeds 0,1,2 \
  --baseline "MABN" --baseline "MBN, centred" --baseline "BN, G = 2" \
  --arm "MABN, centred=$N/mabn-centred/mabn-m2" --arm "MABN=$N/mabn/mabn-m2" \
  --arm "MBN, centred=$N/mbn-centred/mbn-m2" \
  --arm "MBN, G = 2=$N/mbn-g2/mbn-m2" --arm "BN, G = 2=$N/bn-g2/bn-m2"
# ... labelled ablation (no_communication_runs/run_ablation.sh): the large-batch references with
# centred conv weights too, MABN's help, on 4 devices (SyncBN) and on one device (BN, batch 32).
python -m tools.compare --out docs/results/no_communication/centred_references --seeds 0,1,2 \
  --wall_times --commands --baseline "SyncBN, centred" --baseline "SyncBN" \
  --arm "SyncBN, centred=$N/syncbn-centred/bn-m2" --arm "SyncBN=$N/syncbn/bn-m2" \
  --arm "MABN, centred=$N/mabn-centred/mabn-m2" --arm "BN, centred=$N/bn-centred/bn-m2" \
  --arm "MBN, centred=$N/mbn-centred/mbn-m2" --arm "MBN, G = 2=$N/mbn-g2/mbn-m2"
python -m tools.compare --out docs/results/no_communication/one_device/centred_references \
  --seeds 0,1,2 --wall_times --commands --baseline "BN, batch 32, centred" \
  --arm "BN, batch 32, centred=$N/1dev-bn-m32-centred/bn-m32" \
  --arm "BN, batch 32=$N/1dev-bn-m32/bn-m32" \
  --arm "MABN, centred, batch 2=$N/1dev-mabn-centred/mabn-m2" \
  --arm "MBN, batch 2=$N/1dev-mbn/mbn-m2"

# Issue 31: fine-tuning on 4 devices × 2 images from the pretrained networks (still running).
F=docs/results/fine_tuning_runs
python -m tools.compare --out docs/results/fine_tuning --seeds 0,1,2 --wall_times --commands \
  --baseline "FrozenBN" --baseline "SyncBN" --baseline "BN" \
  --arm "FrozenBN=$F/frozen_bn/frozen_bn-m2" --arm "BN=$F/bn/bn-m2" --arm "SyncBN=$F/syncbn/bn-m2" \
  --arm "MBN, ramp=$F/mbn/mbn-m2" --arm "MBN, from pretrained=$F/mbn-pretrained/mbn-m2" \
  --arm "MABN=$F/mabn/mabn-m2"
# ... ablation: FrozenBN from the centred network too (MABN's source), to tell MABN's norm from its
# source network (fine_tuning_runs/run_ablation.sh).
python -m tools.compare --out docs/results/fine_tuning/centred_source --seeds 0,1,2 --wall_times \
  --commands --baseline "FrozenBN, centred source" \
  --arm "FrozenBN, centred source=$F/frozen_bn-centred/frozen_bn-m2" \
  --arm "MABN (centred source)=$F/mabn/mabn-m2" --arm "FrozenBN, plain source=$F/frozen_bn/frozen_bn-m2"
# ... the two pretrained networks (one run each, BN at batch 32 on one device).
python -m tools.compare --out docs/results/fine_tuning/pretrain --wall_times \
  --arm "plain=$F/pretrain/plain" --arm "centred=$F/pretrain/centred"

# Copy the tables into docs/results/cpu_repro.md, multi_device.md, no_communication.md,
# fine_tuning.md and the README (between markers).
python docs/results/embed_tables.py
