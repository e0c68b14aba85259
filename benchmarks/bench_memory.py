"""Memory: what MomentumBatchNorm adds over flax.linen.BatchNorm.

1. Variables (``jax.eval_shape`` of ``init``, nothing computed): MBN keeps two
   more per-channel float32 vectors per norm layer (``train_mean``,
   ``train_var``) and nothing else.
2. The compiled training step (XLA's ``memory_analysis()`` of the jitted step,
   lowered, not run): argument, output and temporary bytes for BN and MBN.
   The difference in temporaries does not grow with the batch (nothing per
   example).

  python benchmarks/bench_memory.py
  python benchmarks/bench_memory.py --models resnet18 --batches 2,32,128
"""

from __future__ import annotations

import argparse
import functools

import _common as C
import _models
import bench_train_step as TS
import jax
import jax.numpy as jnp

from train import steps as train_steps


def tree_bytes(tree):
  return sum(int(x.size) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def tree_count(tree):
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def analyse(name, norm, batch, conv):
  model = _models.Model(name, norm, conv, batch_size=batch)
  x = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((batch,), jnp.int32)
  variables = jax.eval_shape(
    functools.partial(model.module.init, train=False),
    jax.random.PRNGKey(0),
    jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
  )
  step_fn, _, tx = TS.make_step(model)
  params = variables["params"]
  state = jax.eval_shape(
    lambda v: jax.tree.map(
      lambda t: jnp.asarray(t)[None],
      train_steps.TrainState.create(
        apply_fn=model.module.apply, params=v["params"], tx=tx, batch_stats=v["batch_stats"]
      ),
    ),
    variables,
  )
  batch_in = {
    "image": jax.ShapeDtypeStruct((1,) + x.shape, x.dtype),
    "label": jax.ShapeDtypeStruct((1,) + y.shape, y.dtype),
  }
  compiled = step_fn.lower(state, batch_in).compile()
  m = compiled.memory_analysis()
  stats = variables["batch_stats"]
  n_layers = len(jax.tree_util.tree_leaves(stats)) // (4 if norm == "mbn" else 2)
  return dict(
    params=tree_count(params),
    batch_stats=tree_count(stats),
    batch_stats_bytes=tree_bytes(stats),
    norm_layers=n_layers,
    argument_bytes=getattr(m, "argument_size_in_bytes", None),
    output_bytes=getattr(m, "output_size_in_bytes", None),
    alias_bytes=getattr(m, "alias_size_in_bytes", None),
    temp_bytes=getattr(m, "temp_size_in_bytes", None),
    generated_code_bytes=getattr(m, "generated_code_size_in_bytes", None),
  )


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--models", default="resnet20,resnet18")
  ap.add_argument("--batches", default="2,32,128")
  ap.add_argument("--conv", default="lax")
  ap.add_argument("--out", default="benchmarks/results/bench_memory.json")
  a = ap.parse_args()
  rows, records = [], []
  for name in a.models.split(","):
    for batch in [int(b) for b in a.batches.split(",")]:
      print(f"[{name} b={batch}] lowering + compiling bn and mbn ...", flush=True)
      bn = analyse(name, "bn", batch, a.conv)
      mbn = analyse(name, "mbn", batch, a.conv)
      d = {k: (mbn[k] - bn[k]) if isinstance(bn[k], int) else None for k in bn}
      extra_vec = d["batch_stats"] / max(bn["norm_layers"], 1)
      records.append(dict(model=name, batch=batch, bn=bn, mbn=mbn, diff=d))
      rows.append(
        [
          name,
          batch,
          bn["norm_layers"],
          bn["batch_stats"],
          mbn["batch_stats"],
          d["batch_stats_bytes"],
          f"{extra_vec:.0f}",
          bn["temp_bytes"],
          mbn["temp_bytes"],
          d["temp_bytes"],
          d["argument_bytes"],
          d["output_bytes"],
        ]
      )
  C.print_table(
    [
      "model",
      "batch",
      "norm layers",
      "BN stats",
      "MBN stats",
      "+stat bytes",
      "+floats/layer",
      "BN temp B",
      "MBN temp B",
      "+temp B",
      "+arg B",
      "+out B",
    ],
    rows,
  )
  print("(+floats/layer = 2 × mean channels per layer: train_mean and train_var)")
  C.write_json(a.out, dict(machine=C.machine_info(), args=vars(a), results=records))


if __name__ == "__main__":
  main()
