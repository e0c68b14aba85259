"""Convolution backward-pass benchmark: lax vs train.cpu_conv variants.

Times jit(fwd + grad wrt input and weight) of one conv layer, all variants
interleaved in the same run, and prints each variant's time relative to
lax.conv_general_dilated (median of paired repetitions). Also times the
weight gradient alone (the part issue #6 blames).

  python benchmarks/bench_conv.py                       # quick
  python benchmarks/bench_conv.py --batches 8,32,128 --reps 5
"""

from __future__ import annotations

import argparse
import functools

import _common as C
import jax
import jax.numpy as jnp
from jax import lax

from train import cpu_conv as fc


def variants(chunks, with_input_chunk):
  v = {
    "lax": lax.conv_general_dilated,
    "auto": fc.conv_general_dilated,
    "taps": fc.make_conv_general_dilated("taps"),
  }
  for c in chunks:
    v[f"chunked{c}"] = fc.make_conv_general_dilated("chunked", chunk_size=c)
  if with_input_chunk:
    v["auto+dx16"] = fc.make_conv_general_dilated("auto", input_grad_chunk_size=16)
  return v


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--batches", default="8,32")
  ap.add_argument("--hw", type=int, default=32)
  ap.add_argument("--cin", type=int, default=64)
  ap.add_argument("--cout", type=int, default=64)
  ap.add_argument("--stride", type=int, default=1)
  ap.add_argument("--chunks", default="4,8,16")
  ap.add_argument("--input-chunk", action="store_true", help="also time a chunked input gradient")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--out", default="benchmarks/results/bench_conv.json")
  a = ap.parse_args()
  dtype = jnp.dtype(a.dtype)
  vs = variants([int(c) for c in a.chunks.split(",") if c], a.input_chunk)
  rows, records = [], []
  for n in [int(b) for b in a.batches.split(",")]:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(n), 3)
    x = jax.random.normal(k1, (n, a.hw, a.hw, a.cin), dtype)
    w = jax.random.normal(k2, (3, 3, a.cin, a.cout), dtype) * 0.05
    ho = -(-a.hw // a.stride)
    ct = jax.random.normal(k3, (n, ho, ho, a.cout), dtype)
    flops = 2 * n * ho * ho * a.cout * a.cin * 9  # one conv; fwd+dx+dw = 3x
    fns, wfns = {}, {}
    for name, conv in vs.items():
      cf = functools.partial(
        conv,
        window_strides=(a.stride,) * 2,
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )

      @jax.jit
      def fb(x, w, cf=cf):
        y, vjp = jax.vjp(cf, x, w)
        return vjp(ct)

      @jax.jit
      def wg(x, w, cf=cf):
        _, vjp = jax.vjp(lambda w: cf(x, w), w)
        return vjp(ct)

      fns[name] = functools.partial(fb, x, w)
      wfns["dw:" + name] = functools.partial(wg, x, w)
    print(f"batch {n}: fwd+dx+dw", flush=True)
    t = C.paired_timings(fns, a.reps, progress=f"b{n}")
    print(f"batch {n}: dw only", flush=True)
    tw = C.paired_timings(wfns, a.reps, progress=f"b{n} dw")
    for name in vs:
      r = dict(
        batch=n,
        variant=name,
        ms_fwd_bwd=C.median(t[name]) * 1e3,
        ratio_vs_lax=C.paired_ratio(t, name, "lax"),
        ms_dw=C.median(tw["dw:" + name]) * 1e3,
        dw_ratio_vs_lax=C.paired_ratio(tw, "dw:" + name, "dw:lax"),
        dw_gflops=flops / C.median(tw["dw:" + name]) / 1e9,
      )
      records.append(r)
      rows.append(
        [
          n,
          name,
          r["ms_fwd_bwd"],
          r["ratio_vs_lax"],
          r["ms_dw"],
          r["dw_ratio_vs_lax"],
          r["dw_gflops"],
        ]
      )
  C.print_table(["batch", "variant", "fwd+bwd ms", "/lax", "dW ms", "dW /lax", "dW GFLOP/s"], rows)
  C.write_json(a.out, dict(machine=C.machine_info(), args=vars(a), results=records))


if __name__ == "__main__":
  main()
