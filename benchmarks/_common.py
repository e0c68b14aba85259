"""Shared helpers for the benchmarks (not part of the test suite).

Timings on a shared machine are noisy, so every benchmark times the compared
variants *interleaved*: each repetition runs every variant once (in a rotating
order), and ratios are taken within a repetition, then the median over
repetitions is reported.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))


def block(x):
  return jax.block_until_ready(x)


def time_call(fn: Callable[[], object]) -> float:
  """Seconds for one call of ``fn`` (results blocked on)."""
  t0 = time.perf_counter()
  block(fn())
  return time.perf_counter() - t0


def time_calls(fn: Callable[[], object], calls: int) -> float:
  """Seconds per call of ``fn``, over ``calls`` back-to-back calls (last result blocked on)."""
  t0 = time.perf_counter()
  out = None
  for _ in range(calls):
    out = fn()
  block(out)
  return (time.perf_counter() - t0) / calls


def paired_timings(
  fns: Mapping[str, Callable[[], object]],
  reps: int,
  warmup: int = 1,
  progress: str | None = None,
  min_rep_s: float = 0.0,
) -> dict[str, list[float]]:
  """Runs every fn once per repetition, in a rotating order.

  With ``min_rep_s > 0`` a repetition of each fn is ``k`` back-to-back calls,
  ``k`` chosen from the warm-up (the same for every fn) so that the slowest
  fn's repetition lasts at least ``min_rep_s``: short steps are then timed
  over many calls instead of one (less timer and scheduler noise).

  Returns the per-repetition seconds *per call* for every name (aligned
  lists, so ``times[a][i] / times[b][i]`` is a paired ratio).
  """
  names = list(fns)
  single = {n: 0.0 for n in names}
  for _ in range(warmup):
    for n in names:
      single[n] = time_call(fns[n])
  calls = 1
  if min_rep_s > 0:
    calls = max(1, int(min_rep_s / max(min(single.values()), 1e-6) + 0.999))
  times = {n: [] for n in names}
  for r in range(reps):
    order = names[r % len(names) :] + names[: r % len(names)]
    for n in order:
      times[n].append(time_calls(fns[n], calls))
    if progress:
      print(
        f"  {progress} rep {r + 1}/{reps}: "
        + ", ".join(f"{n}={times[n][-1] * 1e3:.1f}ms" for n in names),
        flush=True,
      )
  return times


def median(xs):
  return statistics.median(xs)


def paired_ratio(times: Mapping[str, list[float]], num: str, den: str) -> float:
  """Median over repetitions of times[num][i] / times[den][i]."""
  return statistics.median(a / b for a, b in zip(times[num], times[den]))


def machine_info() -> dict:
  return {
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "cpu_count": os.cpu_count(),
    "platform": platform.platform(),
    "processor": platform.processor(),
    "python": platform.python_version(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
  }


def write_json(path: str, payload: dict) -> None:
  p = pathlib.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_text(json.dumps(payload, indent=1, default=str) + "\n")
  print(f"wrote {p}")


def print_table(header: list[str], rows: list[list]) -> None:
  cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  for i, r in enumerate(cells):
    print(" | ".join(c.rjust(w) for c, w in zip(r, widths)))
    if i == 0:
      print("-+-".join("-" * w for w in widths))
  sys.stdout.flush()


def _fmt(c):
  if isinstance(c, float):
    if c != c:
      return "nan"
    return f"{c:.3f}" if abs(c) < 100 else f"{c:.1f}"
  return str(c)
