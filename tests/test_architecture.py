"""The layout rules DESIGN.md states, checked on the source (AST), plus ruff over the tree.

- `tuner_job` never imports `cluster` (dependencies point one way).
- Only `tuner_job/_kt*.py` name `keras_tuner.src` or an oracle's private
  attribute, so a KerasTuner upgrade touches those files alone.
- Every module of `tuner_job`, `cluster` and `bench` stays under 400 lines.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO

PACKAGES = ("tuner_job", "cluster", "bench")
MAX_LINES = 400


def _modules(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((REPO / package).rglob("*.py"))


def _is_kt(path: Path) -> bool:
    return path.parent.name == "tuner_job" and path.name.startswith("_kt")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _oracle_private_attributes() -> set[str]:
    """Every `_name` a stock oracle has: instance attributes and methods of the four oracles' classes."""
    keras_tuner = pytest.importorskip("keras_tuner")
    hp = keras_tuner.HyperParameters()
    hp.Int("x", 1, 4)
    objective = keras_tuner.Objective("val_loss", "min")
    oracles = [
        keras_tuner.oracles.RandomSearchOracle(objective=objective, hyperparameters=hp, max_trials=2),
        keras_tuner.oracles.BayesianOptimizationOracle(objective=objective, hyperparameters=hp, max_trials=2),
        keras_tuner.oracles.GridSearchOracle(objective=objective, hyperparameters=hp, max_trials=2),
        keras_tuner.oracles.HyperbandOracle(objective=objective, hyperparameters=hp, max_epochs=2),
    ]
    names: set[str] = set()
    for oracle in oracles:
        names |= set(vars(oracle))
        for klass in type(oracle).__mro__:
            names |= set(vars(klass))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def violations(source: str, path: str, private: set[str], *, kt: bool, in_tuner_job: bool) -> list[str]:
    """What `source` breaks of the rules above (one line each)."""
    tree = ast.parse(source, path)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        line = f"{path}:{getattr(node, 'lineno', 0)}"
        for name in _imported(node):
            if in_tuner_job and (name == "cluster" or name.startswith("cluster.")):
                found.append(f"{line}: tuner_job imports the launcher ({name})")
            if not kt and name.startswith("keras_tuner.src"):
                found.append(f"{line}: imports {name} (only tuner_job/_kt*.py may)")
        if kt:
            continue
        if isinstance(node, ast.Attribute):
            if _dotted(node).startswith("keras_tuner.src"):
                found.append(f"{line}: names keras_tuner.src")
            # `self._x` inside a class is its own attribute; `oracle._x` or `self.oracle._x` reaches into another object.
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr in private and not own:
                found.append(f"{line}: names an oracle's private attribute {node.attr!r} (only tuner_job/_kt*.py may)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if "keras_tuner.src" in node.value or node.value in private:
                found.append(f"{line}: names {node.value!r} in a string (only tuner_job/_kt*.py may)")
    return found


def test_no_module_breaks_the_layering() -> None:
    private = _oracle_private_attributes()
    assert {"_retry_queue", "_tried_so_far", "_save_trial", "_display"} <= private  # the ones we replace or read
    found = []
    for path in _modules(*PACKAGES):
        rel = str(path.relative_to(REPO))
        found += violations(path.read_text(), rel, private, kt=_is_kt(path), in_tuner_job=rel.startswith("tuner_job/"))
    assert not found, "\n".join(found)


def test_the_check_catches_each_kind_of_breach() -> None:
    private = {"_retry_queue"}
    bad = {
        "import cluster.narrow": "imports the launcher",
        "from cluster import narrow": "imports the launcher",
        "def f():\n    from cluster.narrow import narrow_run": "imports the launcher",
        "from keras_tuner.src.engine import trial": "imports keras_tuner.src.engine",
        "import keras_tuner\nx = keras_tuner.src.protos": "names keras_tuner.src",
        "x = oracle._retry_queue": "private attribute '_retry_queue'",
        "class S:\n    def f(self):\n        return self.oracle._retry_queue": "private attribute '_retry_queue'",
        "x = getattr(oracle, '_retry_queue')": "names '_retry_queue' in a string",
    }
    for source, message in bad.items():
        found = violations(source, "tuner_job/x.py", private, kt=False, in_tuner_job=True)
        assert any(message in line for line in found), (source, found)
    fine = ["class S:\n    def f(self):\n        return self._retry_queue", '"""About keras_tuner.src."""', "import keras_tuner"]
    for source in fine:
        assert violations(source, "tuner_job/x.py", private, kt=False, in_tuner_job=True) == [], source
    assert violations("from keras_tuner.src import protos\nx = oracle._retry_queue", "tuner_job/_kt.py", private, kt=True, in_tuner_job=True) == []
    assert violations("import cluster.narrow", "bench/x.py", private, kt=False, in_tuner_job=False) == []


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules(*PACKAGES) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines, one idea each): {long}"


def test_ruff_passes_on_the_tree() -> None:
    """`make lint`'s Python check, enforced by `make test` too (rules in pyproject.toml)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[dev]' (it is pinned there)"
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
