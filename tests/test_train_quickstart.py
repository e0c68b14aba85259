"""The README's quickstart command, shortened by config overrides (smoke test).

The output blocks that README.md and docs/training.md show for it must have
the shape of what the program prints: the same heading line, columns and
rows (the numbers differ from run to run and machine to machine).
"""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_START = "tiny_cnn on digits"


def documented_tables():
  """{file: text} of the quickstart's output block in README.md and docs/training.md."""
  tables = {}
  for name in ("README.md", os.path.join("docs", "training.md")):
    with open(os.path.join(ROOT, name)) as f:
      blocks = re.findall(r"^```(\w*)\n(.*?)^```$", f.read(), re.M | re.S)  # (language, text)
    found = [text for lang, text in blocks if not lang and text.startswith(TABLE_START)]
    assert len(found) == 1, f"{name}: expected one quickstart output block, found {len(found)}"
    tables[name] = found[0]
  return tables


def table_shape(text):
  """(heading line, column names, [(row name, number of cells)]) of a printed table."""
  lines = [line for line in text.strip().splitlines() if line.strip()]
  cells = lambda line: re.split(r"\s{2,}", line.strip())
  heading, header, rows = lines[0], cells(lines[1]), [cells(line) for line in lines[2:]]
  return heading, header, [(r[0], len(r)) for r in rows]


def test_quickstart_prints_bn_and_mbn_side_by_side(tmp_path):
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    JAX_PLATFORMS="cpu",
    TF_CPP_MIN_LOG_LEVEL="3",
    PYTHONPATH=ROOT,
    JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"],
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  workdir = str(tmp_path / "qs")
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "train",
      "--config",
      "configs/quickstart.py",
      "--workdir",
      workdir,
      "--config.num_epochs=1",
      "--config.dataset.max_train_examples=300",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  table = done.stdout[done.stdout.index(TABLE_START) :]
  assert "eval acc" in table and "\n  bn " in table and "\n mbn " in table
  printed = table_shape(table)
  assert printed[2] == [("bn", len(printed[1])), ("mbn", len(printed[1]))]
  for name, documented in documented_tables().items():
    assert table_shape(documented) == printed, (
      f"{name}'s quickstart output block no longer matches what the program prints:\n"
      f"{documented}\nprinted:\n{table}"
    )
  comparison = json.load(open(os.path.join(workdir, "comparison.json")))
  assert set(comparison["runs"]) == {"bn", "mbn"}
  for norm in ("bn", "mbn"):
    summary = json.load(open(os.path.join(workdir, norm, "summary.json")))
    assert summary["norm"] == norm and summary["per_device_batch_size"] == 2
    assert summary["status"] == "completed" and 0 <= summary["final_eval_accuracy"] <= 1
    # No accumulation: an epoch's micro-batches are its optimizer steps.
    assert summary["micro_batches_per_epoch"] == summary["optimizer_steps_per_epoch"] > 0


def test_cli_bad_input_is_a_clear_error_and_exit_status_2(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
  for workdir, extra, message in [
    (tmp_path / "w", "--config.model=resnet1000", "error: Unknown model 'resnet1000'"),
    (tmp_path / "missing" / "w", "--config.norm=mbn", "error: The parent directory of --workdir"),
  ]:
    done = subprocess.run(
      [
        sys.executable,
        "-m",
        "train",
        "--config",
        "configs/quickstart.py",
        "--workdir",
        str(workdir),
        extra,
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr
