"""Layer benchmark: MomentumBatchNorm vs flax.linen.BatchNorm vs GroupNorm (or the rivals).

For each conv-shaped input (N, H, W, C) and dtype, times a jitted
forward + backward: the gradient of a scalar function of the output with
respect to the input and the parameters, with ``batch_stats`` updated
(returned). The three layers are timed interleaved; the ratios MBN/BN and
GN/BN are medians of paired repetitions. Also counts HLO ops of each
compiled step (``--hlo``) to show what MBN adds.

  python benchmarks/bench_layer.py
  python benchmarks/bench_layer.py --dtypes float32 --shapes 8x32x32x64 --reps 51
  python benchmarks/bench_layer.py --guard --out benchmarks/results/bench_layer_guard.json
      # the non-finite guard: guard_nonfinite on / off (target: ≤ 1.01)
  python benchmarks/bench_layer.py --rivals --shapes 2x32x32x64,8x32x32x64,32x16x16x128 \
      --out benchmarks/results/bench_layer_rivals.json
      # the rivals (issue 30): flax.linen.BatchNorm, MABN (its probes differentiated and
      # folded, as a training step does) and FrozenBN; MABN/BN and FrozenBN/BN
"""

from __future__ import annotations

import argparse
import collections
import functools
import re
import statistics

import _common as C
import flax.linen as nn
import jax
import jax.numpy as jnp

import mbn_jax
from mbn_jax import FrozenBatchNorm, MomentumBatchNorm, MovingAverageBatchNorm, norms

SHAPES = "2x32x32x64,8x32x32x64,32x16x16x128,32x32x32x64,64x16x16x256,128x8x8x512"


# MABN's iteration counter in the timed step: past its warm-up (100) and past r_clip_start
# (1000), so v and ψ̄ are the buffers' means and r is clipped, as in most of a training run
# (the warm-up branches are jnp.where-s: computed either way, the cost is the same).
MABN_ITERS = 2000


def layers(dtype, channels, guard: bool = False, rivals: bool = False):
  """The layers timed together. ``guard``: the cost of the non-finite guard instead —
  MBN and mbn_jax's BN with ``guard_nonfinite`` on and off, and Flax's BatchNorm.
  ``rivals``: Flax's BatchNorm, MABN (defaults: K = 16) and FrozenBN (defaults: γ/β fixed
  in ``batch_stats``, no params)."""
  if rivals:
    return {
      "bn": nn.BatchNorm(momentum=0.9, dtype=dtype),
      "mabn": MovingAverageBatchNorm(dtype=dtype),
      "frozen_bn": FrozenBatchNorm(dtype=dtype),
    }
  mbn = functools.partial(MomentumBatchNorm, dtype=dtype, total_epochs=200, steps_per_epoch=100)
  if guard:
    return {
      "bn": nn.BatchNorm(momentum=0.9, dtype=dtype),
      "bn-ours": norms.BatchNorm(momentum=0.9, dtype=dtype),
      "bn-ours-noguard": norms.BatchNorm(momentum=0.9, dtype=dtype, guard_nonfinite=False),
      "mbn": mbn(),
      "mbn-noguard": mbn(guard_nonfinite=False),
    }
  return {
    "bn": nn.BatchNorm(momentum=0.9, dtype=dtype),
    "mbn": mbn(),
    "gn": nn.GroupNorm(num_groups=min(32, channels), dtype=dtype),
  }


def make(name, layer, x, step):
  variables = (
    layer.init(jax.random.PRNGKey(0), x, use_running_average=True)
    if name != "gn"
    else layer.init(jax.random.PRNGKey(0), x)
  )
  params = variables.get("params", {})
  stats = variables.get("batch_stats", {})
  w = jax.random.normal(jax.random.PRNGKey(1), x.shape, jnp.float32).astype(x.dtype)
  if name == "mabn":
    return make_mabn(layer, variables, x, w, step)

  def loss(params, x, stats, step):
    v = {"params": params}
    if name == "gn":
      y = layer.apply(v, x)
      new = stats
    else:
      v["batch_stats"] = stats
      kw = {"step": step} if name.startswith("mbn") else {}
      y, upd = layer.apply(v, x, use_running_average=False, mutable=["batch_stats"], **kw)
      new = upd["batch_stats"]
    return jnp.sum((y * w).astype(jnp.float32)), new

  @jax.jit
  def fb(params, x, stats, step):
    (value, new), g = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x, stats, step)
    return value, g, new

  return fb, (params, x, stats, step)


