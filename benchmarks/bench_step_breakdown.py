"""Where a training step's time goes, JAX vs PyTorch, phase by phase.

For one model and batch size, times in one interleaved run (paired
repetitions, medians):

* ``forward``   — the training-mode forward pass and the loss;
* ``fwd+bwd``   — forward and the gradients (no optimizer update);
* ``step``      — the whole SGD-momentum step (what bench_train_step times);
* ``update``    — the optimizer update alone (SGD with momentum on the
  model's parameter tree, gradients given);

for JAX (``mbn_jax.models``, jitted; convolutions per ``--conv``) and for the
same ResNet in PyTorch (``bench_vs_pytorch.TorchResNet``, ``--torch-threads``).
The differences between the rows (backward = fwd+bwd − forward, etc.) say
which phase holds the JAX/PyTorch gap. ``--norm none`` removes the norm
layers on both sides.

  python benchmarks/bench_step_breakdown.py --model resnet18 --batch 8
  python benchmarks/bench_step_breakdown.py --model resnet20 --batch 128 --reps 5
"""

from __future__ import annotations

import argparse
import functools

import _common as C
import jax
import jax.numpy as jnp
import optax

try:
  import torch
  from torch import nn
except ImportError as e:  # the optional `bench` extra
  raise SystemExit(
    f'{__file__} needs PyTorch ({e}): pip install -e ".[bench]" (torch==2.13.0, CPU build).'
  ) from None

import _models
import bench_train_step as TS
import bench_vs_pytorch as VP


def jax_phases(name, norm, conv, batch):
  """Callables for each phase of the JAX step (state kept in closures)."""
  run_step, _, _, _, box = TS.build(name, norm, conv, batch, jnp.float32)
  model = _models.Model(name, norm, conv, batch_size=batch, dtype=jnp.float32)
  x, y = TS.inputs(batch)
  # copies: the step donates (and so deletes) the buffers in box["state"].
  params, batch_stats = jax.tree.map(
    lambda t: jnp.array(t[0]), (box["state"].params, box["state"].batch_stats)
  )
  step = jnp.int32(1)

  def loss_fn(p):
    logits, new = model.module.apply(
      {"params": p, "batch_stats": batch_stats}, x, train=True, step=step, mutable=["batch_stats"]
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

  forward = jax.jit(lambda p: loss_fn(p)[0])
  fwd_bwd = jax.jit(jax.grad(lambda p: loss_fn(p)[0]))
  tx = optax.sgd(0.1, momentum=0.9)
  grads = jax.tree.map(jnp.ones_like, params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def update(p, opt_state, g):
    u, opt_state = tx.update(g, opt_state, p)
    return optax.apply_updates(p, u), opt_state

  ubox = {"p": jax.tree.map(jnp.array, params), "o": tx.init(params)}

  def run_update():
    ubox["p"], ubox["o"] = update(ubox["p"], ubox["o"], grads)
    return ubox["o"]

  return {
    "forward": lambda: forward(params),
    "fwd+bwd": lambda: fwd_bwd(params),
    "step": run_step,
    "update": run_update,
  }


def torch_phases(name, norm, batch, threads):
  torch.manual_seed(0)
  stages, filters = VP.TORCH_ARCH[name]
  model = VP.TorchResNet(stages, filters, norm).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  x = torch.randn(batch, 3, 32, 32)
  y = torch.randint(0, 10, (batch,))
  step_fn = VP.torch_step_fn(name, norm, batch)
  for p in model.parameters():
    p.grad = torch.ones_like(p)

  def forward():
    with torch.no_grad():  # as jit(forward) in JAX: no graph kept for backward
      return nn.functional.cross_entropy(model(x), y).item()

  def fwd_bwd():
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.item()

  def update():
    opt.step()
    return None

  wrap = lambda f: functools.partial(VP._with_threads, threads, f)
  return {
    "forward": wrap(forward),
    "fwd+bwd": wrap(fwd_bwd),
    "step": wrap(step_fn),
    "update": wrap(update),
  }


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--model", default="resnet18", choices=sorted(VP.TORCH_ARCH))
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--norm", default="bn", choices=("bn", "mbn", "none"))
  ap.add_argument("--conv", default="auto", help=f"JAX conv variant among {_models.CONV_VARIANTS}")
  ap.add_argument("--torch-threads", type=int, default=2)
  ap.add_argument("--reps", type=int, default=7)
  ap.add_argument("--min_rep_s", type=float, default=0.3)
  ap.add_argument(
    "--out", default=None, help="default benchmarks/results/bench_step_breakdown_<model>_b<N>.json"
  )
  a = ap.parse_args()
  print(f"torch {torch.__version__}; machine: {C.machine_info()}", flush=True)
  fns = {f"jax/{k}": f for k, f in jax_phases(a.model, a.norm, a.conv, a.batch).items()}
  fns.update(
    {f"torch/{k}": f for k, f in torch_phases(a.model, a.norm, a.batch, a.torch_threads).items()}
  )
  times = C.paired_timings(
    fns, a.reps, warmup=1, progress=f"{a.model} b={a.batch}", min_rep_s=a.min_rep_s
  )
  ms = {k: C.median(v) * 1e3 for k, v in times.items()}
  rows, records = [], []
  for phase in ("forward", "fwd+bwd", "step", "update"):
    j, t = ms[f"jax/{phase}"], ms[f"torch/{phase}"]
    rows.append([phase, j, t, j - t, C.paired_ratio(times, f"jax/{phase}", f"torch/{phase}")])
    records.append(dict(phase=phase, jax_ms=j, torch_ms=t, ratio=rows[-1][-1]))
  for label, hi, lo in (
    ("backward (fwd+bwd − forward)", "fwd+bwd", "forward"),
    ("rest (step − fwd+bwd)", "step", "fwd+bwd"),
  ):
    j = ms[f"jax/{hi}"] - ms[f"jax/{lo}"]
    t = ms[f"torch/{hi}"] - ms[f"torch/{lo}"]
    rows.append([label, j, t, j - t, j / t if t > 0 else float("nan")])
    records.append(dict(phase=label, jax_ms=j, torch_ms=t, ratio=rows[-1][-1]))
  print(
    f"\n{a.model}, batch {a.batch}, norm {a.norm}, JAX conv {a.conv}, "
    f"PyTorch {a.torch_threads} thread(s):"
  )
  C.print_table(["phase", "JAX ms", "PyTorch ms", "JAX − PyTorch ms", "JAX/PyTorch"], rows)
  out = a.out or f"benchmarks/results/bench_step_breakdown_{a.model}_b{a.batch}.json"
  C.write_json(
    out,
    dict(
      machine=C.machine_info(),
      torch=torch.__version__,
      args=vars(a),
      results=records,
      times_s=times,
    ),
  )


if __name__ == "__main__":
  main()
