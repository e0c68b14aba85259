"""Every Python block of README.md and docs/*.md runs as written, on its own.

Each block runs in a fresh interpreter (so a block that leans on an earlier
one fails), from the repository root, with JAX's persistent compilation cache.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks():
  for path in DOCS:
    blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(), re.M | re.S)
    for i, code in enumerate(blocks):
      yield pytest.param(code, id=f"{path.relative_to(ROOT)}#{i + 1}")


def test_the_docs_have_python_blocks():
  assert len(list(python_blocks())) >= 5


@pytest.mark.parametrize("code", list(python_blocks()))
def test_block_runs_as_written(code):
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    TF_CPP_MIN_LOG_LEVEL="3",
    JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"],
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )
  env.pop("XLA_FLAGS", None)  # one device, as a reader has
  p = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert p.returncode == 0, p.stderr[-3000:]
