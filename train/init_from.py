"""Start a run from another run's network: ``--config.init_from=WORKDIR`` (fine-tuning).

The source is a *finished* run of this program (``summary.json`` says
``completed``); its newest checkpoint that verifies (never moved or changed:
the source is read only) gives the parameters and the statistics — the
population ("precise") statistics where the source saved them, else its
device-averaged moving ones. They are carried into the new run's network
with :func:`mbn_jax.convert.convert_norm_variables`, so the norm may differ
(FrozenBN, MBN, MABN, BN from a BN-trained network). The classifier head
(the parameters under ``head``) is re-initialized when the number of classes
differs, or always with ``init_from_reset_head=True``.

Checked before anything is compiled (:func:`check_source`, on shapes only):
a missing source, one that has not finished, one without a checkpoint that
verifies, another model or input variant, or parameters that do not map
(anything but the head) are one ``error:`` line. A fine-tuning run that has
checkpoints of its own resumes from them and never reads the source again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from mbn_jax.convert import ConversionReport, convert_norm_variables
from train import checkpoints as ckpt_lib

__all__ = [
  "HEAD",
  "InitFromError",
  "SourceRun",
  "check_source",
  "initial_variables",
  "load_source",
  "record_of",
]

HEAD = "head"  # the classifier's module name in every model of the program


class InitFromError(ValueError):
  """The source of ``config.init_from`` cannot start this run (one ``error:`` line, exit 2)."""


@dataclasses.dataclass(frozen=True)
class SourceRun:
  """A verified source: where it is, its newest good step, its config and what it carries."""

  workdir: str
  step: int
  config: dict
  statistics: str  # "precise" or "moving"
  variables: Any  # {"params": ..., "batch_stats": ...} as saved (host arrays)

  def record(self, report: ConversionReport, head_reset: bool) -> dict:
    """What summary.json says about the start (the source and what was carried over)."""
    return {
      "workdir": self.workdir,
      "step": self.step,
      "norm": self.config.get("norm"),
      "model": self.config.get("model"),
      "statistics": self.statistics,
      "head_reinitialized": head_reset,
      **report.summary(),
    }


def _fail(config, why: str) -> InitFromError:
  return InitFromError(f"config.init_from={config.init_from!r}: {why}")


def _read_summary(config, path: str) -> dict:
  summary_path = os.path.join(path, "summary.json")
  if not os.path.isdir(path):
    raise _fail(config, "no such directory (point it at a finished run's --workdir).")
  try:
    with open(summary_path) as f:
      summary = json.load(f)
  except FileNotFoundError:
    raise _fail(
      config,
      "it has no summary.json: the run is still going or never finished. Let it finish "
      "(or resume it) first.",
    ) from None
  except (OSError, json.JSONDecodeError) as e:
    raise _fail(config, f"its summary.json cannot be read ({e}).") from None
  if summary.get("status") != "completed":
    raise _fail(
      config,
      f"the run's status is {summary.get('status')!r}, not 'completed': finish it first "
      "(rerun its command to resume it).",
    )
  return summary


def _newest_good(config, path: str):
  manager = ckpt_lib.CheckpointManager(os.path.join(path, "checkpoints"))
  try:
    reasons = []
    for step in sorted(manager.all_steps(), reverse=True):
      found = ckpt_lib._verified(manager, step, None, None)  # read only: nothing moved aside
      if not isinstance(found, str):
        precise = manager.restore_item(step, ckpt_lib.PRECISE_STATS)
        return found, precise
      reasons.append(f"step {step}: {found}")
  finally:
    manager.close()
  raise _fail(
    config,
    "no checkpoint of it verifies ("
    + ("; ".join(reasons) if reasons else "it has none")
    + "): use another source run.",
  )


def load_source(config) -> SourceRun:
  """The verified source run of ``config.init_from`` (read only)."""
  path = os.path.abspath(os.path.expanduser(config.init_from))
  summary = _read_summary(config, path)
  (step, state, meta), precise = _newest_good(config, path)
  source_config = meta.get("config") or summary.get("config") or {}
  for field in ("model", "input_variant"):
    if source_config.get(field) != config[field]:
      raise _fail(
        config,
        f"it trained {field}={source_config.get(field)!r}, this run has "
        f"{field}={config[field]!r}: fine-tune the same architecture.",
      )
  stats = precise if precise is not None else state["batch_stats"]
  variables = {"params": state["params"], "batch_stats": stats}
  return SourceRun(
    path, int(step), source_config, "moving" if precise is None else "precise", variables
  )


def _convert(source: SourceRun, target: dict, reset_head: bool):
  variables = source.variables
  if reset_head:
    variables = {**variables, "params": {k: v for k, v in variables["params"].items() if k != HEAD}}
  return convert_norm_variables(variables, target)


def _unmapped_beyond_head(report: ConversionReport) -> list[str]:
  """Leaves that did not map (other shape, or no counterpart), other than the head's."""
  return [n for n in report.mismatched + report.dropped if not n.startswith(HEAD + "/")]


def check_source(config, model, image_shape: tuple[int, ...], num_classes: int) -> SourceRun:
  """Verifies the source and that its network maps onto ``model`` (shapes only, no compile)."""
  source = load_source(config)
  dummy = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  target = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), dummy)
  report = _convert(source, dict(target), reset_head(config, source, num_classes))[1]
  bad = _unmapped_beyond_head(report)
  kept_params = [n for n in report.kept if n.split("/")[0] != HEAD and _is_param(dict(target), n)]
  if bad or kept_params:
    raise _fail(
      config,
      "its network does not map onto this run's "
      f"{config.model}: {', '.join((bad + kept_params)[:6])}"
      + (" ..." if len(bad + kept_params) > 6 else "")
      + " (fine-tune the same architecture; only the head may differ).",
    )
  return source


def _is_param(target: dict, name: str) -> bool:
  node: Any = target.get("params", {})
  for key in name.split("/"):
    if not isinstance(node, dict) or key not in node:
      return False
    node = node[key]
  return True


def reset_head(config, source: SourceRun, num_classes: int) -> bool:
  """Re-initialize the head: on request, or when the classes differ from the source's."""
  head = source.variables["params"].get(HEAD, {})
  kernel = head.get("kernel")
  differs = kernel is None or int(jnp.shape(kernel)[-1]) != num_classes
  return bool(config.init_from_reset_head) or differs


def initial_variables(config, source: SourceRun, host_params, host_batch_stats, num_classes: int):
  """``(params, batch_stats, record)``: the new run's start from ``source`` (host arrays)."""
  head = reset_head(config, source, num_classes)
  out, report = _convert(source, {"params": host_params, "batch_stats": host_batch_stats}, head)
  return out["params"], out.get("batch_stats", {}), source.record(report, head)


def record_of(workdir: str) -> dict | None:
  """The ``init_from`` record a run saved in its config.json at its start (None: none)."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      return json.load(f).get("init_from")
  except (OSError, json.JSONDecodeError):
    return None
