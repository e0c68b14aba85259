"""The command line of `python -m train`: --help, --print_config, one-line errors (issue 25).

Every case runs the real entry point in a subprocess. The bad-input cases fail
while the flags are parsed, before JAX is imported, so each takes well under a
second; only the workdir tests import JAX (and still compile nothing).
"""

import json
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
QS = ["--config", "configs/quickstart.py"]


def run_train(*args, timeout=120):
  return subprocess.run(
    [sys.executable, "-m", "train", *map(str, args)],
    cwd=ROOT,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def flatten(config, prefix=""):
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def assert_one_error_line(p, *needles):
  assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
  assert "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
  lines = p.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


# One case per kind of mistake: the arguments ({wd}: a workdir that does not
# exist yet, {tmp}: a scratch directory) and what the error line must name.
MISTAKES = [
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.per_device_batchsize=4"],
    ["--config.per_device_batchsize", "did you mean --config.per_device_batch_size?"],
    id="misspelled-field",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.dataset.rooot=/data"],
    ["--config.dataset.rooot", "did you mean --config.dataset.root?"],
    id="misspelled-nested-field",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.root=/data"],
    ["'root'", "did you mean --config.dataset.root?"],
    id="field-without-its-group",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.per_device_batch_size=abc"],
    ["--config.per_device_batch_size=abc", "takes an int", "'abc'"],
    id="not-an-int",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.seed=1.5"],
    ["--config.seed=1.5", "config.seed takes an int"],
    id="float-for-an-int",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.base_learning_rate=fast"],
    ["--config.base_learning_rate=fast", "takes a float"],
    id="not-a-float",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.nesterov=maybe"],
    ["--config.nesterov=maybe", "true or false"],
    id="not-a-bool",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.dataset.mean=(0.5,0.5"],
    ["--config.dataset.mean=(0.5,0.5", "takes a tuple"],
    id="unparsable-tuple",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.dataset=3"],
    ["--config.dataset=3", "takes a dict"],
    id="not-a-dict",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--config.seed"],
    ["--config.seed", "--config.seed=VALUE"],
    id="missing-value",
  ),
  pytest.param(QS, ["--workdir is required"], id="missing-workdir"),
  pytest.param([*QS, "--workdir="], ["--workdir is required"], id="empty-workdir"),
  pytest.param(["--workdir", "{wd}"], ["--config is required"], id="missing-config"),
  pytest.param(
    ["--workdir", "{wd}", "--config.seed=1"],
    ["--config is required", "--config.seed=1"],
    id="override-without-config",
  ),
  pytest.param(
    ["--workdir", "{wd}", "--config.seed=1", *QS],
    ["--config.seed=1", "put --config FILE before"],
    id="override-before-config",
  ),
  pytest.param(
    ["--config", "configs/nope.py", "--workdir", "{wd}"],
    ["--config=configs/nope.py", "no such file"],
    id="missing-config-file",
  ),
  pytest.param(
    ["--config", "configs/quickstrt.py", "--workdir", "{wd}", "--config.seed=1"],
    ["configs/quickstrt.py", "no such file", "did you mean --config=configs/quickstart.py?"],
    id="misspelled-config-file",
  ),
  pytest.param(
    ["--config", "configs/cifar10_resnet20_cpu_accum.py:bogus", "--workdir", "{wd}"],
    ["configs/cifar10_resnet20_cpu_accum.py:bogus", "raised ValueError", "'bogus'"],
    id="get_config-raises",
  ),
  pytest.param(
    ["--config", "{tmp}/broken.py", "--workdir", "{wd}"],
    ["broken.py", "SyntaxError"],
    id="config-file-does-not-parse",
  ),
  pytest.param(
    ["--config", "{tmp}/returns_none.py", "--workdir", "{wd}"],
    ["returns_none.py", "returned None"],
    id="get_config-returns-none",
  ),
  pytest.param(
    [*QS, "--workdri={wd}"],
    ["--workdri", "did you mean --workdir?"],
    id="misspelled-flag",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--nesterov"],
    ["--nesterov", "--config.nesterov"],
    id="field-given-as-a-flag",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "--num_processes=two"],
    ["--num_processes=two"],
    id="bad-program-flag",
  ),
  pytest.param(
    [*QS, "--workdir", "{wd}", "norm=bn"],
    ["unexpected argument", "norm=bn"],
    id="positional-argument",
  ),
]


