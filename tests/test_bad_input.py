"""Bad input: one clear line naming the key, file or value; a non-zero exit; nothing on the volume touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, free_port, small_config
from tuner_job.contract import CHIEF_ID, process_env

pytestmark = pytest.mark.slow


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and mtime, every folder's existence (a folder's mtime moves with a lock file)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0) for p in sorted(root.rglob("*"))}


def _not_a_model(tmp: Path) -> str:
    file = tmp / "bad_model.py"
    file.write_text("def build(hp):\n    hp.Int('units', 1, 4)\n    return 'not a model'\n")
    return f"{file}:build"


CASES = {
    # data_wait_seconds=0: on a cluster the chief waits for data pushed after it (tests/test_chief_startup.py).
    "missing data folder": (lambda shared, tmp: {"data": "data/nowhere", "data_wait_seconds": 0}, "data folder not found: "),
    "empty class folder": (lambda shared, tmp: [p.unlink() for p in (shared / "data/toonvision/lawbot").iterdir()] and {}, "lawbot holds no images"),
    "corrupt image": (
        lambda shared, tmp: (shared / "data/toonvision/cashbot/cashbot_0002.png").write_bytes(b"garbage") and {},
        "cannot decode image ",
    ),
    "unknown tuner": (lambda shared, tmp: {"tuner": "grad"}, "tuner: Input should be 'random', 'hyperband', 'bayesian' or 'grid'"),
    "unknown key": (lambda shared, tmp: {"max_trails": 3}, "unknown key 'max_trails'"),
    "wrong type": (lambda shared, tmp: {"epochs": "many"}, "epochs: Input should be a valid integer"),
    "hypermodel path missing": (lambda shared, tmp: {"hypermodel": str(tmp / "nope.py") + ":build"}, "hypermodel file not found: "),
    "hypermodel returns no model": (lambda shared, tmp: {"hypermodel": _not_a_model(tmp)}, "returned str, not a keras.Model"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_chief_rejects_bad_input(case: str, shared: Path, tmp_path: Path) -> None:
    damage, expected = CASES[case]
    overrides = damage(shared, tmp_path) or {}
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(**overrides)))
    before = _snapshot(shared)
    env = {**os.environ, **process_env(CHIEF_ID, "127.0.0.1", free_port(), str(config), str(shared)), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "tuner_job", "--config", str(config), "--shared-dir", str(shared)],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert _snapshot(shared) == before


def test_tunectl_local_rejects_bad_input_before_starting_anything(shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    (shared / "data/toonvision/sellbot").rename(tmp_path / "moved")
    [p.unlink() for p in (shared / "data/toonvision/lawbot").iterdir()]
    before = _snapshot(shared)
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", "0"])
    assert result.exit_code == 2, result.output  # bad input: named, exit 2
    assert "lawbot holds no images" in result.output
    assert "started" not in result.output
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tuner", "grad"])
    assert result.exit_code == 2 and "tuner: Input should be" in result.output, result.output
    assert _snapshot(shared) == before
