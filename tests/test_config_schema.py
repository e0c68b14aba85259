"""train/config_schema.py: every config field declared once, and everything reading it agrees.

Independent expectations: the ranges written out by hand below (from the
fields' meanings: a seed is 32 bits, SGD's momentum lies in [0, 1), ...), the
library's own checks (``make_norm`` → each norm's ``check_fields``) for the
norm options, the experiment configs of configs/, and the source of train/.
"""

from __future__ import annotations

import ast
import importlib
import math
import pathlib

import ml_collections
import pytest

from mbn_jax import norms as mbn_norms
from train import checks, config_schema, models, validation

REPO = pathlib.Path(__file__).resolve().parents[1]


def _with(name: str, value) -> dict:
  data = config_schema.default_config().to_dict()
  node = data
  *parents, leaf = name.split(".")
  for part in parents:
    node = node[part]
  node[leaf] = value
  return data


def _accepted(name: str, value) -> bool:
  try:
    config_schema.check(_with(name, value))
  except ValueError as e:
    assert f"config.{name} " in str(e), str(e)  # the message names the field
    return False
  return True


# Hand-written: (field, accepted values, refused values).
RANGES = [
  ("seed", [0, 1, 2**32 - 1], [-1, 2**32, True, 1.0]),
  ("per_device_batch_size", [1, 2, 256], [0, -2, 2.0, False]),
  ("global_batch_size", [-1, 8], [0, -2]),
  ("norm_sync_devices", [1, 2, -1], [0, -2]),
  ("momentum", [0.0, 0.9, 0], [1.0, -0.1, math.nan]),
  ("lr_decay_factor", [0.1, 1.0, 1], [0.0, 1.5, -1.0, math.nan]),
  ("base_learning_rate", [0.1, 1e-6, 3], [0.0, -0.1, math.inf, math.nan]),
  ("weight_decay", [0.0, 1e-4], [-1e-4, math.nan, math.inf]),
  ("tau0", [0.5, 0.85], [0.0, 1.0, math.nan]),
  ("bn_momentum", [0.0, 0.9, 1.0], [-0.1, 1.01, math.nan]),
  ("precise_stats_batches", [0, 10], [-1]),
  ("simulate_preemption_at_step", [-1, 0, 5], [-2]),
  ("conv", ["auto", "xla", "fast"], ["gpu", ""]),
  ("parallelism", ["pmap", "mesh"], ["xmap"]),
  ("dataset.crop_padding", [0, 4], [-2, 1.5]),
  ("dataset.image_size", [None, 32], [0, -1]),
  ("dataset.source", ["tfds", "image_folder", "digits"], ["folder"]),
  ("dataset.mean", [None, (0.5,), (0.4, 0.5, 0)], ["0.5"]),
  ("distributed.num_processes", [1, 4], [0]),
  ("nesterov", [True, False], [1, "yes"]),
]


@pytest.mark.parametrize("name, good, bad", RANGES, ids=[r[0] for r in RANGES])
def test_the_declared_ranges_accept_and_refuse_what_the_field_means(name, good, bad):
  for value in good:
    assert _accepted(name, value), (name, value)
  for value in bad:
    assert not _accepted(name, value), (name, value)


def test_a_range_error_is_one_sentence_with_the_field_its_range_and_the_value():
  with pytest.raises(ValueError) as e:
    config_schema.check(_with("lr_decay_factor", 1.5))
  assert str(e.value) == (
    "config.lr_decay_factor must lie in (0, 1] (0.1 in the paper, 1: no decay), got 1.5."
  )
  with pytest.raises(ValueError, match=r"config.seed must be an int in \[0, 4294967295\], got -1"):
    config_schema.check(_with("seed", -1))
  with pytest.raises(ValueError, match="did you mean config.seed"):
    config_schema.check({**config_schema.default_config().to_dict(), "seeed": 1})


def test_the_default_config_is_the_schema_with_typed_placeholders():
  config = config_schema.default_config()
  config_schema.check(config)
  specs = config_schema.fields()
  assert len(specs) == len({f.name for f in specs}) > 60  # each name once
  for spec in specs:
    *parents, leaf = spec.name.split(".")
    node = config
    for part in parents:
      node = node[part]
    assert node[leaf] == spec.default, spec.name
    assert spec.help, f"{spec.name} has no help text"
  config.dataset.root = "/data"  # None placeholders take their type ...
  config.dataset.image_size = 32
  with pytest.raises(TypeError):  # ... and only their type, as --config.FIELD overrides rely on
    config.dataset.image_size = "big"
  with pytest.raises(TypeError):
    config.seed = "one"