def make_mabn(layer, variables, x, w, step):
  """MABN's forward + backward as a training step runs it: the gradient w.r.t. the input,
  the parameters *and* the zero ``backward_probes``, whose cotangents (ψ_t into its ring
  buffer slot) are folded into the new ``batch_stats`` (:mod:`mbn_jax.backward_statistics`)."""
  params = variables["params"]
  stats = dict(variables["batch_stats"], iters=jnp.asarray(MABN_ITERS, jnp.int32))
  probes = mbn_jax.zero_probes(variables)

  def loss(params, x, probes, stats):
    v = {"params": params, "batch_stats": stats, mbn_jax.BACKWARD_PROBES: probes}
    y, upd = layer.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    return jnp.sum((y * w).astype(jnp.float32)), upd["batch_stats"]

  @jax.jit
  def fb(params, x, stats, step):
    del step  # MABN counts its own iterations
    (value, new), (gp, gx, gprobe) = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
      params, x, probes, stats
    )
    return value, (gp, gx), mbn_jax.fold_backward_statistics(new, gprobe)

  return fb, (params, x, stats, step)


def quartiles(times, num: str, den: str) -> tuple[float, float]:
  """The first and third quartiles of the paired ratios times[num][i] / times[den][i]."""
  q = statistics.quantiles([a / b for a, b in zip(times[num], times[den])], n=4)
  return q[0], q[2]


