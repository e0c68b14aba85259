"""Range checks of the config and of a workdir's own files, run by ``validate_config``.

Before anything is read or compiled, so that a bad value is one ``error:``
line (exit status 2) naming the field and what to change:

* :func:`check_numeric_fields` — the optimizer's numbers (learning rate
  finite > 0, weight decay finite >= 0, momentum in [0, 1), decay factor in
  (0, 1]), the seed (an int in [0, 2³² − 1]) and the counts that must be
  positive ints;
* :func:`check_norm_options` — the norm options each norm of the run takes
  (``r_max``, ``d_max``, ``brn_warmup_steps``, ``tau0``, ...), checked by the
  norm class itself (its ``check_fields``, through ``make_norm``) and
  reported under the config field's name;
* :func:`check_workdir_files` — what an existing workdir holds where the
  program will write: ``checkpoints`` must be a directory, ``config.json``
  a run record and ``metrics.jsonl`` one JSON record per line.

And once the data is read, before anything is compiled or trained:
:func:`check_precise_stats_batch` (the precise-statistics batch must fit in
the training set, which otherwise fails only after the first epoch).
"""

from __future__ import annotations

import json
import math
import numbers
import os

from mbn_jax import norms as mbn_norms
from train import input_pipeline
from train.writer import read_metrics

__all__ = [
  "NORM_OPTION_FIELDS",
  "SEED_RANGE",
  "check_norm_options",
  "check_numeric_fields",
  "check_precise_stats_batch",
  "check_workdir_files",
]

SEED_RANGE = (0, 2**32 - 1)  # JAX's PRNG keys take 32 bits of a seed: larger ones collide
POSITIVE_INTS = (
  "num_epochs",
  "lr_decay_epochs",
  "lr_reference_batch_size",
  "log_every_steps",
  "eval_every_epochs",
  "checkpoint_every_epochs",
  "keep_checkpoints",
)
# make_norm option -> the config field that sets it (train.models.build_model's norm options).
NORM_OPTION_FIELDS = {
  "total_epochs": "mbn_total_epochs",
  "ideal_batch_size": "ideal_batch_size",
  "tau0": "tau0",
  "r_max": "r_max",
  "d_max": "d_max",
  "warmup_steps": "brn_warmup_steps",
  "bn_momentum": "bn_momentum",
  "buffer_size": "mabn_buffer_size",
  "mabn_momentum": "mabn_momentum",
  "warmup_iters": "mabn_warmup_iters",
  "r_clip": "mabn_r_clip",
  "r_clip_start": "mabn_r_clip_start",
  "train_affine": "frozen_bn_train_affine",
}
# Options whose config value 0 means "derived from the run" (train.models.build_model).
DERIVED_WHEN_ZERO = ("buffer_size",)


def _real(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_numeric_fields(config) -> None:
  """Raises a ValueError naming the first numeric field outside its range."""
  lr = config.base_learning_rate
  if not _real(lr) or not math.isfinite(lr) or lr <= 0:
    raise ValueError(
      f"config.base_learning_rate must be a finite number > 0, got {lr!r} (the paper's is 0.1 "
      "for a batch of 64: lr = base_learning_rate × batch / lr_reference_batch_size)."
    )
  wd = config.weight_decay
  if not _real(wd) or not math.isfinite(wd) or wd < 0:
    raise ValueError(
      f"config.weight_decay must be a finite number >= 0 (0: none; the paper's 1e-4), got {wd!r}."
    )
  momentum = config.momentum
  if not _real(momentum) or not 0 <= momentum < 1:  # NaN fails too
    raise ValueError(f"config.momentum (SGD) must lie in [0, 1), got {momentum!r}.")
  factor = config.lr_decay_factor
  if not _real(factor) or not 0 < factor <= 1:  # NaN fails too
    raise ValueError(
      f"config.lr_decay_factor must lie in (0, 1] (the learning rate is multiplied by it every "
      f"lr_decay_epochs; 0.1 in the paper, 1: no decay), got {factor!r}."
    )
  seed = config.seed
  lo, hi = SEED_RANGE
  if isinstance(seed, bool) or not isinstance(seed, int) or not lo <= seed <= hi:
    raise ValueError(
      f"config.seed must be an int in [{lo}, {hi}] (it seeds the initialization, the data "
      f"order and the augmentation), got {seed!r}."
    )
  for name in POSITIVE_INTS:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f"config.{name} must be a positive int, got {value!r}.")


def check_norm_options(config, norm_names) -> None:
  """Builds every norm of the run with the config's norm options; a refusal names the field."""
  options = {option: config[field] for option, field in NORM_OPTION_FIELDS.items()}
  for option in DERIVED_WHEN_ZERO:
    if options[option] == 0:
      options[option] = None  # the norm's default stands in for the derived value
  for name in dict.fromkeys(norm_names):
    try:
      mbn_norms.make_norm(name, **options)
    except (ValueError, TypeError) as e:
      text = str(e)
      option = next((o for o in NORM_OPTION_FIELDS if text.startswith(o + " ")), None)
      aliases = mbn_norms.option_aliases(mbn_norms.norm_class(name))
      option = option or next((a for a, f in aliases.items() if text.startswith(f + " ")), None)
      if option is None:
        raise
      field = NORM_OPTION_FIELDS[option]
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
