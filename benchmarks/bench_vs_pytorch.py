"""JAX (mbn_jax) vs PyTorch: one SGD step of ResNet18/ResNet20 (CIFAR), CPU.

The same architecture in both (3×3 stem, no max-pool, 1×1 projection
shortcuts, no conv bias), with BatchNorm and with Momentum BN (PyTorch: a
straightforward module implementing Eq. 8 with the paper's λ, Eq. 11). One
SGD-momentum step = forward, cross-entropy, backward, update. JAX and PyTorch
are timed interleaved in the same process; the reported ratio is the median
over repetitions of t_JAX / t_PyTorch (paired within a repetition).

Needs the optional extra: ``pip install torch==2.13.0`` (CPU build).

  python benchmarks/bench_vs_pytorch.py                       # quick: b=2,8
  python benchmarks/bench_vs_pytorch.py --full                # 2,8,32,128, both models
  python benchmarks/bench_vs_pytorch.py --jax-convs lax,auto  # the fast path too
  python benchmarks/bench_vs_pytorch.py --norms bn,none --jax-variants bn/auto,none/auto
      # the same step without normalization (nn.Identity / norm="none") on both sides:
      # the difference is what the 20-21 norm layers cost in each framework
"""

from __future__ import annotations

import argparse
import functools
import math

import _common as C
import _models
import bench_train_step as TS
import jax.numpy as jnp

try:
  import torch
  from torch import nn
except ImportError as e:  # the optional `bench` extra
  raise SystemExit(
    f'{__file__} needs PyTorch ({e}): pip install -e ".[bench]" (torch==2.13.0, CPU build).'
  ) from None

from mbn_jax import train_momentum


class TorchMBN(nn.Module):
  """Momentum BN for PyTorch (Eq. 8, Algorithm 1), NCHW, λ set per step."""

  def __init__(self, c, eps=1e-5, ideal_batch_size=32, tau0=0.85):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(c))
    self.bias = nn.Parameter(torch.zeros(c))
    self.eps, self.m0, self.tau0 = eps, ideal_batch_size, tau0
    for n, v in (
      ("running_mean", 0.0),
      ("running_var", 1.0),
      ("train_mean", 0.0),
      ("train_var", 1.0),
    ):
      self.register_buffer(n, torch.full((c,), v))
    self.lam = 0.0

  def forward(self, x):
    if not self.training:
      mean, var = self.running_mean, self.running_var
    else:
      m = x.shape[0]
      bvar, bmean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
      lam = self.lam
      mean = lam * self.train_mean + (1 - lam) * bmean
      var = lam * self.train_var + (1 - lam) * bvar
      tau = self.tau0 ** (m / self.m0)  # Eq. 12 (plain Python: no JAX call per layer)
      with torch.no_grad():
        self.train_mean.copy_(mean)
        self.train_var.copy_(var)
        self.running_mean.mul_(tau).add_((1 - tau) * bmean)
        self.running_var.mul_(tau).add_((1 - tau) * bvar)
    inv = torch.rsqrt(var + self.eps) * self.weight
    return x * inv[None, :, None, None] + (self.bias - mean * inv)[None, :, None, None]


