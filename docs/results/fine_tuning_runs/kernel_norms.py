"""Issue 31 diagnostic: how far fine-tuning moved each arm's convolution kernels, per seed.

Prints, for every fine-tuning run of the arms named and every seed, the norm of the stem's
kernel and the median over every conv kernel of ‖W_final‖ / ‖W_pretrained‖ − 1 (the head
excluded: it is re-initialized). Reads the final checkpoints in the worktrees, which are not
committed (run it where they are):

  python docs/results/fine_tuning_runs/kernel_norms.py ../mbn_finetune ../mbn_pretrain
"""

import pathlib
import sys

import jax
import numpy as np

from train import checkpoints

ARMS = {  # arm folder -> the pretrained network it started from
  "frozen_bn": "plain",
  "bn": "plain",
  "syncbn": "plain",
  "mbn": "plain",
  "mbn-pretrained": "plain",
  "mabn": "centred",
}


def kernels(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  params = checkpoints.restore_latest(str(workdir))["params"]
  return {
    jax.tree_util.keystr(path): np.asarray(x)
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
    if "kernel" in jax.tree_util.keystr(path) and "head" not in jax.tree_util.keystr(path)
  }


def main(finetune: str, pretrain: str) -> None:
  sources = {s: kernels(pathlib.Path(pretrain) / "workdirs/pretrain" / s) for s in set(ARMS.values())}
  print("| arm | seed | stem kernel norm (pretrained → final) | median conv-kernel norm change |")
  print("|---|---:|---:|---:|")
  for arm, source in ARMS.items():
    for run in sorted((pathlib.Path(finetune) / "workdirs/fine_tuning" / arm).glob("*-s*")):
      final, start = kernels(run), sources[source]
      stem = next(k for k in final if "stem" in k)
      change = np.median([np.linalg.norm(final[k]) / np.linalg.norm(start[k]) - 1 for k in final])
      print(
        f"| {arm} | {run.name.rsplit('-s', 1)[1]} | {np.linalg.norm(start[stem]):.2f} → "
        f"{np.linalg.norm(final[stem]):.2f} | {100 * change:+.1f} % |"
      )


if __name__ == "__main__":
  main(*sys.argv[1:3])
