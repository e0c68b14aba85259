"""The command line of ``python -m train``: config help, flag parsing, one-line errors.

* :func:`config_fields` lists every field of :mod:`train.config_schema` (its
  one declaration) with its section heading, default, type, help text and
  range, so ``--help`` cannot drift from what the program checks.
* :func:`parse_flags` is ``app.run``'s ``flags_parser``: ``--help`` /
  ``--helpfull`` print absl's flag help plus the config fields and exit 0;
  any mistake on the command line (unknown or misspelled field, a value of the
  wrong type, a missing or broken ``--config`` file, a missing ``--workdir``)
  prints one line ``error: ...`` on stderr and exits 2.
* :func:`remove_if_empty` prunes a workdir that a failed start left empty.
* :func:`disk_full_message` finds a full disk (``ENOSPC``) anywhere in an
  exception's chain (Orbax and TensorFlow wrap it) and says which path.

Nothing here imports JAX: a bad command line fails in well under a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import importlib.util
import json
import logging as std_logging
import os
import re
import sys
import textwrap
from typing import Any, NoReturn

import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

__all__ = [
  "BAD_INPUT",
  "ConfigFileError",
  "Field",
  "config_fields",
  "config_help",
  "config_text",
  "disk_full_message",
  "fail",
  "load_config",
  "parse_flags",
  "remove_if_empty",
]

BAD_INPUT = 2  # the exit status of every command-line mistake (train/__main__.py)
USAGE = "python -m train --config configs/<experiment>.py --workdir DIR [--config.FIELD=VALUE ...]"
HELP_HINT = "`python -m train --help` lists every field"
_HELP = {"help", "helpshort", "?", "h"}
_HELPFULL = {"helpfull"}
_OVERRIDE = re.compile(r"^--?(no)?config\.([^=]+)(?:=(.*))?$", re.DOTALL)
_CONFIG_ARG = re.compile(r"^--?config(?:=(.*))?$", re.DOTALL)


# ----------------------------------------------------------------------------
# The fields, from their one declaration (train.config_schema).


@dataclasses.dataclass(frozen=True)
class Field:
  """One leaf field as ``--help`` shows it: ``name`` is dotted (``dataset.root``)."""

  name: str
  group: str  # the heading of its section ('' for the first)
  default: Any
  type_name: str  # 'int', 'str | None', ...
  meaning: str  # its help text, and what values it takes


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, tuple[Any, str]]:
  """Dotted leaf name → (value, type name), in the config's insertion order."""
  out = {}
  for key in config.keys():
    value = config[key]
    name = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flatten(value, name + "."))
      continue
    try:
      kind = config.get_type(key)
    except (AttributeError, KeyError, TypeError):
      kind = type(value)
    type_name = getattr(kind, "__name__", str(kind))
    if value is None and type_name != "NoneType":  # a placeholder: the type, or None
      type_name += " | None"
    out[name] = (value, type_name)
  return out


def _default_config() -> ml_collections.ConfigDict:
  from train import config_schema

  return config_schema.default_config()


def config_fields() -> list[Field]:
  """Every field of :mod:`train.config_schema`, in declaration order, with its section heading.

  The meaning is the field's help text, then what it takes where the type
  alone does not say (a range, the allowed values) and whether a resumed run
  may change it.
  """
  from train import config_schema

  out = []
  for spec in config_schema.fields():
    takes = config_schema.requirement(spec).removeprefix("must ")
    notes = [] if takes.startswith("be a string") or takes.startswith("be true or") else [takes]
    if spec.resume:
      notes.append("may change on resume")
    meaning = spec.help + (f" [{'; '.join(notes)}]" if notes else "")
    out.append(Field(spec.name, spec.group, spec.default, spec.type_name, meaning))
  return out


def _wrap(text: str, indent: str, width: int) -> str:
  return textwrap.fill(
    text, width=width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
  )


def config_help(width: int = 100) -> str:
  """The config section of ``--help``: every field, grouped, with default and meaning."""
  fields = config_fields()
  intro = (
    f"config fields ({len(fields)}; declared in train/config_schema.py, the defaults a --config "
    "file may change: add --print_config to see a file's values). Override any with "
    "--config.FIELD=VALUE:"
  )
  out = ["", _wrap(intro, "", width)]
  group = None
  for f in fields:
    if f.group != group:
      group = f.group
      out += ["", f"{group or 'General'}:"]
    out.append(f"  {f.name}: {f.type_name} = {f.default!r}")
    if f.meaning:
      out.append(_wrap(f.meaning, "      ", width))
  return "\n".join(out) + "\n"


