r"""Sweep runner: (norm × per-device batch size × seed) through the training program.

    python -m tools.sweep --config configs/cifar10_resnet20_cpu.py \
        --root workdirs/cpu_repro --norms bn,mbn,brn,gn --batch_sizes 2,8,32 --seeds 0,1

Each run is ``python -m train --config CONFIG --workdir ROOT/<norm>-m<m>-s<seed>``
with ``--config.norm``, ``--config.per_device_batch_size`` and ``--config.seed``
set (plus any ``--override`` flags), in its own process, one after another.
A run whose ``summary.json`` says it completed is skipped; an interrupted
run is restarted with the same command and therefore resumes from its last
checkpoint. Each run's output goes to ``<workdir>/train.log`` and its wall
time to ``<workdir>/sweep.json``. ``python -m tools.report`` turns the root
into tables and plots.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """Flags of the command line program (defined only when run as a program)."""
  flags.DEFINE_string("config", None, "Training config file (configs/*.py).", required=True)
  flags.DEFINE_string("root", None, "Directory holding one workdir per run.", required=True)
  flags.DEFINE_list("norms", ["bn", "mbn", "brn", "gn"], "Norm names.")
  flags.DEFINE_list("batch_sizes", ["2", "8", "32"], "Per-device batch sizes.")
  flags.DEFINE_list("seeds", ["0", "1"], "Seeds.")
  flags.DEFINE_multi_string("override", [], "Extra config overrides, e.g. --override=num_epochs=3.")
  flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")


def run_name(norm: str, batch_size: int, seed: int) -> str:
  return f"{norm}-m{batch_size}-s{seed}"


def parse_run_name(name: str) -> tuple[str, int, int]:
  norm, m, s = name.rsplit("-", 2)
  if not (m.startswith("m") and s.startswith("s")):
    raise ValueError(f"not a sweep run directory name: {name!r}")
  return norm, int(m[1:]), int(s[1:])


def is_finished(workdir: pathlib.Path) -> bool:
  """True when the run completed (an interrupted run also writes summary.json)."""
  path = workdir / "summary.json"
  return path.exists() and json.loads(path.read_text()).get("status") == "completed"


def command(
  config: str, workdir: pathlib.Path, norm: str, batch_size: int, seed: int, overrides: list[str]
) -> list[str]:
  cmd = [
    sys.executable,
    "-m",
    "train",
    f"--config={config}",
    f"--workdir={workdir}",
    f"--config.norm={norm}",
    f"--config.per_device_batch_size={batch_size}",
    f"--config.seed={seed}",
  ]
  return cmd + [f"--config.{o}" for o in overrides]


def main(argv):
  del argv
  root = pathlib.Path(FLAGS.root)
  if not root.parent.exists():
    raise SystemExit(f"--root: parent directory {root.parent} does not exist.")
  root.mkdir(exist_ok=True)
  # Smallest batch first, then seed, then norm: the m = 2 comparison of every
  # norm finishes before anything else, and a partial sweep is still a result.
  norms: list[str] = FLAGS.norms  # absl's flag values are untyped
  runs = [
    (norm, m, seed)
    for m, seed, norm in itertools.product(
      sorted(int(b) for b in FLAGS.batch_sizes), [int(s) for s in FLAGS.seeds], norms
    )
  ]
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / ".jax_cache"))
  for i, (norm, m, seed) in enumerate(runs, 1):
    workdir = root / run_name(norm, m, seed)
    tag = f"[{i}/{len(runs)}] {workdir.name}"
    if is_finished(workdir):
      print(f"{tag}: finished, skipped", flush=True)
      continue
    cmd = command(FLAGS.config, workdir, norm, m, seed, FLAGS.override)
    print(f"{tag}: {' '.join(cmd)}", flush=True)
    if FLAGS.dry_run:
      continue
    workdir.mkdir(exist_ok=True)
    start = time.time()
    with open(workdir / "train.log", "a") as log:
      rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - start
    previous = {}
    if (workdir / "sweep.json").exists():
      previous = json.loads((workdir / "sweep.json").read_text())
    record = {
      "command": cmd,
      "returncode": rc,
      "wall_seconds": previous.get("wall_seconds", 0.0) + wall,
    }
    (workdir / "sweep.json").write_text(json.dumps(record, indent=1))
    print(f"{tag}: rc={rc} in {wall:.0f} s", flush=True)
    if rc != 0:
      print(f"{tag}: FAILED, see {workdir / 'train.log'}", file=sys.stderr, flush=True)


def cli():
  """The ``mbn-sweep`` console script (``python -m tools.sweep``)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  cli()