@pytest.mark.parametrize("args, needles", MISTAKES)
def test_command_line_mistake_is_one_error_line_and_exit_2(tmp_path, args, needles):
  (tmp_path / "broken.py").write_text("def get_config(:\n  pass\n")
  (tmp_path / "returns_none.py").write_text("def get_config():\n  pass\n")
  wd = tmp_path / "runs" / "new"  # the parent exists, the workdir does not
  (tmp_path / "runs").mkdir()
  args = [a.format(wd=wd, tmp=tmp_path) for a in args]
  assert_one_error_line(run_train(*args), *needles)
  assert not wd.exists()  # a failed start leaves no workdir behind


def test_help_lists_every_config_field_with_default_and_meaning():
  p = run_train("--help")
  assert p.returncode == 0 and not p.stderr, p.stderr[-2000:]
  out = p.stdout
  for flag in ("--config", "--workdir", "--print_config", "--coordinator_address"):
    assert flag in out  # absl's help of the program's own flags stays
  lines = out.splitlines()
  fields = flatten(default.get_config())
  assert len(fields) > 50
  for name, value in fields.items():
    i = next(
      (i for i, line in enumerate(lines) if re.match(rf"  {re.escape(name)}: \S", line)), None
    )
    assert i is not None, f"--help does not list {name}"
    assert lines[i].endswith(f" = {value!r}"), (name, lines[i])
    assert lines[i + 1].startswith("      ") and lines[i + 1].strip(), f"{name} has no meaning"
  headings = [
    "Model and normalization:",
    "Norm options (one dict for every norm; each ignores what it doesn't use):",
    "Batch and optimizer:",
    "Data:",
    "Logging, evaluation, checkpoints:",
    "Multi-host (flags --coordinator_address/--num_processes/--process_id win):",
  ]
  at = [lines.index(h) for h in headings]
  assert at == sorted(at)  # in the file's order
  full = run_train("--helpfull")
  assert full.returncode == 0 and "--verbosity" in full.stdout and "  dataset.root:" in full.stdout
  # Each field under its own group: dataset.* below "Data:", before the next heading.
  data = lines.index("Data:")
  assert all(
    lines.index(next(line for line in lines if line.startswith(f"  {n}:"))) > data
    for n in fields
    if n.startswith("dataset.")
  )


def test_print_config_shows_the_file_plus_overrides_without_running(tmp_path):
  wd = tmp_path / "never"
  p = run_train(
    *QS,
    "--config.seed=7",
    "--config.dataset.max_train_examples=5",
    "--config.norm=bn",
    "--print_config",
    "--workdir",
    wd,
  )
  assert p.returncode == 0 and not p.stderr, p.stderr[-2000:]
  printed = json.loads(p.stdout)
  assert printed["seed"] == 7 and printed["norm"] == "bn"
  assert printed["dataset"]["max_train_examples"] == 5
  assert printed["model"] == "tiny_cnn" and printed["dataset"]["source"] == "digits"  # the file's
  assert not wd.exists()
  assert run_train(*QS, "--print_config").returncode == 0  # no --workdir needed


def test_a_failed_start_removes_the_workdir_it_created_but_nothing_else(tmp_path):
  """The data fails after train_and_evaluate created WORKDIR/<norm> (quickstart: bn,mbn)."""
  (tmp_path / "images").mkdir()  # an image folder without a 'train' split
  bad_data = ["--config.dataset.source=image_folder", f"--config.dataset.root={tmp_path}/images"]
  new = tmp_path / "new"
  p = run_train(*QS, "--workdir", new, *bad_data)
  assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
  assert p.stderr.splitlines()[-1].startswith("error: ") and "no split 'train'" in p.stderr
  assert not new.exists()

  old = tmp_path / "old"  # existed before the command: kept, even empty
  old.mkdir()
  p = run_train(*QS, "--workdir", old, *bad_data)
  assert p.returncode == 2 and old.is_dir()