def config_text(config: ml_collections.ConfigDict) -> str:
  """``--print_config``'s output: the resolved config as JSON, in file order."""
  return json.dumps(json.loads(config.to_json_best_effort()), indent=2)


# ----------------------------------------------------------------------------
# Parsing the command line.


def fail(message: str) -> NoReturn:
  """Prints ``error: <message>`` as one line on stderr and exits with status 2."""
  print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
  sys.exit(BAD_INPUT)


def _chain(e: BaseException):
  """``e``, its causes and contexts, and the members of exception groups, each once."""
  seen, stack = set(), [e]
  while stack:
    x = stack.pop()
    if x is None or id(x) in seen:
      continue
    seen.add(id(x))
    yield x
    stack += [x.__cause__, x.__context__]
    stack += list(getattr(x, "exceptions", None) or ())


def disk_full_message(e: BaseException, workdir: str | None) -> str | None:
  """The one-line message for a full disk if ENOSPC is anywhere in ``e``'s chain, else None.

  Names the path being written when an ``OSError`` carries it (else the
  workdir); libraries that report ENOSPC only in their text ("No space left
  on device") are recognised too.
  """
  found = None
  for x in _chain(e):
    if isinstance(x, OSError) and x.errno == errno.ENOSPC:
      found = x
      if x.filename:
        break
    elif found is None and ("No space left on device" in str(x) or "ENOSPC" in str(x)):
      found = x
  if found is None:
    return None
  path = getattr(found, "filename", None) or workdir
  return (
    f"no space left on device (ENOSPC) while writing {str(path)!r}: free space on that disk "
    "(or use a --workdir on another one) and rerun the same command; it resumes from the "
    "newest checkpoint."
  )


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return text or type(e).__name__


def _help_kind(argv: list[str]) -> str | None:
  for arg in argv[1:]:
    if arg == "--":
      break
    name, _, value = arg.lstrip("-").partition("=")
    if not arg.startswith("-") or value.lower() in ("false", "0"):
      continue
    if name in _HELP:
      return "short"
    if name in _HELPFULL:
      return "full"
  return None


def _print_help(kind: str) -> NoReturn:
  app.usage(shorthelp=kind == "short", writeto_stdout=True)
  print(config_help(max(60, min(flags.get_help_width(), 100))), end="")
  if kind == "short":
    print("\nTry --helpfull to see absl's own flags as well.")
  sys.exit(0)


