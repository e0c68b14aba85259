"""Every config field of the training program, declared once: the schema behind the configs.

Each field is one line of a pydantic model below: its name, type, default,
help text, allowed values (a ``Literal``) or range (``gt``/``ge``/``lt``/``le``,
``allow_inf_nan=False`` for "finite"), and two marks of our own —
``resume=True`` when a resumed run may change it, ``norm_option=NAME`` when it
is passed to ``mbn_jax.make_norm`` as the option NAME. Everything else reads
this declaration:

* :func:`default_config` — ``configs/default.py``'s ``get_config()``: the
  ``ml_collections.ConfigDict`` every experiment config starts from, so
  ``--config.FIELD=VALUE`` overrides keep their types (a ``None`` default is a
  typed placeholder);
* :func:`fields` — the flat list (dotted names, groups, types, defaults, help,
  marks) that ``--help``, the completeness check, the resume guard and the
  norm-option mapping read;
* :func:`check` — types and ranges of a whole config, one pydantic validation
  (strict: an int field takes no bool or float), reported as one sentence
  naming the field, its range and the value.

Why pydantic: it is the well-kept library that does what this needs from
one declaration — strict types, numeric bounds and enumerations checked
together with structured errors, nested groups, and a JSON schema for
free — while ml_collections stays what users edit and override (its
configs, ``--config.FIELD`` flags and ``--print_config`` are unchanged).
Checks that need more than one field or the machine (the device split, a
norm's own ``check_fields``, the dataset's splits and folders) stay in
:mod:`train.validation`, :mod:`train.checks` and the input pipeline.

Adding a field: one line in its group below, then use it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, ClassVar, Literal

import annotated_types
import ml_collections
import pydantic
from ml_collections import config_dict

__all__ = [
  "SECTIONS",
  "FieldSpec",
  "RunConfig",
  "check",
  "default_config",
  "field",
  "fields",
  "norm_option_fields",
  "requirement",
  "resume_may_change",
]

PositiveInt = typing.Annotated[int, annotated_types.Gt(0)]
SEED_MAX = 2**32 - 1  # JAX's PRNG keys take 32 bits of a seed: larger ones collide


def field(
  default: Any,
  help: str,
  *,
  resume: bool = False,
  norm_option: str | None = None,
  derived_when_zero: bool = False,
  hint: str = "",
  must: str = "",
  **constraints: Any,
) -> Any:
  """One field: ``default``, its ``help`` text and range ``constraints`` (pydantic's ``Field``).

  ``resume``: a resumed run may change it. ``norm_option``: the
  ``make_norm`` option it sets (``derived_when_zero``: 0 means the program
  derives the option's value). ``hint``: appended to a range error; ``must``:
  the requirement in words where the type does not say it (a union).
  """
  extra = {
    "resume": resume,
    "norm_option": norm_option,
    "derived_when_zero": derived_when_zero,
    "hint": hint,
    "must": must,
  }
  return pydantic.Field(default, description=help, json_schema_extra=extra, **constraints)


class Section(pydantic.BaseModel):
  """A group of fields (its ``heading`` opens it in ``--help``)."""

  model_config = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)
  heading: ClassVar[str]


class General(Section):
  heading = ""
  seed: int = field(0, "Parameter initialization, data order and augmentation.", ge=0, le=SEED_MAX)


class ModelAndNormalization(Section):
  heading = "Model and normalization"
  model: str = field("resnet18", "mbn_jax.models names, or train/models.py tiny ones.")
  input_variant: Literal["cifar", "mini_imagenet"] = field(
    "cifar", "'cifar' (3x3 stem) or 'mini_imagenet'."
  )
  norm: str = field("mbn", "bn, mbn, brn, gn, ln, in, mabn, frozen_bn, none.")
  norms: str = field(
    "",
    "Comma-separated norms, e.g. 'bn,mbn': trains one run per norm into WORKDIR/<norm> and "
    "prints their accuracies side by side. '' = just `norm`.",
    resume=True,
  )
  norm_sync_devices: PositiveInt | Literal[-1] = field(
    1,
    "G: how many devices share one set of batch statistics (their statistics batch is m·G, "
    "and λ, τ use m·G). 1: per device (the paper); -1: all devices (SyncBN); any divisor of "
    "the device count: groups of G consecutive devices.",
    must="must be a positive int (1: per device) or -1 (all devices)",
  )
  sync_batch_stats: bool | None = field(
    None,
    "Replaced by norm_sync_devices; still read (True: norm_sync_devices=-1, with a note).",
  )
  required_devices: int = field(
    0,
    "> 0: refuse to start unless JAX sees exactly this many devices (an experiment whose "
    "meaning depends on the device count; on CPU set "
    "XLA_FLAGS=--xla_force_host_platform_device_count=N). 0: any count.",
    resume=True,
    ge=0,
  )
  dtype: Literal["float32", "bfloat16", "float16"] = field(
    "float32", "Computation dtype of the model: float32, bfloat16 or float16."
  )
  conv: Literal["auto", "xla", "fast"] = field(
    "auto",
    "Convolutions: 'auto' = train.cpu_conv on CPU (faster there, same gradients to rounding; "
    "docs/performance.md), XLA's on GPU/TPU; 'xla'; 'fast' (any backend).",
    resume=True,
  )


class FineTuning(Section):
  heading = "Fine-tuning (docs/training.md): start from a finished run's network"
  init_from: str = field("", "The finished run's workdir; '' = from scratch.")
  init_from_reset_head: bool = field(
    False, "Re-initialize the classifier head even when the number of classes matches the source's."
  )


class NormOptions(Section):
  heading = "Norm options (one dict for every norm; each ignores what it doesn't use)"
  mbn_total_epochs: int = field(180, "T of Eq. 11.", norm_option="total_epochs", gt=0)
  ideal_batch_size: int = field(32, "m0 of Eqs. 11-12.", norm_option="ideal_batch_size", gt=0)
  tau0: float = field(0.85, "τ0 of Eq. 12.", norm_option="tau0", gt=0, lt=1)
  mbn_lambda_ramp: bool = field(
    True,
    "MBN's λ: True = Eq. 11's ramp from 0; False = 1 - m/m0 from the first step (fine-tuning).",
  )
  bn_momentum: float = field(
    0.9,
    "BN / BRN running-average momentum (weight on the old value).",
    norm_option="bn_momentum",
    ge=0,
    le=1,
    hint="the weight on the OLD running value, Flax convention; PyTorch's momentum=0.1 is 0.9 here",
  )
  r_max: float = field(
    1.5,
    "Batch Renorm (paper's Mini-ImageNet best: r_max 1.5, d_max 0.5).",
    norm_option="r_max",
    ge=1,
  )
  d_max: float = field(
    0.5,
    "Batch Renorm: the bound of its mean correction d.",
    norm_option="d_max",
    ge=0,
  )
  brn_warmup_steps: int = field(
    0,
    "Batch Renorm: ramp (1, 0) -> (r_max, d_max) over k steps; 0: none.",
    norm_option="warmup_steps",
    ge=0,
  )
  mabn_buffer_size: int = field(
    0,
    "MABN: K iterations averaged; 0: m0/m (ideal_batch_size / per-device batch, at least 1).",
    norm_option="buffer_size",
    derived_when_zero=True,
    ge=0,
  )
  mabn_momentum: float = field(
    0.98,
    "MABN: running_var momentum (weight on the old value).",
    norm_option="mabn_momentum",
    ge=0,
    lt=1,
  )
  mabn_warmup_iters: int = field(
    100,
    "MABN: iterations that normalize with the current statistics.",
    norm_option="warmup_iters",
    ge=0,
  )
  mabn_r_clip: float = field(
    5.0,
    "MABN: r is clipped to [1/r_clip, r_clip].",
    norm_option="r_clip",
    ge=1,
  )
  mabn_r_clip_start: int = field(
    1000,
    "MABN: r is 1 for max(this, warm-up) iterations.",
    norm_option="r_clip_start",
    ge=0,
  )
  frozen_bn_train_affine: bool = field(
    False, "FrozenBN: train gamma/beta (True) or freeze them.", norm_option="train_affine"
  )
  centered_weights: bool = field(
    False, "Centre every conv kernel per output channel (MABN's CenConv2d); any norm."
  )


class BatchAndOptimizer(Section):
  heading = "Batch and optimizer"
  per_device_batch_size: int = field(2, "The paper's m.", gt=0)
  global_batch_size: PositiveInt | Literal[-1] = field(
    -1,
    "> 0: derive m = global / devices (must divide); -1: per_device_batch_size.",
    must="must be a positive int (or -1: per_device_batch_size)",
  )
  eval_per_device_batch_size: int = field(
    100, "Images per device per evaluation batch.", resume=True, gt=0
  )
  num_epochs: int = field(200, "Training epochs (may grow on resume).", resume=True, gt=0)
  base_learning_rate: float = field(
    0.1,
    "lr = base_learning_rate x batch / lr_reference_batch_size.",
    gt=0,
    allow_inf_nan=False,
    hint="the paper's is 0.1 for a batch of 64",
  )
  lr_reference_batch_size: int = field(64, "The 64 of the paper's 0.1 * m/64.", gt=0)
  lr_batch_size: Literal["per_device", "global"] = field(
    "per_device", "'per_device' (paper's m) or 'global'."
  )
  lr_decay_epochs: int = field(
    60, "Multiply the lr by lr_decay_factor every this many epochs.", gt=0
  )
  lr_decay_factor: float = field(
    0.1,
    "The staircase decay's factor.",
    gt=0,
    le=1,
    hint="0.1 in the paper, 1: no decay",
  )
  momentum: float = field(0.9, "SGD momentum.", ge=0, lt=1, hint="SGD's momentum")
  nesterov: bool = field(False, "True: Nesterov momentum.")
  weight_decay: float = field(
    1e-4,
    "Added to the gradient of every parameter (PyTorch SGD's).",
    ge=0,
    allow_inf_nan=False,
    hint="0: none; the paper's 1e-4",
  )
  grad_accum_steps: int = field(
    1,
    "Gradient accumulation. k > 1: every optimizer update averages the gradients of k "
    "micro-batches of per_device_batch_size images per device (optax.MultiSteps, one jitted "
    "call per micro-batch). The norms' statistics batch stays the micro-batch (λ and τ use its "
    "m); the learning rate scales with the optimizer batch m·k; λ(t), the learning-rate "
    'schedule and steps_per_epoch count optimizer steps. docs/training.md "Gradient '
    'accumulation".',
    gt=0,
    hint="1: no accumulation",
  )
  grad_accum_stats: Literal["sequential", "deferred"] = field(
    "sequential",
    "'sequential' (every micro-batch updates every statistic, in order) or 'deferred' (bn and "
    "mbn: the inference statistics move once per optimizer step with the pooled moments of the "
    "k micro-batches, τ for m·k; torchgpipe's DeferredBatchNorm).",
  )


class Dataset(Section):
  heading = "Data"
  source: Literal["tfds", "image_folder", "digits"] = field(
    "tfds", "'tfds', 'image_folder' or 'digits'."
  )
  name: str = field("cifar10", "TFDS name (source='tfds').")
  data_dir: str | None = field(None, "TFDS data_dir; None: TFDS's default.", resume=True)
  download: bool = field(True, "TFDS may try to download when not prepared.", resume=True)
  check_download_host: bool = field(
    True,
    "Before a TFDS download, check that its host answers and fail at once if not (TFDS itself "
    "retries for minutes offline). Off only for mocked TFDS (tests).",
    resume=True,
  )
  root: str | None = field(None, "image_folder root.", resume=True)
  train_split: str = field(
    "train",
    "Split to train on (TFDS slicing such as train[:90%]; an image folder's slices are taken "
    "class by class in turn).",
  )
  eval_split: str = field("test", "Split to evaluate on (unless holdout_per_class > 0).")
  holdout_per_class: int = field(0, "> 0: eval = last k per class of train_split.", ge=0)
  image_size: PositiveInt | None = field(None, "Resize to s x s; None: as stored.")
  augment: Literal["crop_flip", "flip", "none"] = field(
    "crop_flip", "'crop_flip', 'flip' or 'none'."
  )
  crop_padding: int = field(
    4,
    "Pixels of padding before the random crop.",
    ge=0,
    hint="pixels of padding before the random crop; 0: no crop",
  )
  mean: tuple[float, ...] | None = field(None, "Per-channel mean; None: from the train set.")
  std: tuple[float, ...] | None = field(None, "Per-channel std; None: from the train set.")
  max_train_examples: PositiveInt | None = field(
    None,
    "Train on the first k training images only (image folders: taken class by class in turn, "
    "so every class is in them); None: all.",
  )
  cache_dir: str | None = field(
    None,
    "A directory for the decoded images (.npy) of in-memory splits, reused across runs "
    "(streamed splits are not cached); None: no cache.",
    resume=True,
  )
  train_per_class: PositiveInt | None = field(
    None,
    "> 0: train on the first k images of every class only (a class-balanced subset; applied "
    "after holdout_per_class, before max_train_examples).",
  )
  max_eval_examples: PositiveInt | None = field(
    None,
    "Evaluate on the first k evaluation images only (image folders: taken class by class in "
    "turn, so every class is in them); None: all.",
  )
  classes: str = field(
    "",
    "Image folders: train and evaluate on these class folders only, comma-separated, labelled "
    "0, 1, ... in this order ('airplane,automobile'); '': every class, sorted.",
  )
  max_in_memory_gb: float = field(
    4.0,
    "Splits (image folders and TFDS) whose decoded pixels fit in this many GB are decoded once "
    "into memory; larger ones are decoded from their files as batches are read. Changes "
    "neither batches nor normalization (may change on resume).",
    resume=True,
    ge=0,
    allow_inf_nan=False,
  )


class PreciseStatistics(Section):
  heading = 'Population ("precise") inference statistics (mbn_jax.precise_batch_stats)'
  precise_stats_batches: int = field(
    0,
    "K > 0: after the last epoch (and at every evaluation if precise_stats_every_eval) "
    "re-estimate every BN/MBN/BReN layer's mean/var from K training batches (with the training "
    "augmentation) of precise_stats_batch_size images per device, evaluate with them, and "
    "record eval_accuracy_precise beside eval_accuracy. 0: off (the paper's protocol). The "
    "checkpoint keeps both the moving and the precise statistics.",
    resume=True,
    ge=0,
    hint="0: off",
  )
  precise_stats_batch_size: int = field(
    256, "Images per device per precise-statistics batch.", resume=True, gt=0
  )
  precise_stats_every_eval: bool = field(
    False, "True: precise statistics at every evaluation too.", resume=True
  )


class Divergence(Section):
  heading = "Divergence"
  max_nonfinite_steps: int = field(
    20,
    "A step that would leave anything non-finite (its data, loss or gradient, or the updated "
    "parameters or optimizer state) is skipped (nothing but the step counter changes) and "
    "counted (nonfinite_steps in metrics.jsonl); exactly this many consecutive skips stop the "
    'run: status "diverged", exit status 3.',
    resume=True,
    gt=0,
  )


class Logging(Section):
  heading = "Logging, evaluation, checkpoints"
  log_every_steps: int = field(
    50, "Progress-bar refresh (loss, accuracy, images/s) every k steps.", resume=True, gt=0
  )
  eval_every_epochs: int = field(
    1, "Evaluate every k epochs (and after the last).", resume=True, gt=0
  )
  checkpoint_every_epochs: int = field(
    1, "Checkpoint every k epochs (and at the end or a stop).", resume=True, gt=0
  )
  keep_checkpoints: int = field(2, "Newest checkpoints kept on disk.", resume=True, gt=0)
  progress_bar: bool = field(True, "False: one JSON line per epoch instead of a bar.", resume=True)
  tensorboard: bool = field(True, "Write TensorBoard events into WORKDIR/tensorboard.", resume=True)
  simulate_preemption_at_step: int = field(
    -1,
    "> 0: the run sends itself SIGTERM after this global step (tests of the preemption path: "
    "checkpoint, stop, resume). 0 or -1: never.",
    resume=True,
    ge=-1,
  )


class Devices(Section):
  heading = "Devices"
  parallelism: Literal["pmap", "mesh"] = field(
    "pmap",
    "'pmap' (jax.pmap over every device; the default) or 'mesh' (jax.jit over jax.shard_map on "
    "a Mesh ('data', 'stats') of every device): the same run.",
    resume=True,
  )


class Distributed(Section):
  heading = "Multi-host (flags --coordinator_address/--num_processes/--process_id win)"
  coordinator_address: str = field("", "host:port of process 0.", resume=True)
  num_processes: int = field(1, "Processes (hosts) in the run.", resume=True, gt=0)
  process_id: int = field(0, "This process's index in [0, num_processes).", resume=True, ge=0)


# The config's layout: its sections in order; a named one is a sub-config (config.dataset).
SECTIONS: tuple[tuple[str | None, type[Section]], ...] = (
  (None, General),
  (None, ModelAndNormalization),
  (None, FineTuning),
  (None, NormOptions),
  (None, BatchAndOptimizer),
  ("dataset", Dataset),
  (None, PreciseStatistics),
  (None, Divergence),
  (None, Logging),
  (None, Devices),
  ("distributed", Distributed),
)


def _run_config_model() -> type[pydantic.BaseModel]:
  """The whole config as one model: the flat sections' fields, then the sub-configs."""
  definitions: dict[str, Any] = {}
  for name, section in SECTIONS:
    if name is None:
      for key, info in section.model_fields.items():
        definitions[key] = (info.annotation, info)
    else:
      definitions[name] = (section, pydantic.Field(default_factory=section))
  return pydantic.create_model("RunConfig", __base__=Section, **definitions)


RunConfig = _run_config_model()


# ----------------------------------------------------------------------------
# The flat view every reader uses.


@dataclasses.dataclass(frozen=True)
class FieldSpec:
  """One leaf field: ``name`` is dotted (``dataset.root``)."""

  name: str
  group: str  # its section's heading ('' for the first)
  default: Any
  annotation: Any
  help: str
  resume: bool  # a resumed run may change it
  norm_option: str | None  # the make_norm option it sets
  derived_when_zero: bool  # norm_option: 0 means "derived by the program"
  hint: str
  must: str  # the requirement in words, where the type does not say it
  bounds: tuple  # annotated_types Gt/Ge/Lt/Le/... of the field
  finite: bool  # NaN and ±inf refused

  @property
  def type_name(self) -> str:
    return _type_name(self.annotation)


def _bounds_of(info, annotation) -> tuple[tuple, bool]:
  metadata = list(info.metadata)
  for arg in typing.get_args(annotation):  # Annotated[int, Gt(0)] | None
    metadata += list(getattr(arg, "__metadata__", ()))
  kinds = annotated_types.Gt | annotated_types.Ge | annotated_types.Lt | annotated_types.Le
  bounds = tuple(m for m in metadata if isinstance(m, kinds))
  finite = any(getattr(m, "allow_inf_nan", True) is False for m in metadata)
  return bounds, finite


def _spec(prefix: str, group: str, key: str, info) -> FieldSpec:
  extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
  bounds, finite = _bounds_of(info, info.annotation)
  return FieldSpec(
    name=prefix + key,
    group=group,
    default=info.default,
    annotation=info.annotation,
    help=info.description or "",
    resume=bool(extra.get("resume")),
    norm_option=typing.cast(str | None, extra.get("norm_option")),
    derived_when_zero=bool(extra.get("derived_when_zero")),
    hint=str(extra.get("hint") or ""),
    must=str(extra.get("must") or ""),
    bounds=bounds,
    finite=finite,
  )


@functools.cache
def fields() -> tuple[FieldSpec, ...]:
  """Every leaf field, in declaration order (built once: the schema does not change)."""
  out = []
  for name, section in SECTIONS:
    prefix = f"{name}." if name else ""
    for key, info in section.model_fields.items():
      out.append(_spec(prefix, section.heading, key, info))
  return tuple(out)


def norm_option_fields() -> dict[str, FieldSpec]:
  """``make_norm`` option → the field that sets it."""
  return {f.norm_option: f for f in fields() if f.norm_option}


def resume_may_change() -> tuple[str, ...]:
  """The dotted names of the fields a resumed run may change."""
  return tuple(f.name for f in fields() if f.resume)


def choices(name: str) -> tuple:
  """The allowed values of a ``Literal`` field (``'conv'``, ``'dataset.source'``)."""
  spec = next(f for f in fields() if f.name == name)
  return _literal_values(spec.annotation)


# ----------------------------------------------------------------------------
# Types.


def _members(annotation) -> list:
  """The members of a union (``int | None`` → [int, NoneType]); else [annotation]."""
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    return list(typing.get_args(annotation))
  return [annotation]


def _strip(annotation):
  """``Annotated[int, ...]`` → int."""
  return typing.get_args(annotation)[0] if hasattr(annotation, "__metadata__") else annotation


def _literal_values(annotation) -> tuple:
  for member in _members(annotation):
    if typing.get_origin(member) is Literal:
      return typing.get_args(member)
  return ()


def _base_type(annotation) -> type:
  """The Python type ml_collections holds for the field (``Literal[...]`` → str)."""
  member = next(_strip(m) for m in _members(annotation) if m is not type(None))
  if typing.get_origin(member) is Literal:
    return type(typing.get_args(member)[0])
  return typing.get_origin(member) or member


def _type_name(annotation) -> str:
  optional = type(None) in _members(annotation)
  return _base_type(annotation).__name__ + (" | None" if optional else "")


# ----------------------------------------------------------------------------
# The ConfigDict.


def default_config() -> ml_collections.ConfigDict:
  """The defaults as the ``ml_collections.ConfigDict`` every experiment config starts from."""
  config = ml_collections.ConfigDict()
  for name, section in SECTIONS:
    target: Any = config
    if name is not None:
      config[name] = ml_collections.ConfigDict()
      target = config[name]
    for key, info in section.model_fields.items():
      if info.default is None:
        target[key] = config_dict.placeholder(_base_type(info.annotation))
      else:
        target[key] = info.default
  return config


# ----------------------------------------------------------------------------
# Checking a config.


def _number(value: Any) -> str:
  return str(int(value)) if float(value).is_integer() else str(value)


def requirement(spec: FieldSpec) -> str:
  """What a value of ``spec`` must be, as the end of a sentence ('must lie in (0, 1]')."""
  if spec.must:
    return spec.must
  values = _literal_values(spec.annotation)
  optional = type(None) in _members(spec.annotation)
  if values:
    return "must be one of " + ", ".join(repr(v) for v in values)
  base = _base_type(spec.annotation)
  if base is bool:
    return "must be true or false" + (" (or None)" if optional else "")
  if base is str:
    return "must be a string" + (" (or None)" if optional else "")
  if base is tuple:
    return "must be a tuple of numbers" + (" (or None)" if optional else "")
  lo = hi = None
  for b in spec.bounds:
    if isinstance(b, annotated_types.Gt):
      lo = ("(", b.gt)
    elif isinstance(b, annotated_types.Ge):
      lo = ("[", b.ge)
    elif isinstance(b, annotated_types.Lt):
      hi = (")", b.lt)
    elif isinstance(b, annotated_types.Le):
      hi = ("]", b.le)
  none = " (or None)" if optional else ""
  if base is int:
    if lo and hi:
      return f"must be an int in {lo[0]}{_number(lo[1])}, {_number(hi[1])}{hi[0]}{none}"
    if lo == ("(", 0):
      return f"must be a positive int{none}"
    if lo:
      return f"must be an int {'>=' if lo[0] == '[' else '>'} {_number(lo[1])}{none}"
    return f"must be an int{none}"
  kind = "a finite number" if spec.finite else "a number"
  if lo and hi:
    return f"must lie in {lo[0]}{_number(lo[1])}, {_number(hi[1])}{hi[0]}{none}"
  if lo:
    return f"must be {kind} {'>=' if lo[0] == '[' else '>'} {_number(lo[1])}{none}"
  if hi:
    return f"must be {kind} {'<=' if hi[0] == ']' else '<'} {_number(hi[1])}{none}"
  return f"must be {kind}{none}"


def check(config: ml_collections.ConfigDict | dict) -> None:
  """Raises a ValueError naming the first field (in declaration order) outside its type or range.

  One pydantic validation of the whole config; a field the schema does not
  declare is refused with the closest declared name.
  """
  data = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  try:
    RunConfig.model_validate(data)
  except pydantic.ValidationError as e:
    raise ValueError(_message(e.errors()[0], data)) from None


def _message(error: Any, data: dict) -> str:
  loc = [str(part) for part in error["loc"]]
  names = {f.name for f in fields()}
  # A union's error has its member in the location (norm_sync_devices.literal[-1]): cut it off.
  name = next(
    (".".join(loc[:i]) for i in range(len(loc), 0, -1) if ".".join(loc[:i]) in names), ".".join(loc)
  )
  if error["type"] == "extra_forbidden":
    import difflib

    close = difflib.get_close_matches(name, [f.name for f in fields()], n=1, cutoff=0.6)
    tip = f"; did you mean config.{close[0]}?" if close else ""
    return (
      f"config.{name} is not a field of the training program{tip} (`python -m train --help` "
      "lists every field; configs start from configs.default.get_config())."
    )
  spec = next((f for f in fields() if f.name == name), None)
  if spec is None:  # a sub-config given as something else
    return f"config.{name}: {error['msg']}."
  value = _get(data, name)
  hint = f" ({spec.hint})" if spec.hint else ""
  shown = repr(value)
  if isinstance(value, float) and math.isnan(value):
    shown = "nan"
  return f"config.{name} {requirement(spec)}{hint}, got {shown}."


def _get(data: dict, dotted: str) -> Any:
  for part in dotted.split("."):
    data = data[part]
  return data
