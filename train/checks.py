"""Checks of the config that the schema cannot make alone, and of a workdir's own files.

Run by ``validate_config`` before anything is read or compiled, so that a bad
value is one ``error:`` line (exit status 2) naming the field and what to
change (every field's type and range is :mod:`train.config_schema`'s):

* :func:`check_norm_options` — the norm options each norm of the run takes
  (``r_max``, ``d_max``, ``brn_warmup_steps``, ``tau0``, ...), checked by the
  norm class itself (its ``check_fields``, through ``make_norm``) and
  reported under the config field's name (the schema's ``norm_option`` marks);
* :func:`check_workdir_files` — what an existing workdir holds where the
  program will write: ``checkpoints`` must be a directory, ``config.json``
  a run record and ``metrics.jsonl`` one JSON record per line.

And once the data is read, before anything is compiled or trained:
:func:`check_precise_stats_batch` (the precise-statistics batch must fit in
the training set, which otherwise fails only after the first epoch).
"""

from __future__ import annotations

import json
import os

from mbn_jax import norms as mbn_norms
from train import config_schema, input_pipeline, models
from train.writer import read_metrics

__all__ = [
  "check_norm_options",
  "check_precise_stats_batch",
  "check_workdir_files",
]


def check_norm_options(config, norm_names) -> None:
  """Builds every norm of the run with the config's norm options; a refusal names the field."""
  fields = {option: spec.name for option, spec in config_schema.norm_option_fields().items()}
  options = {o: v for o, v in models.norm_options_of(config).items() if v is not None}
  for name in dict.fromkeys(norm_names):
    try:
      mbn_norms.make_norm(name, **options)
    except (ValueError, TypeError) as e:
      text = str(e)
      option = next((o for o in fields if text.startswith(o + " ")), None)
      aliases = mbn_norms.option_aliases(mbn_norms.norm_class(name))
      option = option or next((a for a, f in aliases.items() if text.startswith(f + " ")), None)
      if option is None:
        raise
      field = fields[option]
      raise ValueError(
        f"config.{field}={config[field]!r} is refused by norm {name!r}: {text} Set "
        f"--config.{field} accordingly."
      ) from None


def _check_record(path: str) -> None:
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    reason = getattr(e, "msg", None) or getattr(e, "strerror", None) or type(e).__name__
    raise ValueError(
      f"{path!r} is not a run record ({reason}): restore it, or delete it (the checkpoints "
      "keep their own copy of the config), or use a new --workdir."
    ) from None
  if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
    raise ValueError(
      f"{path!r} is not a run record (a JSON object with a 'config'): restore it, or delete it "
      "(the checkpoints keep their own copy of the config), or use a new --workdir."
    )


def check_workdir_files(workdir: str) -> None:
  """Refuses a workdir whose own files are not what the program writes there.

  ``checkpoints`` (and ``checkpoints_damaged``, ``tensorboard``) must be
  directories, ``config.json`` a run record (a JSON object with a
  ``config``), ``metrics.jsonl`` one JSON record per line
  (:func:`train.writer.read_metrics`; a torn last line is left out).
  """
  path = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(path):
    return
  for name in ("checkpoints", "checkpoints_damaged", "tensorboard"):
    entry = os.path.join(path, name)
    if os.path.lexists(entry) and not os.path.isdir(entry):
      raise NotADirectoryError(
        f"--workdir={workdir!r}: {entry!r} is not a directory, but the program keeps its "
        f"{name} there: move it away (or use a new --workdir)."
      )
  for name in ("config.json", "metrics.jsonl", "summary.json"):
    entry = os.path.join(path, name)
    if os.path.lexists(entry) and not os.path.isfile(entry):
      raise IsADirectoryError(
        f"--workdir={workdir!r}: {entry!r} is not a regular file, but the program writes its "
        f"{name} there: move it away (or use a new --workdir)."
      )
  if os.path.exists(os.path.join(path, "config.json")):
    _check_record(os.path.join(path, "config.json"))
  if os.path.exists(os.path.join(path, "metrics.jsonl")):
    read_metrics(os.path.join(path, "metrics.jsonl"))


def check_precise_stats_batch(config, data, layout) -> None:
  """A DataConfigError when the precise-statistics batch exceeds the training set.

  Only where precise statistics will be estimated (``precise_stats_batches`` >
  0 and a norm whose capabilities say ``precise_statistics``); its global batch is
  ``precise_stats_batch_size`` per device × every device.
  """
  if not config.precise_stats_batches:
    return
  if not mbn_norms.capabilities_of(mbn_norms.norm_class(config.norm)).precise_statistics:
    return
  m = config.precise_stats_batch_size
  input_pipeline.check_batch_fits(
    data,
    m * layout.devices,
    f"The precise-statistics batch (config.precise_stats_batch_size={m} per device × "
    f"{layout.devices} devices)",
  )