def _expand_flagfiles(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
  except flags.Error as e:
    fail(_one_line(e))


def _config_argument(argv: list[str]) -> str | None:
  """The value of ``--config`` on the command line (the last one), or None."""
  value = None
  for i, arg in enumerate(argv[1:], start=1):
    if arg == "--":
      break
    match = _CONFIG_ARG.match(arg)
    if match:
      if match.group(1) is not None:
        value = match.group(1)
      elif i + 1 < len(argv):
        value = argv[i + 1]
  return value


def _overrides(argv: list[str]) -> list[tuple[str, str]]:
  """(field path, the argument) of every ``--config.FIELD[=VALUE]`` on the command line."""
  out = []
  for arg in argv[1:]:
    if arg == "--":
      break
    match = _OVERRIDE.match(arg)
    if match:
      out.append((match.group(2), arg))
  return out


def _missing_file(path: str) -> str:
  message = f"--config={path}: no such file"
  folder = os.path.dirname(path) or "."
  if os.path.isdir(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")
    close = difflib.get_close_matches(os.path.basename(path), names, n=1, cutoff=0.6)
    if close:
      return f"{message}; did you mean --config={os.path.join(os.path.dirname(path), close[0])}?"
    if names:
      return f"{message} (see the files in {folder}/)."
  return f"{message} (the experiment configs are in configs/)."


class ConfigFileError(ValueError):
  """``--config``'s file cannot give a config; the message is the one error line."""


def load_config(argument: str) -> ml_collections.ConfigDict:
  """``get_config(*args)`` of ``--config``'s ``PATH[:ARGS]``, or ConfigFileError saying why not.

  The same split as ml_collections' ``ConfigFileFlagParser``: everything after
  the first ``:`` is ``get_config``'s one argument.
  """
  path, *args = argument.split(":", 1)
  if not path:
    raise ConfigFileError(f"--config needs a config file: {USAGE}")
  if not os.path.isfile(path):
    raise ConfigFileError(_missing_file(path))
  call = f"get_config({', '.join(map(repr, args))})"
  try:
    spec = importlib.util.spec_from_file_location("_train_cli_config", path)
    if spec is None or spec.loader is None:
      raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception as e:  # the user's file: any error is bad input
    raise ConfigFileError(
      f"--config={argument}: loading {path} raised {type(e).__name__}: {_one_line(e)}"
    ) from e
  if not callable(getattr(module, "get_config", None)):
    raise ConfigFileError(f"--config={argument}: {path} defines no get_config().")
  try:
    config = module.get_config(*args)
  except Exception as e:
    raise ConfigFileError(
      f"--config={argument}: {call} raised {type(e).__name__}: {_one_line(e)}"
    ) from e
  if config is None:
    raise ConfigFileError(f"--config={argument}: {call} returned None (no return statement?).")
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(
      f"--config={argument}: {call} returned a {type(config).__name__}, not a ConfigDict."
    )
  return config


def _known(field: str, config: ml_collections.ConfigDict) -> bool:
  node: Any = config
  for part in re.sub(r"\[[^\]]*\]", "", field).split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def _closest(field: str, names: list[str]) -> str | None:
  close = difflib.get_close_matches(field, names, n=1, cutoff=0.6)
  if close:
    return close[0]
  leaves = {}
  for n in names:
    leaves.setdefault(n.rsplit(".", 1)[-1], n)
  close = difflib.get_close_matches(field.rsplit(".", 1)[-1], list(leaves), n=1, cutoff=0.75)
  return leaves[close[0]] if close else None


def _unknown_field(field: str, config, config_argument: str) -> str:
  names = list(_flatten(config))
  names += sorted({n.rsplit(".", 1)[0] for n in names if "." in n})  # sub-dicts, too
  message = f"--config.{field}: {config_argument.split(':', 1)[0]} has no field {field!r}"
  suggestion = _closest(field, names)
  if suggestion:
    return f"{message}; did you mean --config.{suggestion}? ({HELP_HINT})"
  return f"{message} ({HELP_HINT})."


def _describe_type(type_name: str) -> str:
  return {
    "int": "an int",
    "float": "a float",
    "str": "a string",
    "bool": "true or false",
    "tuple": "a tuple such as '(1, 2)'",
    "ConfigDict": "a dict",
  }.get(type_name.replace(" | None", ""), f"a {type_name}")


def _bad_value(
  e: flags.Error, config, config_argument: str, overrides: list[tuple[str, str]]
) -> str | None:
  """The message for ``--config.FIELD=VALUE`` that did not parse as FIELD's type."""
  match = re.match(r"flag --(?:no)?config\.([^=:\s]+)=", str(e))
  if not match:
    return None
  field = match.group(1)
  argument = next((a for f, a in reversed(overrides) if f == field), f"--config.{field}")
  leaves = _flatten(config)
  if field in leaves:
    value, type_name = leaves[field]
    where = config_argument.split(":", 1)[0]
    expected = f"config.{field} takes {_describe_type(type_name)} ({where} sets {value!r})"
  else:
    expected = f"config.{field} takes a dict"
  cause = e.__context__
  if cause is not None and "Non-boolean argument" in str(cause):
    reason = "not a boolean (use true or false)"
  else:
    reason = _one_line(cause) if cause is not None else _one_line(e).split(": ", 1)[-1]
  return f"{argument}: {expected}; {reason}"


def _unknown_flag(name: str, config_argument: str | None) -> str:
  """``--workdri`` → did you mean ``--workdir``; ``--nesterov`` → ``--config.nesterov``."""
  names = [n for n in flags.FLAGS if not n.startswith("config.")]
  close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
  if close:
    tip = f"; did you mean --{close[0]}?"
  else:
    try:
      config = load_config(config_argument) if config_argument else None
    except ConfigFileError:
      config = None
    if config is None:
      config = _default_config()
    field = _closest(name.removeprefix("no"), list(_flatten(config)))
    tip = f"; did you mean the config field --config.{field}?" if field else ""
  return f"unknown flag --{name}{tip} (`python -m train --help` lists the flags and fields)"


def _diagnose(e: Exception, argv: list[str]) -> str:
  """One line naming what on the command line made ``FLAGS(argv)`` raise ``e``."""
  config_argument = _config_argument(argv)
  overrides = _overrides(argv)
  if isinstance(e, flags.UnrecognizedFlagError) and not e.flagname.startswith("config."):
    return _unknown_flag(e.flagname, config_argument)
  if config_argument is None:
    if overrides:
      return f"--config is required ({overrides[0][1]} overrides a field of it): {USAGE}"
    return _generic(e)
  config = load_config(config_argument)  # raises ConfigFileError when the file is the problem
  for field, _ in overrides:
    if not _known(field, config):
      return _unknown_field(field, config, config_argument)
  if isinstance(e, flags.IllegalFlagValueError):
    message = _bad_value(e, config, config_argument, overrides)
    if message:
      return message
  return _generic(e)


def _generic(e: Exception) -> str:
  message = _one_line(e).removeprefix("flag ")
  if isinstance(e, flags.IllegalFlagValueError) and "Non-boolean argument" in str(e.__context__):
    return f"{message.split(': ', 1)[0]}: not a boolean (use true or false)"
  if type(e).__name__ == "FlagOrderError":  # ml_collections.config_flags'; not exported
    return f"{message}: put --config FILE before its --config.FIELD overrides"
  if message.startswith("Missing value for flag "):
    return f"{message}: give it as {message.rsplit(' ', 1)[-1]}=VALUE"
  return message


@contextlib.contextmanager
def _quiet_config_warnings():
  """Holds back ml_collections' warning that get_config() returned None (our error says so)."""

  class Drop(std_logging.Filter):
    def filter(self, record):
      return "get_config() returned None" not in record.getMessage()

  logger, drop = absl_logging.get_absl_logger(), Drop()
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def parse_flags(argv: list[str]) -> list[str]:
  """``app.run``'s ``flags_parser``: ``FLAGS(argv)``, every mistake one ``error:`` line.

  Also checks what the flags themselves do not: ``--config`` (and, unless
  ``--print_config``, ``--workdir``) given, no positional arguments.
  """
  argv = list(argv)
  kind = _help_kind(argv)
  if kind:
    _print_help(kind)
  FLAGS = flags.FLAGS
  try:
    with _quiet_config_warnings():
      rest = FLAGS(argv)
  except Exception as e:  # every failure here is bad input: name it
    try:
      message = _diagnose(e, _expand_flagfiles(argv))
    except ConfigFileError as bad_file:
      message = str(bad_file)
    except Exception:  # never a traceback for a bad command line
      message = _generic(e)
    fail(message)
  if len(rest) > 1:
    fail(
      f"unexpected argument(s) {' '.join(rest[1:])!r}: flags take the form --NAME=VALUE ({USAGE})"
    )
  if not FLAGS["config"].present:
    fail(f"--config is required: {USAGE} ({HELP_HINT})")
  if not isinstance(FLAGS.config, ml_collections.ConfigDict):
    # A file ml_collections could not load (it defers that error to the first use).
    argument = config_flags.get_config_filename(FLAGS["config"])
    try:
      load_config(argument)
    except ConfigFileError as bad_file:
      fail(str(bad_file))
    fail(f"--config={argument}: get_config() gave no ConfigDict.")
  if not FLAGS.workdir and not FLAGS.print_config:
    fail(f"--workdir is required (a new directory, or an earlier run's to resume it): {USAGE}")
  return rest


# ----------------------------------------------------------------------------
# The workdir of a failed start.


def remove_if_empty(workdir: str) -> None:
  """Removes ``workdir`` if it holds nothing but empty directories (bottom-up, rmdir only)."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(path) or os.path.islink(path):
    return
  for root, dirs, files in os.walk(path, topdown=False):
    if files:
      return
    for d in dirs:
      sub = os.path.join(root, d)
      if os.path.islink(sub):
        return
      try:
        os.rmdir(sub)
      except OSError:
        return
  try:
    os.rmdir(path)
  except OSError:
    pass