def hlo_ops(fn, args):
  txt = fn.lower(*args).compile().as_text()
  ops = collections.Counter(re.findall(r"= \S+ (\w[\w-]*)\(", txt))
  fusions = len(re.findall(r"^\s*\S+ = \S+ fusion\(", txt, re.M))
  return sum(ops.values()), fusions, ops


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--shapes", default=SHAPES)
  ap.add_argument("--dtypes", default="float32,bfloat16")
  ap.add_argument("--reps", type=int, default=41)
  ap.add_argument(
    "--min_rep_s",
    type=float,
    default=0.005,
    help="time each repetition over enough back-to-back calls (the same "
    "number for every layer) to last this long",
  )
  ap.add_argument("--hlo", action="store_true", help="print HLO op counts per layer")
  ap.add_argument(
    "--guard",
    action="store_true",
    help="time the non-finite guard (guard_nonfinite on/off) instead",
  )
  ap.add_argument(
    "--rivals",
    action="store_true",
    help="time the rivals instead: flax BatchNorm, MABN (probes folded) and FrozenBN",
  )
  ap.add_argument(
    "--out", default=None, help="default: benchmarks/results/bench_layer[_rivals].json"
  )
  a = ap.parse_args()
  if a.guard and a.rivals:
    ap.error("--guard and --rivals time different layer sets: pass one of them")
  if a.out is None:
    a.out = f"benchmarks/results/bench_layer{'_rivals' if a.rivals else ''}.json"
  rows, records = [], []
  step = jnp.asarray(250, jnp.int32)  # epoch 3: λ > 0 for MBN
  for dt in a.dtypes.split(","):
    dtype = jnp.dtype(dt)
    for shp in a.shapes.split(","):
      shape = tuple(int(s) for s in shp.split("x"))
      x = jax.random.normal(jax.random.PRNGKey(2), shape, jnp.float32).astype(dtype)
      fns, hlo = {}, {}
      for name, layer in layers(dtype, shape[-1], a.guard, a.rivals).items():
        fb, args = make(name, layer, x, step)
        jax.block_until_ready(fb(*args))
        fns[name] = functools.partial(fb, *args)
        if a.hlo:
          hlo[name] = hlo_ops(fb, args)
      # The same number of calls per repetition for every layer (an earlier
      # version sized it per layer, which made paired ratios compare k1 calls
      # of one layer with k2 of another); times are per call.
      times = C.paired_timings(fns, a.reps, warmup=2, min_rep_s=a.min_rep_s)
      if a.rivals:
        r = dict(
          shape=shp,
          dtype=dt,
          **{f"{n}_us": C.median(times[n]) * 1e6 for n in fns},
          **{f"{n}_over_bn": C.paired_ratio(times, n, "bn") for n in ("mabn", "frozen_bn")},
          **{f"{n}_over_bn_quartiles": quartiles(times, n, "bn") for n in ("mabn", "frozen_bn")},
          reps=a.reps,
          times_s=times,
        )
      else:
        r = dict(
          shape=shp,
          dtype=dt,
          **{f"{n}_us": C.median(times[n]) * 1e6 for n in fns},
          mbn_over_bn=C.paired_ratio(times, "mbn", "bn"),
          **(
            dict(
              guard_mbn=C.paired_ratio(times, "mbn", "mbn-noguard"),
              guard_bn=C.paired_ratio(times, "bn-ours", "bn-ours-noguard"),
              ours_over_flax_bn=C.paired_ratio(times, "bn-ours", "bn"),
            )
            if a.guard
            else dict(gn_over_bn=C.paired_ratio(times, "gn", "bn"))
          ),
        )
      if a.hlo:
        r["hlo_ops"] = {n: dict(total=h[0], fusions=h[1]) for n, h in hlo.items()}
        print(
          f"  {shp} {dt} HLO ops (total, fusions): "
          + ", ".join(f"{n}={h[0]},{h[1]}" for n, h in hlo.items()),
          flush=True,
        )
      records.append(r)
      if a.rivals:
        rows.append(
          [
            shp,
            dt,
            r["bn_us"],
            r["mabn_us"],
            r["frozen_bn_us"],
            r["mabn_over_bn"],
            "{:.3f}–{:.3f}".format(*r["mabn_over_bn_quartiles"]),
            r["frozen_bn_over_bn"],
            "{:.3f}–{:.3f}".format(*r["frozen_bn_over_bn_quartiles"]),
          ]
        )
        print(
          f"{shp} {dt}: MABN/BN={r['mabn_over_bn']:.3f} FrozenBN/BN={r['frozen_bn_over_bn']:.3f}",
          flush=True,
        )
      elif a.guard:
        rows.append(
          [
            shp,
            dt,
            r["mbn_us"],
            r["mbn-noguard_us"],
            r["guard_mbn"],
            r["guard_bn"],
            r["ours_over_flax_bn"],
          ]
        )
        print(f"{shp} {dt}: guard MBN={r['guard_mbn']:.3f} BN={r['guard_bn']:.3f}", flush=True)
      else:
        rows.append(
          [shp, dt, r["bn_us"], r["mbn_us"], r["gn_us"], r["mbn_over_bn"], r["gn_over_bn"]]
        )
        print(f"{shp} {dt}: MBN/BN={r['mbn_over_bn']:.3f} GN/BN={r['gn_over_bn']:.3f}", flush=True)
  if a.rivals:
    C.print_table(
      [
        "shape",
        "dtype",
        "BN us",
        "MABN us",
        "FrozenBN us",
        "MABN/BN",
        "IQR",
        "FrozenBN/BN",
        "IQR",
      ],
      rows,
    )
  elif a.guard:
    C.print_table(
      ["shape", "dtype", "MBN us", "MBN no-guard us", "guard MBN", "guard BN", "our BN / Flax BN"],
      rows,
    )
  else:
    C.print_table(["shape", "dtype", "BN us", "MBN us", "GN us", "MBN/BN", "GN/BN"], rows)
  C.write_json(a.out, dict(machine=C.machine_info(), args=vars(a), results=records))


if __name__ == "__main__":
  main()
