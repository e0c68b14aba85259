"""Input pipeline benchmark: memory against dataset size, and images/s of the old and new pipelines.

Two parts (both by default):

``memory``: generates (once, cached in ``--folders``) image folders of
224x224 JPEGs of two sizes (``--sizes``, e.g. 5,000 and 50,000 images), and in a
fresh process per size streams ``--batches`` training batches of ``--batch``
images from each (``dataset.max_in_memory_gb=0``: decoded on the fly by Grain's
threads) and reports the process's peak resident memory (``ru_maxrss``) and
images/s. Streaming memory must not grow with the dataset; an in-memory copy
would need ``N x 224 x 224 x 3`` bytes.

``train``: the training program itself (``python -m train``, the tiny CNN,
8 images per step on one CPU device) over the same two folders, streamed,
stopped after ``--train-steps`` steps (``simulate_preemption_at_step``: a
checkpoint, then exit 0), plus the smaller folder held in memory for
contrast; the peak resident memory of each run's process.

``speed``: on the CIFAR-10 JPEG folder (``--cifar``), in one process, one after
the other: the old pipeline (``train/input_pipeline.py`` of ``--old-commit``,
which decodes every image with TensorFlow into memory; needs TensorFlow, the
``[tfds-prepare]`` extra), the new one in memory (Pillow, decoded once in
threads) and the new one streamed (Pillow on every read): the time to load and
the training batches' images/s (``--speed-batches`` batches of
``--speed-batch`` images each) through ``TrainBatches.epoch``.

  python benchmarks/bench_input.py --out benchmarks/results/bench_input.json

Results of this machine: docs/performance.md section 9.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))


def make_folder(root: pathlib.Path, n: int, size: int = 224, classes: int = 10) -> pathlib.Path:
  """``root/train/cNN/iiiiii.jpg``: ``n`` smooth random RGB JPEGs (quality 90), made once."""
  from concurrent.futures import ThreadPoolExecutor

  from PIL import Image

  done = root / f"done_{n}_{size}"
  if done.exists():
    return root
  for c in range(classes):
    (root / "train" / f"c{c:02d}").mkdir(parents=True, exist_ok=True)

  def one(i: int) -> None:
    rng = np.random.default_rng(i)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    big = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), np.int16)
    big = np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
    Image.fromarray(big).save(root / "train" / f"c{i % classes:02d}" / f"{i:06d}.jpg", quality=90)

  with ThreadPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(one, range(n)))
  done.touch()
  return root


def folder_config(root, *, stream: bool, holdout: int, mean=None, std=None):
  from configs import default

  dc = default.get_config().dataset
  dc.source, dc.root, dc.eval_split, dc.holdout_per_class = "image_folder", str(root), "", holdout
  dc.augment, dc.crop_padding = "crop_flip", 4
  dc.max_in_memory_gb = 0.0 if stream else 1000.0
  if mean is not None:
    dc.mean, dc.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
  return dc


def consume(batches, num: int) -> tuple[float, float | None]:
  """(images/s, share of the time spent waiting for data) over ``num`` batches of epoch 0."""
  t0 = time.perf_counter()
  seen = 0
  for i, b in enumerate(batches.epoch(0)):
    seen += b["label"].size
    if i + 1 == num:
      break
  elapsed = time.perf_counter() - t0
  wait = getattr(batches, "wait_seconds", None)  # the old pipeline does not count it
  return seen / elapsed, None if wait is None else wait / elapsed


def train_batches(ip, data, batch: int):
  return ip.TrainBatches(
    data,
    per_device_batch_size=batch,
    local_devices=1,
    process_index=0,
    process_count=1,
    seed=0,
    augment="crop_flip",
    pad=4,
  )


def child_memory(root: str, batches: int, batch: int) -> dict:
  """One size, in this (fresh) process: stream ``batches`` batches, peak RSS."""
  from train import input_pipeline as ip

  rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  t0 = time.perf_counter()
  data = ip.load_dataset(
    folder_config(root, stream=True, holdout=1, mean=(0.5,) * 3, std=(0.25,) * 3)
  )
  load_s = time.perf_counter() - t0
  images_per_s, _ = consume(train_batches(ip, data, batch), batches)
  return {
    "images": len(data.train) + len(data.eval),
    "load_s": load_s,
    "images_per_s": images_per_s,
    "rss_after_imports_mb": rss_start,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def train_run(root: pathlib.Path, steps: int, stream: bool, workdir: pathlib.Path) -> dict:
  """``python -m train`` over ``root`` for ``steps`` steps; its peak RSS (a fresh child)."""
  import shutil

  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, "-m", "train", "--config", "configs/quickstart.py"]
  cmd += ["--workdir", str(workdir), "--config.norms=", "--config.norm=mbn"]
  cmd += ["--config.per_device_batch_size=8", "--config.progress_bar=false"]
  cmd += ["--config.dataset.source=image_folder", f"--config.dataset.root={root}"]
  cmd += ["--config.dataset.holdout_per_class=1", "--config.dataset.augment=crop_flip"]
  cmd += ["--config.dataset.mean=(0.5,0.5,0.5)", "--config.dataset.std=(0.25,0.25,0.25)"]
  cmd += [f"--config.dataset.max_in_memory_gb={0 if stream else 1000}"]
  cmd += [f"--config.simulate_preemption_at_step={steps}", "--config.tensorboard=false"]
  code = (
    "import resource, runpy, sys; sys.argv = ['train'] + sys.argv[1:]\n"
    "try:\n  runpy.run_module('train', run_name='__main__')\n"
    "finally:\n  print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
  )
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  t0 = time.perf_counter()
  done = subprocess.run(
    [sys.executable, "-c", code, *cmd[3:]], cwd=ROOT, env=env, capture_output=True, text=True
  )
  peak = [line for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_MB")]
  if not peak:
    raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
  return {
    "images": sum(1 for _ in root.glob("train/*/*.jpg")),
    "mode": "streamed" if stream else "in memory",
    "steps": steps,
    "seconds": round(time.perf_counter() - t0, 1),
    "exit_status": done.returncode,
    "peak_rss_mb": round(float(peak[0].split()[1])),
  }


def old_pipeline(commit: str):
  """``train/input_pipeline.py`` as of ``commit`` (git show), imported as a module."""
  source = subprocess.run(
    ["git", "show", f"{commit}:train/input_pipeline.py"],
    cwd=ROOT,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  path = pathlib.Path(tempfile.mkdtemp()) / "old_input_pipeline.py"
  path.write_text(source)
  spec = importlib.util.spec_from_file_location("old_input_pipeline", path)
  assert spec and spec.loader
  module = importlib.util.module_from_spec(spec)
  sys.modules["old_input_pipeline"] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def speed(cifar: str, old_commit: str, batches: int, batch: int) -> list[dict]:
  """Old (TensorFlow, in memory), new in memory and new streamed on the CIFAR-10 JPEGs."""
  from train import input_pipeline as ip

  rows = []
  old = old_pipeline(old_commit)
  variants = [
    ("old: TensorFlow decode, in memory", old, dict(stream=False)),
    ("new: Pillow, in memory", ip, dict(stream=False)),
    ("new: Pillow, streamed", ip, dict(stream=True)),
  ]
  mean = std = None
  for name, module, kw in variants:
    dc = folder_config(cifar, holdout=500, mean=mean, std=std, **kw)
    t0 = time.perf_counter()
    data = module.load_dataset(dc)
    load_s = time.perf_counter() - t0
    mean, std = data.mean, data.std  # the streamed run takes them from the in-memory one
    images_per_s, wait = consume(train_batches(module, data, batch), batches)
    rows.append(
      {
        "variant": name,
        "load_s": round(load_s, 2),
        "train_images": len(data.train_labels),
        "batch": batch,
        "batch_images_per_s": round(images_per_s, 1),
        "consumer_wait_share": None if wait is None else round(wait, 3),
      }
    )
    print(json.dumps(rows[-1]), flush=True)
  return rows


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--parts", default="memory,train,speed")
  ap.add_argument("--train-steps", type=int, default=40)
  ap.add_argument("--sizes", default="5000,50000")
  ap.add_argument("--folders", default="/tmp/mbn_bench_input")
  ap.add_argument("--batches", type=int, default=100)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--cifar", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
  ap.add_argument("--old-commit", default="cacf9de")
  ap.add_argument("--speed-batches", type=int, default=300)
  ap.add_argument("--speed-batch", type=int, default=128)
  ap.add_argument("--out", default="")
  ap.add_argument("--child-memory", default="", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child_memory:
    print(json.dumps(child_memory(args.child_memory, args.batches, args.batch)))
    return
  result: dict = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}}
  commit = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
  ).stdout.strip()
  result["commit"] = commit
  if "memory" in args.parts:
    result["memory"] = []
    for n in (int(s) for s in args.sizes.split(",")):
      root = make_folder(pathlib.Path(args.folders) / f"n{n}", n)
      out = subprocess.run(
        [sys.executable, __file__, "--child-memory", str(root)]
        + ["--batches", str(args.batches), "--batch", str(args.batch)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
      ).stdout
      row = json.loads(out.strip().splitlines()[-1])
      row["in_memory_would_need_mb"] = round(n * 224 * 224 * 3 / 2**20)
      result["memory"].append(row)
      print(json.dumps(row), flush=True)
  if "train" in args.parts:
    result["train"] = []
    sizes = [int(s) for s in args.sizes.split(",")]
    for n, stream in [(n, True) for n in sizes] + [(sizes[0], False)]:
      root = make_folder(pathlib.Path(args.folders) / f"n{n}", n)
      row = train_run(root, args.train_steps, stream, pathlib.Path(args.folders) / "run")
      result["train"].append(row)
      print(json.dumps(row), flush=True)
  if "speed" in args.parts:
    result["speed"] = speed(args.cifar, args.old_commit, args.speed_batches, args.speed_batch)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()
