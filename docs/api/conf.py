"""Sphinx configuration of mbn_jax's API reference (docs/api/).

Build (warnings are errors, as CI builds it):

  pip install -e ".[docs]"
  sphinx-build -W -b html docs/api /tmp/mbn_api

The pages are generated from the docstrings: autosummary writes one page per
public module (docs/api/_generated/, not committed) from the module's
``__all__``, autodoc fills it, napoleon reads the Google-style sections.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # importing the library must not look for GPUs
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import mbn_jax  # noqa: E402

project = "mbn_jax"
author = "mbn_jax contributors"
copyright = "the mbn_jax contributors, Apache-2.0"
release = version = mbn_jax.__version__

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
]
templates_path = ["_templates"]
exclude_patterns = ["_build"]

autosummary_generate = True
autosummary_imported_members = True  # the public modules re-export from their files
autosummary_ignore_module_all = False  # a module's __all__ is its public API
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # signatures stay short; types go to the parameter list
autodoc_typehints_description_target = "documented_params"
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# A class that mbn_jax re-exports is indexed on the top-level page (``mbn_jax.X``,
# the name the guides use); its page in the submodule shows it without indexing it
# again (autodoc declares a class's defining module as its canonical name, so a
# second indexed copy would be a duplicate description).
PUBLIC_MODULES = [
  "mbn_jax.nnx",
  "mbn_jax.schedules",
  "mbn_jax.precise",
  "mbn_jax.backward_statistics",
  "mbn_jax.convert",
  "mbn_jax.norms",
  "mbn_jax.functional",
  "mbn_jax.models",
  "mbn_jax.noise",
]


def _reexported_classes() -> list[str]:
  import importlib

  names = []
  for module_name in PUBLIC_MODULES:
    module = importlib.import_module(module_name)
    for name in getattr(module, "__all__", []):
      obj = getattr(module, name)
      if isinstance(obj, type) and getattr(mbn_jax, name, None) is obj:
        names.append(f"{module_name}.{name}")
  return names


def _aliases() -> dict[str, str]:
  """``module.Name`` -> the full name of the class it aliases (``mbn_jax.nnx.BatchNorm``).

  autodoc shows an alias as one line, "alias of ..."; the module page adds the
  aliased class's documentation below it.
  """
  import importlib

  aliases = {}
  for module_name in ["mbn_jax", *PUBLIC_MODULES]:
    module = importlib.import_module(module_name)
    for name in getattr(module, "__all__", []):
      obj = getattr(module, name)
      if isinstance(obj, type) and obj.__name__ != name:
        aliases[f"{module_name}.{name}"] = f"{obj.__module__}.{obj.__qualname__}"
  return aliases


autosummary_context = {"indexed_elsewhere": _reexported_classes(), "aliases": _aliases()}

html_theme = "alabaster"  # ships with Sphinx: no theme to install
html_title = f"mbn_jax {release} API reference"
html_static_path: list[str] = []


def _skip_dtype_fields(app, what, name, obj, skip, options):
  """A field whose default is a dtype (``param_dtype: Any = jnp.float32``) is no API object.

  The class docstring's ``Attributes:`` section documents the fields; autodoc
  would document such a field a second time, with the dtype's own docstring.
  """
  if (
    what == "class" and isinstance(obj, type) and isinstance(getattr(obj, "dtype", None), np.dtype)
  ):
    return True
  return None


def setup(app):
  app.connect("autodoc-skip-member", _skip_dtype_fields)
