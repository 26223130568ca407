"""Bad input: one clear line naming the key, file or value; a non-zero exit; nothing on the volume touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, free_port, small_config, snapshot
from tuner_job.contract import CHIEF_ID, process_env

pytestmark = pytest.mark.slow


def _not_a_model(tmp: Path) -> str:
    file = tmp / "bad_model.py"
    file.write_text("def build(hp):\n    hp.Int('units', 1, 4)\n    return 'not a model'\n")
    return f"{file}:build"


def _nested_corrupt(shared: Path) -> bool:
    """`._*` files sort first and Keras would fail on them: skipped, the error names the nested corrupt file."""
    cashbot = shared / "data/toonvision/cashbot"
    (cashbot / "._cashbot_0000.png").write_bytes(b"\x00\x05\x16\x07Mac OS X resource fork")
    (cashbot / "more").mkdir()
    (cashbot / "more" / "cashbot_9999.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return True


CASES = {
    # data_wait_seconds=0: on a cluster the chief waits for data pushed after it (tests/test_chief_startup.py).
    "missing data folder": (lambda shared, tmp: {"data": "data/nowhere", "data_wait_seconds": 0}, "data folder not found: "),
    "empty class folder": (lambda shared, tmp: [p.unlink() for p in (shared / "data/toonvision/lawbot").iterdir()] and {}, "lawbot holds no images"),
    "corrupt image": (
        lambda shared, tmp: (shared / "data/toonvision/cashbot/cashbot_0002.png").write_bytes(b"garbage") and {},
        "cannot decode image ",
    ),
    "corrupt image in a subfolder, macOS ._ files beside it": (lambda shared, tmp: _nested_corrupt(shared) and {}, "cannot decode image "),
    "unknown tuner": (lambda shared, tmp: {"tuner": "grad"}, "tuner: Input should be 'random', 'hyperband', 'bayesian', 'grid' or 'asha'"),
    "asha rungs longer than the trial": (
        lambda shared, tmp: {"tuner": "asha", "epochs": 3, "asha_min_epochs": 4},
        "asha_min_epochs: must be <= epochs (3), but got 4",
    ),
    "unknown key": (lambda shared, tmp: {"max_trails": 3}, "unknown key 'max_trails'"),
    "wrong type": (lambda shared, tmp: {"epochs": "many"}, "epochs: Input should be a valid integer"),
    "hypermodel path missing": (lambda shared, tmp: {"hypermodel": str(tmp / "nope.py") + ":build"}, "hypermodel file not found: "),
    "hypermodel returns no model": (lambda shared, tmp: {"hypermodel": _not_a_model(tmp)}, "returned str, not a keras.Model"),
    # The user's code raising while the space is discovered is bad input (exit 2), not a crash to restart (exit 70).
    "hypermodel raises in build": (lambda shared, tmp: {"hypermodel": _raises(tmp)}, "failed to build: RuntimeError: no GPU here"),
    "HyperModel class needs an argument": (lambda shared, tmp: {"hypermodel": _needs_argument(tmp)}, "Needy() needs depth, but only"),
}


def _raises(tmp: Path) -> str:
    file = tmp / "raising_model.py"
    file.write_text("def build(hp):\n    hp.Int('units', 1, 4)\n    raise RuntimeError('no GPU here')\n")
    return f"{file}:build"


def _needs_argument(tmp: Path) -> str:
    file = tmp / "needy_model.py"
    file.write_text(
        "import keras_tuner\n"
        "class Needy(keras_tuner.HyperModel):\n"
        "    def __init__(self, num_classes, depth):\n"
        "        super().__init__()\n"
    )
    return f"{file}:Needy"


@pytest.mark.parametrize("case", list(CASES))
def test_chief_rejects_bad_input(case: str, shared: Path, tmp_path: Path) -> None:
    damage, expected = CASES[case]
    overrides = damage(shared, tmp_path) or {}
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(**overrides)))
    before = snapshot(shared)
    env = {**os.environ, **process_env(CHIEF_ID, "127.0.0.1", free_port(), str(config), str(shared)), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "tuner_job", "--config", str(config), "--shared-dir", str(shared)],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    if case.startswith("corrupt image in a subfolder"):
        assert "more/cashbot_9999.jpg: " in errors[0] and "._" not in errors[0], errors[0]
        assert "skipped 1 hidden image file(s)" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(shared) == before


def test_tunectl_local_rejects_bad_input_before_starting_anything(shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    (shared / "data/toonvision/sellbot").rename(tmp_path / "moved")
    [p.unlink() for p in (shared / "data/toonvision/lawbot").iterdir()]
    before = snapshot(shared)
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", "0"])
    assert result.exit_code == 2, result.output  # bad input: named, exit 2
    assert "lawbot holds no images" in result.output
    assert "started" not in result.output
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tuner", "grad"])
    assert result.exit_code == 2 and "tuner: Input should be" in result.output, result.output
    assert snapshot(shared) == before
