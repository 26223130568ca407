"""The Dockerfiles and the shell scripts pass hadolint and shellcheck."""

from __future__ import annotations

import subprocess

import pytest
import tomllib

from chart_helpers import REPO, require_tool

DOCKERFILES = [REPO / "images" / "tuner" / "Dockerfile", REPO / "images" / "tensorboard" / "Dockerfile"]
SHELL_SCRIPTS = sorted((REPO / "scripts").glob("*.sh")) + [REPO / ".ci" / "run"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile) -> None:  # noqa: ANN001
    hadolint = require_tool("hadolint")
    assert dockerfile.is_file()
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    assert SHELL_SCRIPTS
    result = subprocess.run(
        [shellcheck, *map(str, SHELL_SCRIPTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_run_the_contracted_entrypoints() -> None:
    tuner = DOCKERFILES[0].read_text()
    assert 'ENTRYPOINT ["python", "-m", "tuner_job"]' in tuner
    assert "ARG TF_FLAVOUR=gpu" in tuner, "users get the GPU flavour unless they ask for cpu"
    tensorboard = DOCKERFILES[1].read_text()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = {r for r in extras["cpu"] + extras["gpu"] if r.startswith("tensorboard==")}
    assert f'"{pin}"' in tensorboard, "the TensorBoard image runs the version the trials log with"
    for text in (tuner, tensorboard):
        assert "USER 1000:1000" in text
        assert ":latest" not in text


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines, "allow-list: ignore everything, then let the project in"
    assert {"!pyproject.toml", "!tuner_job/"} <= set(lines)