@pytest.mark.parametrize(
  "path", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.py"))
)
def test_every_experiment_config_satisfies_the_schema(path):
  module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
  if not hasattr(module, "get_config"):
    pytest.skip("no get_config")
  config = module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  config_schema.check(config)
  validation.check_complete(config)


def _uses(cls, option: str) -> bool:
  return option in mbn_norms.declared_fields(cls) or option in mbn_norms.option_aliases(cls)


def _library_accepts(norm: str, option: str, value) -> bool:
  try:
    mbn_norms.make_norm(norm, **{option: value})
  except (ValueError, TypeError):
    return False
  return True


FLOAT_PROBES = [-1.0, -1e-9, 0.0, 1e-9, 0.5, 1 - 1e-9, 1.0, 1 + 1e-9, 1.5, 5.0, math.nan, math.inf]
INT_PROBES = [-2, -1, 0, 1, 2, 100]


@pytest.mark.parametrize("option", sorted(config_schema.norm_option_fields()))
def test_the_schema_and_the_norms_own_checks_agree_on_every_norm_option(option):
  """Where the library's check_fields and the schema cover one value (bn_momentum...), they agree."""
  spec = config_schema.norm_option_fields()[option]
  users = [n for n, cls in mbn_norms.NORM_CLASSES.items() if _uses(cls, option)]
  assert users, f"no norm takes {option!r}, which config.{spec.name} sets"
  base = {"int": INT_PROBES, "float": FLOAT_PROBES, "bool": [True, False]}[spec.type_name]
  for value in base:
    if spec.derived_when_zero and value == 0:
      continue  # 0: the program derives the option (models.norm_options_of)
    schema = _accepted(spec.name, value)
    for norm in users:
      assert _library_accepts(norm, option, value) == schema, (spec.name, norm, value, schema)


def test_the_norm_options_of_a_run_come_from_the_schema_marks():
  config = config_schema.default_config()
  config.mabn_buffer_size = 0
  config.ideal_batch_size = 32
  options = models.norm_options_of(config, per_device_batch=2)
  assert options["buffer_size"] == 16  # m0 / m, derived from 0
  assert models.norm_options_of(config)["buffer_size"] is None  # only checking
  assert options["total_epochs"] == config.mbn_total_epochs
  assert options["warmup_steps"] == config.brn_warmup_steps
  assert options["train_affine"] is config.frozen_bn_train_affine
  assert set(options) == set(config_schema.norm_option_fields())
  assert set(options) <= set(mbn_norms.NORM_OPTIONS)  # every one is an option make_norm takes
  config.r_max = 0.5
  with pytest.raises(ValueError, match=r"config.r_max=0.5 is refused by norm 'brn'"):
    checks.check_norm_options(config, ["brn"])


def test_the_resume_guard_reads_the_schema_marks():
  saved = validation.config_json(config_schema.default_config())
  for spec in config_schema.fields():
    if spec.type_name not in ("int", "bool"):
      continue
    config = config_schema.default_config()
    *parents, leaf = spec.name.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = (not spec.default) if spec.type_name == "bool" else spec.default + 7
    if spec.resume:
      validation.check_resume_compatible(saved, config)
    else:
      with pytest.raises(validation.ConfigMismatchError, match=spec.name):
        validation.check_resume_compatible(saved, config)


def test_choices_live_in_the_schema_only():
  assert tuple(models.DTYPES) == config_schema.choices("dtype")
  assert models.CONVS == config_schema.choices("conv")
  from train.parallel import PARALLELISMS

  assert PARALLELISMS == config_schema.choices("parallelism")


def _string_sequences(tree: ast.AST):
  for node in ast.walk(tree):
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
      values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
      if len(values) == len(node.elts) and all(isinstance(v, str) for v in values):
        yield node.lineno, values


def test_no_other_list_of_field_names_in_train():
  """A tuple of config field names outside the schema (the old POSITIVE_INTS, RESUME_MAY_CHANGE,
  a list of fields to range-check) would be a second declaration: none is left in train/.

  Record keys that happen to share a field's name (the layout's saved fields, summary keys)
  are dicts or mixed lists and are not counted.
  """
  names = {f.name for f in config_schema.fields()}
  found = []
  for path in sorted((REPO / "train").glob("*.py")):
    if path.name == "config_schema.py":
      continue
    for line, values in _string_sequences(ast.parse(path.read_text())):
      hits = [v for v in values if v in names]
      if len(hits) >= 3 and len(hits) >= 0.75 * len(values):
        found.append(f"{path.name}:{line}: {hits}")
  assert not found, found
