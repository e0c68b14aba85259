"""Per-operation profile of one jitted training step on XLA:CPU, grouped by kind.

Runs the step of ``bench_train_step`` a few times under ``jax.profiler``,
reads the Perfetto trace it writes and sums the time of every XLA operation
(thunk) per kind — the HLO instruction name without its numeric suffix:
``ynn_fusion`` (convolutions and other ops XLA hands to YNNPACK),
``transpose_copy_fusion`` (layout changes, with whatever elementwise
producers XLA fused into them), ``dot``, ``convolution``, loop fusions, ...
Prints the table and, with ``--hlo``, the shapes of the costliest ops.

  python benchmarks/bench_profile.py --model resnet20 --batch 128 --convs lax,auto
  python benchmarks/bench_profile.py --model resnet18 --batch 8 --hlo

Times are from the profiler (wall time of each op on its thread), summed:
they add up to about the step time when ops do not overlap. For *speed*
comparisons use bench_train_step / bench_vs_pytorch; this script says where
a step's time goes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

import _common as C
import bench_train_step as TS
import jax
import jax.numpy as jnp

_SKIP = (
  "ThunkExecutor",
  "$",
  "PjitFunction",
  "CommonPjRt",
  "end: ",
  "ParseArguments",
  "Handle inputs",
)


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
  """Milliseconds per step of every XLA op in the trace (by instruction name)."""
  files = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
  if not files:
    raise RuntimeError(f"no Perfetto trace under {trace_dir}")
  with gzip.open(files[0]) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  out: dict[str, float] = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and "dur" in e and not e["name"].startswith(_SKIP):
      out[e["name"]] += e["dur"] / 1e3 / steps
  return dict(out)


def by_kind(times: dict[str, float]) -> dict[str, tuple[float, int]]:
  """(ms per step, number of ops) per kind: the op name without its ``.N`` suffix."""
  kinds: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
  for name, ms in times.items():
    k = kinds[re.sub(r"\.\d+$", "", name)]
    k[0] += ms
    k[1] += 1
  return {k: (v[0], v[1]) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1][0])}


def hlo_shapes(hlo_text: str) -> dict[str, str]:
  """Instruction name -> result shape, from optimized HLO text."""
  return {
    m.group(1): m.group(2)
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", hlo_text, re.M)
  }


def profile(name: str, norm: str, conv: str, batch: int, steps: int):
  run, _, _, step_fn, box = TS.build(name, norm, conv, batch, jnp.float32)
  for _ in range(2):
    jax.block_until_ready(run())
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(steps):
        jax.block_until_ready(run())
    times = op_times(d, steps)
  hlo = step_fn.lower(box["state"], box["batch"]).compile().as_text()
  return times, hlo_shapes(hlo)


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--model", default="resnet20")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--norm", default="bn")
  ap.add_argument("--convs", default="lax,auto")
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--top", type=int, default=12, help="kinds to print")
  ap.add_argument("--hlo", action="store_true", help="print the costliest ops with their shapes")
  ap.add_argument(
    "--out", default=None, help="default benchmarks/results/bench_profile_<model>_b<N>.json"
  )
  a = ap.parse_args()
  print(f"machine: {C.machine_info()}", flush=True)
  records = {}
  for conv in a.convs.split(","):
    times, shapes = profile(a.model, a.norm, conv, a.batch, a.steps)
    kinds = by_kind(times)
    total = sum(ms for ms, _ in kinds.values())
    print(
      f"\n{a.model}, batch {a.batch}, norm {a.norm}, conv {conv}: "
      f"{total:.1f} ms of XLA ops per step"
    )
    C.print_table(
      ["op kind", "ms/step", "% of ops", "ops"],
      [[k, ms, f"{100 * ms / total:.1f}", n] for k, (ms, n) in list(kinds.items())[: a.top]],
    )
    if a.hlo:
      for op, ms in sorted(times.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {ms:8.2f} ms  {op}  {shapes.get(op, '?')}")
    records[conv] = dict(
      total_ms=total,
      kinds={k: dict(ms=ms, ops=n) for k, (ms, n) in kinds.items()},
      top_ops=[
        dict(op=op, ms=ms, shape=shapes.get(op))
        for op, ms in sorted(times.items(), key=lambda kv: -kv[1])[:30]
      ],
    )
  out = a.out or f"benchmarks/results/bench_profile_{a.model}_b{a.batch}.json"
  C.write_json(out, dict(machine=C.machine_info(), args=vars(a), results=records))


if __name__ == "__main__":
  main()
