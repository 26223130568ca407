"""Shared fixtures: a small synthetic dataset, and real search processes on loopback.

The helpers live in `helpers` (import them from there: `from conftest import`
is ambiguous across test folders).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import FAULT_HYPERMODEL, SMALL_SIZE, Search, small_config


@pytest.fixture(scope="session")
def pristine_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.synth import synthesize

    folder = tmp_path_factory.mktemp("dataset") / "toonvision"
    synthesize(folder, per_class=8, size=SMALL_SIZE, seed=7)
    return folder


@pytest.fixture
def shared(tmp_path: Path, pristine_dataset: Path) -> Path:
    """A shared volume holding `data/toonvision` (a fresh copy per test)."""
    root = tmp_path / "shared"
    shutil.copytree(pristine_dataset, root / "data" / "toonvision")
    return root


@pytest.fixture
def search(shared: Path, tmp_path: Path):
    """`search(**config)` makes a `Search`; every process it started is killed at the end."""
    made: list[Search] = []

    def make(**overrides: Any) -> Search:
        workdir = tmp_path / f"work{len(made)}"
        workdir.mkdir()
        s = Search(shared, workdir, small_config(**overrides))
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()




@pytest.fixture
def slow_model(tmp_path: Path) -> str:
    """`hypermodel:` value of `FAULT_HYPERMODEL` (sleeps per batch, fails or crashes on request)."""
    path = tmp_path / "fault_model.py"
    path.write_text(FAULT_HYPERMODEL)
    return f"{path}:build"


@pytest.fixture
def running(tmp_path: Path):
    """`running(**kwargs)` starts an `OracleServer` on loopback in this process (`test_oracle_server.Running`)."""
    from test_oracle_server import Running  # KerasTuner, hence TensorFlow: only for the tests that use it

    made: list[Any] = []

    def make(**kwargs: Any) -> Any:
        made.append(Running(tmp_path, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()
