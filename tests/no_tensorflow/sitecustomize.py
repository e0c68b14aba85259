"""Makes ``tensorflow`` unimportable, as where it is not installed (tests/test_no_tensorflow.py).

Put this folder on PYTHONPATH: Python imports ``sitecustomize`` at start-up.
The path finder is wrapped so that ``tensorflow`` is simply not found
(``importlib.util.find_spec`` returns None, an import raises
ModuleNotFoundError); at exit the process writes whether anything imported it
to ``$NO_TF_REPORT`` (if set).
"""

import atexit
import importlib.machinery
import os
import sys


class _HideTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
      return None
    return importlib.machinery.PathFinder.find_spec(name, path, target)

  def invalidate_caches(self):
    importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [
  _HideTensorFlow() if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]


def _report():
  path = os.environ.get("NO_TF_REPORT")
  if path:
    with open(path, "w") as f:
      f.write("imported" if "tensorflow" in sys.modules else "absent")


atexit.register(_report)
