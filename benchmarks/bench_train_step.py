"""Training-step benchmark: ResNet20 / ResNet18 (CIFAR) with each norm.

The training program's own step (:func:`train.steps.train_step`: forward,
backward, batch_stats update, pmean, SGD momentum + weight decay, the
non-finite guard), pmapped over one device as ``python -m train`` runs it,
the step a traced int32 array. For every (model, batch) the
norms (and, with --convs, the convolution variants) are timed interleaved in
the same run; ratios are medians of paired repetitions. Reports ms/step,
images/s, first-call compile time and the number of compilations over the
timed steps (must be 1).

  python benchmarks/bench_train_step.py                     # quick
  python benchmarks/bench_train_step.py --full              # everything (slow)
  python benchmarks/bench_train_step.py --models resnet18 --batches 32 \
      --norms bn,mbn --convs lax,taps
  python benchmarks/bench_train_step.py --rivals --models resnet20 --batches 2,8
      # the rivals (issue 30): --norms bn,mabn,frozen_bn, ratios to bn, out
      # benchmarks/results/bench_train_step_rivals.json. MABN's step differentiates and
      # folds its backward_probes (train_step's probes=), as the training program's does.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as C
import _models
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default
from train import steps as train_steps


def make_step(model: _models.Model, probes: dict | None = None):
  """The training program's own step, as ``python -m train`` runs it.

  :func:`train.steps.train_step` (SGD momentum 0.9, weight decay 1e-4 from
  ``configs/default.py``, ``pmean`` of the gradients, the non-finite guard)
  ``jax.pmap``-ed over one device. Returns ``(step_fn, traces, tx)`` with
  ``step_fn(state, batch) -> (state, loss)``; ``state`` and ``batch`` carry a
  leading device axis of size 1, ``step_fn.lower`` lowers it. ``probes``: the
  model's ``backward_probes`` shapes (:func:`train.steps.backward_probe_shapes`;
  None or {}: none), passed to the step as the training program passes them.
  """
  config = default.get_config()
  tx = train_steps.make_optimizer(config, optax.constant_schedule(0.1))
  traces = {"n": 0}

  def counted(state, batch, stop):
    traces["n"] += 1
    return train_steps.train_step(
      state,
      batch,
      stop,
      learning_rate_fn=lambda s: 0.1,
      momentum_fn=lambda s: 0.0,
      **({"probes": probes} if probes else {}),
    )

  p_step = jax.pmap(
    counted, axis_name=train_steps.AXIS, donate_argnums=(0,), devices=jax.local_devices()[:1]
  )
  stop = np.zeros((1,), np.int32)

  def step_fn(state, batch):
    state, metrics = p_step(state, batch, stop)
    return state, metrics["loss"]

  step_fn.lower = lambda state, batch: p_step.lower(state, batch, stop)
  step_fn.pmapped = p_step
  return step_fn, traces, tx


def inputs(batch, seed=0):
  """The (images, labels) every step benchmark feeds: CIFAR-shaped, fixed by ``seed``."""
  x = jax.random.normal(jax.random.PRNGKey(seed), (batch, 32, 32, 3), jnp.float32)
  y = jax.random.randint(jax.random.PRNGKey(seed + 1), (batch,), 0, 10)
  return x, y


def device_batch(x, y) -> dict:
  """(images, labels) as the one-device batch ``make_step``'s step takes."""
  return {"image": x[None], "label": y[None]}


def build(name, norm, conv, batch, dtype, seed=0):
  model = _models.Model(name, norm, conv, batch_size=batch, dtype=dtype)
  x, y = inputs(batch, seed)
  # MABN's ψ statistics come out of the backward pass through its probes: {} for other norms.
  probes = train_steps.backward_probe_shapes(model.module, (32, 32, 3))
  step_fn, traces, tx = make_step(model, probes)
  state = train_steps.create_train_state(model.module, tx, (32, 32, 3), batch_size=1, seed=seed + 2)
  state = jax.tree.map(lambda t: jnp.asarray(t)[None], state)  # the leading (one-)device axis
  # Onto the device laid out as the step's outputs are (as the training program
  # does), so the second call does not trace again.
  state = jax.pmap(lambda t: t, axis_name=train_steps.AXIS, devices=jax.local_devices()[:1])(state)
  data = device_batch(x, y)
  t0 = time.perf_counter()
  new_state, loss = step_fn(state, data)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - t0
  box = {"state": new_state, "loss": loss, "batch": data}

  def run():
    box["state"], box["loss"] = step_fn(box["state"], data)
    return box["loss"]

  return run, compile_s, traces, step_fn, box


