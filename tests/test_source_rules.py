"""Rules on the source itself, read with ``ast`` (nothing is imported but train.parallel).

* No module of mbn_jax/, train/ or tools/ defines a top-level name twice (a
  second ``def`` silently replaces the first, as train/parallel.py's two
  ``_gather_rows`` did).
* The device seam (train/parallel.py) is an explicit interface: every method
  or attribute the program, the tests and the benchmarks ask of a ``parallel``
  is declared by :class:`train.parallel.Parallel`, both implementations are
  complete, and nothing is assigned to a seam outside its ``__init__``.
"""

import ast
import inspect
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("mbn_jax", "train", "tools")


def modules(*folders):
  return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def parse(path):
  return ast.parse(path.read_text(), filename=str(path))


def _bound_names(stmt):
  """The names a top-level statement binds: ``def``/``class`` names, assignment targets, imports."""
  if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
    return [("def", stmt.name)]
  if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    return [("assign", n.id) for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
  if isinstance(stmt, (ast.Import, ast.ImportFrom)):
    return [("import", (a.asname or a.name).split(".")[0]) for a in stmt.names]
  return []


def duplicate_definitions(tree) -> list[str]:
  """Top-level names a module defines (``def``/``class``) twice, or also binds otherwise."""
  kinds: dict[str, list[tuple[str, int]]] = {}
  for stmt in tree.body:
    for kind, name in _bound_names(stmt):
      kinds.setdefault(name, []).append((kind, stmt.lineno))
  return [
    f"{name}: {', '.join(f'{k} (line {n})' for k, n in seen)}"
    for name, seen in kinds.items()
    if sum(k == "def" for k, _ in seen) > 1 or (any(k == "def" for k, _ in seen) and len(seen) > 1)
  ]


@pytest.mark.parametrize("path", modules(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_top_level_name_defined_twice(path):
  assert duplicate_definitions(parse(path)) == []


def test_the_duplicate_check_catches_a_second_def():
  source = "import os\ndef f():\n  pass\nclass C:\n  pass\ndef f():\n  pass\nC = 1\nos = 2\n"
  found = duplicate_definitions(ast.parse(source))
  assert found == ["f: def (line 2), def (line 6)", "C: def (line 4), assign (line 8)"]


def _is_seam(node) -> bool:
  """``parallel`` or ``<anything>.parallel``: the seam as the program and tests name it."""
  return (isinstance(node, ast.Name) and node.id == "parallel") or (
    isinstance(node, ast.Attribute) and node.attr == "parallel"
  )


def seam_uses() -> dict[str, list[str]]:
  """Every ``parallel.NAME`` read outside train/parallel.py: {NAME: [where]}."""
  uses: dict[str, list[str]] = {}
  for path in modules("train", "tools", "tests", "benchmarks"):
    if path == ROOT / "train" / "parallel.py":
      continue
    for node in ast.walk(parse(path)):
      if isinstance(node, ast.Attribute) and _is_seam(node.value):
        uses.setdefault(node.attr, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
  return uses


def test_every_use_of_the_seam_is_declared_by_the_interface():
  from train.parallel import MeshParallel, Parallel, PmapParallel

  uses = seam_uses()
  # The loop's own calls, so that a scan that finds nothing cannot pass.
  for name in ("train_step", "shard", "stop_flags", "place", "first", "all_rows"):
    assert name in uses, name
  for name in ("eval_sums", "mean_stats", "precise_stats", "name", "train_traces"):
    assert name in uses, name
  declared = Parallel.__annotations__  # attributes: annotated (strings: postponed evaluation)
  undeclared = {n: w for n, w in uses.items() if not (hasattr(Parallel, n) or n in declared)}
  assert undeclared == {}, f"used but not declared by train.parallel.Parallel: {undeclared}"
  assert inspect.isabstract(Parallel)
  device_specific = {"place", "shard", "stop_flags", "first", "all_rows", "precise_stats"}
  assert device_specific | {"__init__", "norm_options"} <= Parallel.__abstractmethods__
  class_attributes = [n for n, t in declared.items() if "ClassVar" in str(t)]
  assert {"name", "axis"} <= set(class_attributes)
  for cls in (PmapParallel, MeshParallel):
    assert issubclass(cls, Parallel)
    assert not inspect.isabstract(cls), (cls, cls.__abstractmethods__)
    assert all(hasattr(cls, n) for n in class_attributes), cls


def _attribute_targets(node: ast.AST) -> list[ast.Attribute]:
  """The attributes an assignment statement assigns to (none for any other node)."""
  targets = []
  if isinstance(node, ast.Assign):
    targets = node.targets
  elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
    targets = [node.target]
  return [t for target in targets for t in _unpacked(target) if isinstance(t, ast.Attribute)]


def _unpacked(target):
  """The targets of ``a, (b.c, *d) = ...``: not what a subscript's or attribute's value names."""
  if isinstance(target, (ast.Tuple, ast.List)):
    return [t for elt in target.elts for t in _unpacked(elt)]
  if isinstance(target, ast.Starred):
    return _unpacked(target.value)
  return [target]


def assignments_outside_init(tree) -> list[int]:
  """Lines that assign an attribute (``x.a = ...``, ``x.a += ...``) outside any ``__init__``."""
  inits = {
    id(n)
    for f in ast.walk(tree)
    if isinstance(f, ast.FunctionDef) and f.name == "__init__"
    for n in ast.walk(f)
  }
  return sorted(
    {t.lineno for node in ast.walk(tree) if id(node) not in inits for t in _attribute_targets(node)}
  )


def test_nothing_is_assigned_to_a_seam_outside_its_constructor():
  """In train/parallel.py only ``__init__`` assigns attributes (of anything); elsewhere in train/
  no ``parallel.X = ...`` (nor ``s.parallel.X = ...``)."""
  outside = [
    f"train/parallel.py:{n}"
    for n in assignments_outside_init(parse(ROOT / "train" / "parallel.py"))
  ]
  for path in modules("train"):
    for node in ast.walk(parse(path)):
      for t in _attribute_targets(node):
        if _is_seam(t.value):
          outside.append(f"{path.relative_to(ROOT)}:{t.lineno}: {ast.unparse(node)}")
  assert outside == []


def test_the_assignment_check_sees_an_assignment_outside_init():
  source = (
    "class A:\n  def __init__(self):\n    self.x = 1\n  def f(self):\n    self.y = 2\n"
    "def g(a):\n  a.z += 1\n  a.w[0] = 1\n  b, (a.v, c) = 1, (2, 3)\n"
  )
  assert assignments_outside_init(ast.parse(source)) == [5, 7, 9]