def _train_momentum(step, m, total_epochs, steps_per_epoch, m0=32):
  """Eq. 11 in plain Python (== mbn_jax.train_momentum; checked in main())."""
  r = min(m / m0, 1.0)
  if total_epochs == 1 or r == 1.0:
    return 0.0
  t = min(max(step, 0) // steps_per_epoch + 1, total_epochs)
  return max(r ** ((total_epochs - t) / (total_epochs - 1)) - r, 0.0)


def _norm(kind, c):
  """bn, mbn, or none (an identity: timing a step without it shows what the norms cost)."""
  return {"bn": nn.BatchNorm2d, "mbn": TorchMBN, "none": lambda c: nn.Identity()}[kind](c)


class Block(nn.Module):
  def __init__(self, cin, cout, stride, norm):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.n1 = _norm(norm, cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.n2 = _norm(norm, cout)
    self.short = None
    if stride != 1 or cin != cout:
      self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

  def forward(self, x):
    y = torch.relu(self.n1(self.conv1(x)))
    y = self.n2(self.conv2(y))
    return torch.relu(y + (x if self.short is None else self.short(x)))


class TorchResNet(nn.Module):
  def __init__(self, stages, filters, norm, num_classes=10):
    super().__init__()
    self.stem = nn.Conv2d(3, filters[0], 3, 1, 1, bias=False)
    self.stem_norm = _norm(norm, filters[0])
    layers, cin = [], filters[0]
    for i, (n, f) in enumerate(zip(stages, filters)):
      for j in range(n):
        layers.append(Block(cin, f, 2 if i > 0 and j == 0 else 1, norm))
        cin = f
    self.layers = nn.Sequential(*layers)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = torch.relu(self.stem_norm(self.stem(x)))
    x = self.layers(x)
    return self.head(x.mean((2, 3)))


TORCH_ARCH = {
  "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
  "resnet20": ((3, 3, 3), (16, 32, 64)),
}


def torch_step_fn(name, norm, batch, channels_last=False):
  torch.manual_seed(0)
  stages, filters = TORCH_ARCH[name]
  model = TorchResNet(stages, filters, norm)
  mf = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(memory_format=mf).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  x = torch.randn(batch, 3, 32, 32).to(memory_format=mf)
  y = torch.randint(0, 10, (batch,))
  mbns = [m for m in model.modules() if isinstance(m, TorchMBN)]
  spe, total = _models.MBN_OPTIONS["steps_per_epoch"], _models.MBN_OPTIONS["total_epochs"]
  state = {"step": 0}

  def run():
    if mbns:  # Eq. 11, the same schedule as the JAX side.
      lam = _train_momentum(state["step"], batch, total, spe)
      for m in mbns:
        m.lam = lam
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    state["step"] += 1
    return loss.item()

  return run


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--models", default="resnet18,resnet20")
  ap.add_argument("--batches", default="2,8")
  ap.add_argument("--norms", default="bn,mbn")
  ap.add_argument(
    "--jax-variants",
    default="bn/lax,bn/auto,mbn/auto",
    help="NORM/CONV pairs; CONV among " + ",".join(_models.CONV_VARIANTS),
  )
  ap.add_argument(
    "--torch-threads",
    default="1,2",
    help="PyTorch intra-op thread counts to time (each ratio uses the "
    "fastest PyTorch variant of the same norm)",
  )
  ap.add_argument("--channels-last", action="store_true", help="PyTorch channels_last")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument(
    "--min_rep_s",
    type=float,
    default=0.0,
    help="time each repetition over enough steps to last this long (0: one step)",
  )
  ap.add_argument("--full", action="store_true", help="batches 2,8,32,128; both models")
  ap.add_argument("--out", default="benchmarks/results/bench_vs_pytorch.json")
  a = ap.parse_args()
  if a.full:
    a.batches, a.models = "2,8,32,128", "resnet18,resnet20"
  threads = [int(t) for t in a.torch_threads.split(",")]
  for st in (0, 99, 100, 5000, 19999, 30000):  # the PyTorch λ is the paper's λ
    for m in (2, 8, 32):
      want = float(train_momentum(st, batch_size=m, total_epochs=200, steps_per_epoch=100))
      assert math.isclose(_train_momentum(st, m, 200, 100), want, rel_tol=1e-5, abs_tol=1e-6)
  norms = a.norms.split(",")
  jvars = [v for v in a.jax_variants.split(",") if v.split("/")[0] in norms]
  print(
    f"torch {torch.__version__}, default threads {torch.get_num_threads()}; "
    f"machine: {C.machine_info()}",
    flush=True,
  )
  header = ["model", "batch", "norm", "jax conv", "JAX ms", "torch ms (thr)", "JAX/torch"]
  rows, records = [], []
  for name in a.models.split(","):
    for batch in [int(b) for b in a.batches.split(",")]:
      reps = a.reps if batch <= 32 else max(3, a.reps // 2)
      fns = {}
      for norm in norms:
        for t in threads:
          run = torch_step_fn(name, norm, batch, a.channels_last)
          fns[f"torch{t}/{norm}"] = functools.partial(_with_threads, t, run)
      for v in jvars:
        norm, conv = v.split("/")
        print(f"[{name} b={batch}] compiling jax/{v} ...", flush=True)
        fns[f"jax/{v}"] = TS.build(name, norm, conv, batch, jnp.float32)[0]
      times = C.paired_timings(
        fns, reps, warmup=1, progress=f"{name} b={batch}", min_rep_s=a.min_rep_s
      )
      for v in jvars:
        norm, conv = v.split("/")
        tk = min((f"torch{t}/{norm}" for t in threads), key=lambda k: C.median(times[k]))
        jk = f"jax/{v}"
        r = dict(
          model=name,
          batch=batch,
          norm=norm,
          jax_conv=conv,
          jax_ms=C.median(times[jk]) * 1e3,
          torch_ms=C.median(times[tk]) * 1e3,
          torch_variant=tk,
          ratio=C.paired_ratio(times, jk, tk),
          torch_ms_all={k: C.median(times[k]) * 1e3 for k in fns if k.startswith("torch")},
        )
        records.append(r)
        rows.append(
          [
            name,
            batch,
            norm,
            conv,
            r["jax_ms"],
            f"{r['torch_ms']:.1f} ({tk.split('/')[0][5:]})",
            r["ratio"],
          ]
        )
      C.print_table(header, rows[-len(jvars) :])
  print()
  C.print_table(header, rows)
  C.write_json(
    a.out, dict(machine=C.machine_info(), torch=torch.__version__, args=vars(a), results=records)
  )


def _with_threads(t, run):
  torch.set_num_threads(t)
  return run()


if __name__ == "__main__":
  main()
