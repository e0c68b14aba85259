"""Gradient accumulation on CPU (issue 15): optax.MultiSteps vs a lax.scan over micro-batches.

One optimizer update from k micro-batches of m images (ResNet20, CIFAR
shapes, MBN, SGD momentum + weight decay), two implementations timed
interleaved in the same run:

* ``multisteps``: ``optax.MultiSteps(tx, k)``; the jitted step runs one
  micro-batch per call (k calls per update; the optimizer applies the mean
  gradient on every k-th call);
* ``scan``: one jitted call per update, a ``lax.scan`` over the k
  micro-batches inside it (gradients summed in the carry, one optimizer
  update).

Both update ``batch_stats`` after every micro-batch (the sequential mode).
Reports ms per optimizer update, compile time and the paired ratio
scan / multisteps (< 1: the scan is faster). Nothing of the training program
uses either yet; this measures which to build on.

  python benchmarks/bench_accumulation.py --micro 2 --k 4,16 --reps 5
"""

from __future__ import annotations

import argparse
import time

import _common as C
import _models
import jax
import jax.numpy as jnp
import optax


def loss_fn(model, params, batch_stats, x, y, step):
  logits, new = model.apply(
    {"params": params, "batch_stats": batch_stats},
    x,
    train=True,
    step=step,
    mutable=["batch_stats"],
  )
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]


def build(micro: int, k: int, seed: int = 0):
  model = _models.Model("resnet20", "mbn", "lax", batch_size=micro).module
  xs = jax.random.normal(jax.random.PRNGKey(seed), (k, micro, 32, 32, 3), jnp.float32)
  ys = jax.random.randint(jax.random.PRNGKey(seed + 1), (k, micro), 0, 10)
  variables = model.init(jax.random.PRNGKey(seed + 2), xs[0], train=False)
  base = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.01, momentum=0.9))
  grad = jax.value_and_grad(lambda p, s, x, y, t: loss_fn(model, p, s, x, y, t), has_aux=True)

  multi = optax.MultiSteps(base, every_k_schedule=k)

  @jax.jit
  def multi_step(params, batch_stats, opt_state, x, y, step):
    (_, batch_stats), g = grad(params, batch_stats, x, y, step)
    updates, opt_state = multi.update(g, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  @jax.jit
  def scan_step(params, batch_stats, opt_state, xs, ys, step):
    def body(carry, xy):
      batch_stats, acc = carry
      (_, batch_stats), g = grad(params, batch_stats, xy[0], xy[1], step)
      return (batch_stats, jax.tree.map(jnp.add, acc, g)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (batch_stats, total), _ = jax.lax.scan(body, (batch_stats, zeros), (xs, ys))
    mean = jax.tree.map(lambda t: t / k, total)
    updates, opt_state = base.update(mean, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  params, stats = variables["params"], variables["batch_stats"]
  boxes = {
    "multisteps": [params, stats, multi.init(params)],
    "scan": [params, stats, base.init(params)],
  }
  step = jnp.int32(0)

  def run_multi():
    p, s, o = boxes["multisteps"]
    for i in range(k):
      p, s, o = multi_step(p, s, o, xs[i], ys[i], step)
    boxes["multisteps"] = [p, s, o]
    return o

  def run_scan():
    p, s, o = boxes["scan"]
    boxes["scan"] = list(scan_step(p, s, o, xs, ys, step))
    return boxes["scan"][2]

  compile_s = {}
  for name, fn in (("multisteps", run_multi), ("scan", run_scan)):
    t0 = time.perf_counter()
    C.block(fn())
    compile_s[name] = time.perf_counter() - t0
  return {"multisteps": run_multi, "scan": run_scan}, compile_s


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--micro", type=int, default=2, help="images per micro-batch (m)")
  ap.add_argument("--k", default="4,16", help="micro-batches per optimizer update")
  ap.add_argument("--reps", type=int, default=7)
  ap.add_argument("--out", default="benchmarks/results/bench_accumulation.json")
  a = ap.parse_args()
  rows, records = [], []
  for k in [int(v) for v in a.k.split(",")]:
    fns, compile_s = build(a.micro, k)
    times = C.paired_timings(fns, a.reps, warmup=1, progress=f"k={k}")
    ratio = C.paired_ratio(times, "scan", "multisteps")
    for name in fns:
      ms = C.median(times[name]) * 1e3
      records.append(
        dict(
          micro=a.micro,
          k=k,
          variant=name,
          ms_per_update=ms,
          compile_and_first_s=compile_s[name],
          scan_over_multisteps=ratio,
          times_s=times[name],
        )
      )
      rows.append([a.micro, k, name, ms, compile_s[name], ratio])
  C.print_table(["m", "k", "variant", "ms/update", "first call s", "scan/multisteps"], rows)
  C.write_json(a.out, dict(machine=C.machine_info(), args=vars(a), results=records))


if __name__ == "__main__":
  main()
