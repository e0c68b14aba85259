"""The seam's cost (issue 24): step time of ``mesh`` vs ``pmap``, and of statistics groups G.

The training program's own step through :mod:`train.parallel` — the same
model, optimizer, state placement and batch sharding ``python -m train``
uses — on 4 virtual CPU devices, resnet20 (CIFAR) at m = 2 per device
(global batch 8). For each norm, every (parallelism, G) variant is timed
interleaved in the same run; the ratios are medians of paired repetitions
against ``pmap`` with G = 1 (per-device statistics, the default).

  python benchmarks/bench_parallel.py                  # bn, mbn; G = 1, 2, 4
  python benchmarks/bench_parallel.py --norms mbn --groups 1,4 --reps 9
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import time

import _common as C
import jax
import numpy as np

from configs import default
from train import steps
from train.layout import RunLayout
from train.models import build_model, momentum_schedule_of
from train.parallel import make_parallel, norm_options


def build(parallelism: str, norm: str, group: int, model_name: str, m: int, seed: int = 0):
  """A compiled step of the program through the seam, and a function running one more step."""
  devices = jax.device_count()
  config = default.get_config()
  config.model, config.norm, config.per_device_batch_size = model_name, norm, m
  layout = RunLayout(
    per_device_batch_size=m,
    devices=devices,
    norm_sync_devices=group,
    local_devices=jax.local_device_count(),
  )
  spe = 1000
  lam_fn = momentum_schedule_of(config, layout.statistics_batch_size, spe)
  model = build_model(
    config,
    num_classes=10,
    steps_per_epoch=spe,
    per_device_batch=m,
    momentum_schedule=lam_fn,
    sync=norm_options(parallelism, layout),
  )
  lr_fn = steps.learning_rate_fn(config, m, m * devices, spe)
  parallel = make_parallel(parallelism, layout, model, lr_fn, lam_fn, 1)
  host = jax.device_get(
    steps.create_train_state(
      model, steps.make_optimizer(config, lr_fn), (32, 32, 3), batch_size=m, seed=seed
    )
  )
  rows = jax.tree.map(
    lambda x: np.broadcast_to(np.asarray(x), (layout.local_devices,) + np.shape(x)).copy(),
    host.batch_stats,
  )
  rng = np.random.default_rng(seed)
  batch = {
    "image": rng.normal(size=(layout.local_devices, m, 32, 32, 3)).astype(np.float32),
    "label": rng.integers(0, 10, size=(layout.local_devices, m)).astype(np.int32),
  }
  box = {"state": parallel.place(host, rows)}
  device_batch = parallel.shard(batch)
  stop = parallel.stop_flags(False)

  def run():
    box["state"], metrics = parallel.train_step(box["state"], device_batch, stop)
    return metrics["loss"]

  t0 = time.perf_counter()
  jax.block_until_ready(run())
  return run, time.perf_counter() - t0, parallel


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--model", default="resnet20")
  ap.add_argument("--m", type=int, default=2, help="images per device")
  ap.add_argument("--norms", default="bn,mbn")
  ap.add_argument("--groups", default="1,2,4", help="norm_sync_devices values G")
  ap.add_argument("--reps", type=int, default=7)
  ap.add_argument("--min_rep_s", type=float, default=0.5)
  ap.add_argument("--out", default="benchmarks/results/bench_parallel.json")
  a = ap.parse_args()
  print(f"machine: {C.machine_info()}; {jax.device_count()} devices", flush=True)
  rows, records = [], []
  for norm in a.norms.split(","):
    fns, info = {}, {}
    for group in [int(g) for g in a.groups.split(",")]:
      for parallelism in ("pmap", "mesh"):
        key = f"{parallelism} G={group}"
        print(f"[{a.model} m={a.m} {norm}] compiling {key} ...", flush=True)
        run, compile_s, parallel = build(parallelism, norm, group, a.model, a.m)
        fns[key], info[key] = run, (compile_s, parallel)
    base = next(iter(fns))
    times = C.paired_timings(fns, a.reps, warmup=1, progress=norm, min_rep_s=a.min_rep_s)
    for key in fns:
      compile_s, parallel = info[key]
      ms = C.median(times[key]) * 1e3
      r = dict(
        model=a.model,
        norm=norm,
        per_device_batch=a.m,
        variant=key,
        ms_per_step=ms,
        compile_s=compile_s,
        traces=parallel.train_traces,
        ratio=C.paired_ratio(times, key, base),
        baseline=base,
        times_s=times[key],
      )
      records.append(r)
      rows.append([norm, key, ms, compile_s, parallel.train_traces, r["ratio"]])
    C.print_table(
      ["norm", "variant", "ms/step", "compile s", "compiles", f"/{base}"], rows[-len(fns) :]
    )
  print()
  C.print_table(["norm", "variant", "ms/step", "compile s", "compiles", "ratio"], rows)
  C.write_json(a.out, dict(machine=C.machine_info(), args=vars(a), results=records))


if __name__ == "__main__":
  main()
