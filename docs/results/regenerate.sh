#!/usr/bin/env bash
# Regenerates every table and plot of docs/results/cpu_repro.md and
# docs/results/accumulation.md from the run records kept in the repository
# (docs/results/faithful_runs/, docs/results/accumulation_runs/). Seconds, no training.
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

# Copy the tables into docs/results/cpu_repro.md and the README (between their markers).
python docs/results/embed_tables.py
