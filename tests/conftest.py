"""Test-suite setup: 4 virtual CPU devices and JAX's persistent compile cache.

Both must be configured before JAX initialises its backend, hence here.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax

# Outside the clone (CI clones afresh every run), as .ci/py312_core_tests keeps it: a machine
# that ran the suite before compiles little. Its keys include the jax version and flags.
_XDG = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
_CACHE = os.environ.get(
  "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(_XDG) / "mbn_jax" / "jax_cache")
)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE  # the subprocesses' too (the tests pass it on)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