def quartiles(times, num: str, den: str) -> tuple[float, float] | None:
  """First and third quartiles of the paired ratios times[num][i] / times[den][i]."""
  ratios = [a / b for a, b in zip(times[num], times[den])]
  if len(ratios) < 2:
    return None
  q = statistics.quantiles(ratios, n=4)
  return q[0], q[2]


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--models", default="resnet20,resnet18")
  ap.add_argument("--batches", default="2,8", help="per-device batch sizes (quick default)")
  ap.add_argument("--norms", default="bn,mbn,gn")
  ap.add_argument("--convs", default="lax", help=f"conv variants among {_models.CONV_VARIANTS}")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--reps", type=int, default=7)
  ap.add_argument(
    "--min_rep_s",
    type=float,
    default=0.0,
    help="time each repetition over enough steps to last this long (0: one step)",
  )
  ap.add_argument("--full", action="store_true", help="batches 2,8,32,128, resnet20+resnet18")
  ap.add_argument(
    "--baseline", default=None, help="variant the ratios are relative to (default: first)"
  )
  ap.add_argument(
    "--rivals",
    action="store_true",
    help="the rivals: --norms bn,mabn,frozen_bn (ratios to bn, with the paired ratios' "
    "quartiles), out bench_train_step_rivals.json",
  )
  ap.add_argument(
    "--out", default=None, help="default: benchmarks/results/bench_train_step[_rivals].json"
  )
  a = ap.parse_args()
  if a.full:
    a.batches, a.models = "2,8,32,128", "resnet20,resnet18"
  if a.rivals:
    a.norms = "bn,mabn,frozen_bn"
  if a.out is None:
    a.out = f"benchmarks/results/bench_train_step{'_rivals' if a.rivals else ''}.json"
  dtype = jnp.dtype(a.dtype)
  norms = a.norms.split(",")
  convs = a.convs.split(",")
  print(f"machine: {C.machine_info()}", flush=True)
  rows, records = [], []
  for name in a.models.split(","):
    for batch in [int(b) for b in a.batches.split(",")]:
      reps = a.reps if batch <= 32 else max(3, a.reps // 2)
      fns, info = {}, {}
      for norm in norms:
        for conv in convs:
          key = norm if len(convs) == 1 else f"{norm}/{conv}"
          print(f"[{name} b={batch}] compiling {key} ...", flush=True)
          run, compile_s, traces, step_fn, box = build(name, norm, conv, batch, dtype)
          fns[key] = run
          info[key] = (compile_s, traces, step_fn)
      base = a.baseline or next(iter(fns))
      times = C.paired_timings(
        fns, reps, warmup=1, progress=f"{name} b={batch}", min_rep_s=a.min_rep_s
      )
      for key in fns:
        compile_s, traces, step_fn = info[key]
        ms = C.median(times[key]) * 1e3
        cache = step_fn._cache_size() if hasattr(step_fn, "_cache_size") else None
        r = dict(
          model=name,
          batch=batch,
          variant=key,
          ms_per_step=ms,
          images_per_s=batch / ms * 1e3,
          compile_s=compile_s,
          traces=traces["n"],
          jit_cache_size=cache,
          ratio=C.paired_ratio(times, key, base),
          ratio_quartiles=quartiles(times, key, base),
          baseline=base,
          timed_reps=reps,
          times_s=times[key],
        )
        records.append(r)
        rows.append([name, batch, key, ms, r["images_per_s"], compile_s, traces["n"], r["ratio"]])
      C.print_table(
        ["model", "batch", "variant", "ms/step", "img/s", "compile s", "compiles", f"/{base}"],
        rows[-len(fns) :],
      )
  print()
  C.print_table(
    ["model", "batch", "variant", "ms/step", "img/s", "compile s", "compiles", "ratio"], rows
  )
  C.write_json(a.out, dict(machine=C.machine_info(), args=vars(a), results=records))


if __name__ == "__main__":
  main()
