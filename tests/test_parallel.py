"""The seam (train/parallel.py): jit + shard_map on a Mesh trains exactly what pmap trains.

Independent expectations: the pmap run (the program's default, tested against
NumPy and single-device runs elsewhere) and NumPy moments of the concatenated
valid entries of each statistics group.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from configs import quickstart
from mbn_jax import MomentumBatchNorm
from mbn_jax import functional as F
from train import checkpoints as ckpt_lib
from train import train as train_lib
from train.parallel import sync_groups

pytestmark = pytest.mark.skipif(jax.local_device_count() != 4, reason="needs 4 devices")


def quick(parallelism, norm="mbn", **overrides):
  """The quickstart (tiny CNN on digits, 2 images per device), 2 epochs of 64 images."""
  c = quickstart.get_config()
  c.norms, c.norm, c.num_epochs, c.parallelism = "", norm, 2, parallelism
  c.progress_bar, c.tensorboard = False, False
  c.dataset.max_train_examples = 64
  c.dataset.holdout_per_class = 10
  c.eval_per_device_batch_size = 25
  c.mbn_total_epochs, c.lr_decay_epochs, c.base_learning_rate = 2, 1, 1.0
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def max_diff(a, b) -> float:
  leaves = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert leaves and len(jax.tree.leaves(a)) == len(jax.tree.leaves(b))
  return max(
    float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in leaves
  )


def records(workdir):
  return [json.loads(line) for line in open(f"{workdir}/metrics.jsonl") if line.strip()]


def compare_runs(wa, wb):
  a, b = ckpt_lib.restore_latest(str(wa)), ckpt_lib.restore_latest(str(wb))
  diffs = {
    k: max_diff(a[k], b[k])
    for k in ("params", "opt_state", "batch_stats", "batch_stats_per_device")
  }
  print(f"max |Δ| mesh vs pmap: {diffs}")
  for k, d in diffs.items():
    assert d <= 1e-6, (k, d)
  ra, rb = records(wa), records(wb)
  assert len(ra) == len(rb) == 2
  for x, y in zip(ra, rb):
    for key in (
      "train_loss",
      "train_accuracy",
      "eval_loss",
      "eval_accuracy",
      "eval_accuracy_precise",
      "lambda",
    ):
      assert x.get(key) == pytest.approx(y.get(key), abs=1e-6), key


@pytest.mark.parametrize(
  "norm,sync,accum,accum_stats",
  [
    # BN and MBN × per-device and synchronized statistics × without and with accumulation
    # (both ways of accumulating statistics), and statistics shared by pairs of devices.
    ("bn", 1, 1, "sequential"),
    ("mbn", 1, 1, "sequential"),
    ("bn", -1, 1, "sequential"),
    ("mbn", -1, 1, "sequential"),
    ("bn", 1, 2, "sequential"),
    ("mbn", 1, 2, "deferred"),
    ("bn", -1, 2, "deferred"),
    ("mbn", -1, 2, "sequential"),
    ("mbn", 2, 1, "sequential"),
  ],
)
def test_mesh_trains_what_pmap_trains(tmp_path, norm, sync, accum, accum_stats):
  extra = dict(norm_sync_devices=sync, grad_accum_steps=accum, grad_accum_stats=accum_stats)
  if norm == "mbn":  # population statistics through the seam too
    extra.update(precise_stats_batches=2, precise_stats_batch_size=4, precise_stats_every_eval=True)
  sa = train_lib.train_and_evaluate(quick("pmap", norm, **extra), str(tmp_path / "pmap"))
  sb = train_lib.train_and_evaluate(quick("mesh", norm, **extra), str(tmp_path / "mesh"))
  assert sa["status"] == sb["status"] == "completed"
  assert sa["parallelism"] == "pmap" and sb["parallelism"] == "mesh"
  assert sb["train_step_traces"] == 1
  assert sb["statistics_batch_size"] == 2 * (4 if sync == -1 else sync)
  compare_runs(tmp_path / "pmap", tmp_path / "mesh")
  if norm == "mbn":
    pa = ckpt_lib.CheckpointManager(str(tmp_path / "pmap" / "checkpoints"))
    pb = ckpt_lib.CheckpointManager(str(tmp_path / "mesh" / "checkpoints"))
    step = pa.latest_step()
    assert (
      max_diff(
        pa.restore_item(step, ckpt_lib.PRECISE_STATS), pb.restore_item(step, ckpt_lib.PRECISE_STATS)
      )
      <= 1e-6
    )


@pytest.mark.parametrize("first,then", [("pmap", "mesh"), ("mesh", "pmap")])
def test_a_checkpoint_written_under_one_resumes_under_the_other(tmp_path, first, then):
  straight = tmp_path / "straight"
  train_lib.train_and_evaluate(quick("pmap"), str(straight))
  switched = tmp_path / "switched"
  train_lib.train_and_evaluate(quick(first, num_epochs=1), str(switched))
  summary = train_lib.train_and_evaluate(quick(then), str(switched))
  assert summary["status"] == "completed" and summary["parallelism"] == then
  compare_runs(straight, switched)


def _np_group_moments(x, mask, groups):
  out = []
  for g in groups:
    vals = np.concatenate([x[d][mask[d]] for d in g])  # valid entries of the group's devices
    out.append((vals.mean(0), vals.var(0), len(vals)))
  return out


@pytest.mark.parametrize("group", [1, 2, 4])
def test_statistics_groups_are_exact_moments_per_group(group):
  """G = 1, 2, 4 with uneven masks, under pmap (axis_index_groups) and a 2-D Mesh ('data', 'stats')."""
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, size=(4, 6, 3)).astype(np.float32)
  mask = np.zeros((4, 6), bool)
  for d, n in enumerate((6, 1, 4, 3)):  # unequal valid counts per device
    mask[d, :n] = True
  groups = sync_groups(4, group)
  want = _np_group_moments(x, mask, groups)

  def moments(axis_name, axis_index_groups):
    def f(xd, md):
      m = F.batch_moments(
        xd, (0,), axis_name=axis_name, axis_index_groups=axis_index_groups, mask=md[:, None]
      )
      return jnp.stack([m.mean, m.var, m.count])

    return f

  # pmap: G = 1 per device (no axis), G = 4 the whole axis, else axis_index_groups.
  pmap_sync = (None, None) if group == 1 else ("batch", groups if group < 4 else None)
  pm = jax.pmap(moments(*pmap_sync), axis_name="batch")(x, mask)
  mesh = Mesh(np.asarray(jax.devices()).reshape(4 // group, group), ("data", "stats"))
  sm = jax.jit(
    jax.shard_map(
      lambda xd, md: moments("stats", None)(xd[0], md[0])[None],
      mesh=mesh,
      in_specs=(P(("data", "stats")), P(("data", "stats"))),
      out_specs=P(("data", "stats")),
      check_vma=False,
    )
  )(x, mask)
  for got in (np.asarray(pm), np.asarray(sm)):
    for gi, g in enumerate(groups):
      for d in g:
        np.testing.assert_allclose(got[d][0], want[gi][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[d][1], want[gi][1], rtol=1e-5, atol=1e-5)
        assert got[d][2][0] == want[gi][2]

  # The layer's λ and τ use the group's batch m·G (here m = 6 entries per device).
  layer = MomentumBatchNorm(
    total_epochs=3, steps_per_epoch=1, axis_name=pmap_sync[0], axis_index_groups=pmap_sync[1]
  )
  v = MomentumBatchNorm(total_epochs=3, steps_per_epoch=1).init(
    jax.random.key(0), x[0], False, step=0
  )
  rep = jax.tree.map(lambda a: jnp.broadcast_to(a, (4,) + a.shape), v)

  def step(vv, xd):
    _, upd = layer.apply(vv, xd, False, step=2, mutable=["batch_stats"])
    return upd["batch_stats"]["train_mean"]

  tm = jax.pmap(step, axis_name="batch")(rep, x)
  lam = 1 - 6 * group / 32  # λ at t = T = 3 (Eq. 11) for m·G
  full = _np_group_moments(x, np.ones((4, 6), bool), groups)
  for gi, g in enumerate(groups):
    np.testing.assert_allclose(tm[g[0]], (1 - lam) * full[gi][0], rtol=1e-5, atol=1e-5)


def test_norm_sync_devices_must_divide_the_devices():
  with pytest.raises(ValueError, match="norm_sync_devices=3 does not divide the 4 device"):
    train_lib.validate_config(quick("mesh", norm_sync_devices=3))
  with pytest.raises(ValueError, match="parallelism must be one of"):
    train_lib.validate_config(quick("xmap"))
  with pytest.raises(ValueError, match="required_devices=2, but JAX sees 4 device"):
    train_lib.validate_config(quick("pmap", required_devices=2))
  assert train_lib.validate_config(quick("mesh", required_devices=4)).devices == 4
