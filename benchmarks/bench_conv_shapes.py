"""Per-layer-shape breakdown: every conv shape of ResNet18/ResNet20-CIFAR, fwd+dx+dW.

For one batch size, times jit(forward + input and weight gradients) of each
distinct conv of ResNet18 (or ``--model resnet20``; CIFAR variants) with lax.conv_general_dilated, with
train.cpu_conv.conv_general_dilated ("auto"), with cpu_conv.matmul_conv,
and (if torch is installed) PyTorch's conv2d forward+backward, all
interleaved; totals are weighted by how often each shape occurs in the net.
Shows where the time (and the remaining gap to PyTorch) lives.

  python benchmarks/bench_conv_shapes.py --batch 8
  python benchmarks/bench_conv_shapes.py --model resnet20 --batch 8 --min_rep_s 0.2
  python benchmarks/bench_conv_shapes.py --batch 128 --reps 3 --no-matmul
"""

from __future__ import annotations

import argparse
import functools

import _common as C
import jax
from jax import lax

from train import cpu_conv as fc

# (input H, Cin, Cout, kernel, stride, count in the network)
RESNET18_SHAPES = [
  (32, 3, 64, 3, 1, 1),
  (32, 64, 64, 3, 1, 4),
  (32, 64, 128, 3, 2, 1),
  (16, 128, 128, 3, 1, 3),
  (32, 64, 128, 1, 2, 1),
  (16, 128, 256, 3, 2, 1),
  (8, 256, 256, 3, 1, 3),
  (16, 128, 256, 1, 2, 1),
  (8, 256, 512, 3, 2, 1),
  (4, 512, 512, 3, 1, 3),
  (8, 256, 512, 1, 2, 1),
]
# ResNet20 (16/32/64 channels, 3 blocks per stage, 1x1 projection shortcuts): 21 convs.
RESNET20_SHAPES = [
  (32, 3, 16, 3, 1, 1),
  (32, 16, 16, 3, 1, 6),
  (32, 16, 32, 3, 2, 1),
  (16, 32, 32, 3, 1, 5),
  (32, 16, 32, 1, 2, 1),
  (16, 32, 64, 3, 2, 1),
  (8, 64, 64, 3, 1, 5),
  (16, 32, 64, 1, 2, 1),
]
SHAPES = {"resnet18": RESNET18_SHAPES, "resnet20": RESNET20_SHAPES}


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--model", default="resnet18", choices=sorted(SHAPES))
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument(
    "--min_rep_s",
    type=float,
    default=0.0,
    help="time each repetition over enough calls to last this long",
  )
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--no-matmul", action="store_true", help="skip matmul_conv (big at large batch)")
  ap.add_argument("--torch-threads", type=int, default=1)
  ap.add_argument(
    "--out", default=None, help="default benchmarks/results/bench_conv_shapes_b<N>.json"
  )
  a = ap.parse_args()
  try:
    import torch

    torch.set_num_threads(a.torch_threads)
  except ImportError:
    torch = None
  n = a.batch
  variants = {"lax": lax.conv_general_dilated, "auto": fc.conv_general_dilated}
  if not a.no_matmul:
    variants["matmul"] = lambda x, w, s, p, dimension_numbers: fc.matmul_conv(
      x, w, s, p, dimension_numbers=dimension_numbers
    )
  rows, records, tot = [], [], {}
  for h, ci, co, k, s, cnt in SHAPES[a.model]:
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (n, h, h, ci))
    w = jax.random.normal(kw, (k, k, ci, co)) * 0.05
    p = k // 2
    g = jax.random.normal(kg, (n, h // s, h // s, co))
    fns = {}
    for name, conv in variants.items():
      cf = (
        functools.partial(conv, s=(s, s), p=((p, p), (p, p)))
        if name == "matmul"
        else functools.partial(conv, window_strides=(s, s), padding=((p, p), (p, p)))
      )
      fb = jax.jit(
        lambda x, w, cf=cf: jax.vjp(
          lambda x, w: cf(x, w, dimension_numbers=("NHWC", "HWIO", "NHWC")), x, w
        )[1](g)
      )
      fns[name] = functools.partial(fb, x, w)
    if torch is not None:
      tx = torch.randn(n, ci, h, h, requires_grad=True)
      tw = (torch.randn(co, ci, k, k) * 0.05).requires_grad_(True)
      tg = torch.randn(n, co, h // s, h // s)

      def tfb(tx=tx, tw=tw, tg=tg, s=s, p=p):
        y = torch.nn.functional.conv2d(tx, tw, stride=s, padding=p)
        return torch.autograd.grad(y, [tx, tw], tg)

      fns["torch"] = tfb
    t = C.paired_timings(fns, a.reps, warmup=1, min_rep_s=a.min_rep_s)
    ms = {k2: C.median(v) * 1e3 for k2, v in t.items()}
    for k2 in ms:
      tot[k2] = tot.get(k2, 0.0) + ms[k2] * cnt
    r = dict(
      shape=f"{h}x{h}x{ci}->{co} k{k}s{s}",
      count=cnt,
      ms=ms,
      auto_over_lax=C.paired_ratio(t, "auto", "lax"),
      lax_over_torch=C.paired_ratio(t, "lax", "torch") if torch else None,
      auto_over_torch=C.paired_ratio(t, "auto", "torch") if torch else None,
    )
    records.append(r)
    rows.append(
      [r["shape"], cnt]
      + [ms[k2] for k2 in fns]
      + [
        r["auto_over_lax"],
        r["lax_over_torch"] or float("nan"),
        r["auto_over_torch"] or float("nan"),
      ]
    )
    print(rows[-1], flush=True)
  names = list(fns)
  rows.append(
    ["TOTAL (weighted)", ""]
    + [tot[k2] for k2 in names]
    + [
      tot["auto"] / tot["lax"],
      tot["lax"] / tot.get("torch", float("nan")),
      tot["auto"] / tot.get("torch", float("nan")),
    ]
  )
  C.print_table(
    [f"conv (batch {n})", "x"]
    + [f"{k2} ms" for k2 in names]
    + ["auto/lax", "lax/torch", "auto/torch"],
    rows,
  )
  suffix = "" if a.model == "resnet18" else f"_{a.model}"
  C.write_json(
    a.out or f"benchmarks/results/bench_conv_shapes{suffix}_b{n}.json",
    dict(machine=C.machine_info(), args=vars(a), results=records, totals_ms=tot),
  )


if __name__ == "__main__":
  main()
