"""A real Docker engine, the local base image and both images, once per session.

- `docker`: the engine named by DOCKER_HOST when that is set (`make
  test-containers` sets it: scripts/with-docker-engine.sh starts and stops
  the engine around pytest); otherwise the project's private engine, started
  by `scripts/docker-engine.sh start` (which installs docker.io when missing)
  and stopped at the end of the session if this session started it. When no
  engine can be had, every test here is skipped and the session ends with one
  loud line saying why (KTC_REQUIRE_CONTAINERS=1 makes that a failure).
- `base_image`: `KTC_BASE_IMAGE` if set (a machine that can pull
  python:3.11-slim), else the local Debian base from `scripts/base-image.sh`.
- `images`: both images, built by `tunectl images --no-load` from the
  repository's Dockerfiles with that base and TF_FLAVOUR=cpu.

The chart's own helpers (`chart_helpers`: `helm template`, env resolution)
live in tests/chart; that folder goes on sys.path so that the converter uses
the very functions the chart tests use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.kube.doctor import project_engine_host

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

from container_setup import BASE_TIMEOUT, BUILD_TIMEOUT, ENGINE_TIMEOUT, IMAGES, TAG  # noqa: E402
from docker_pods import Docker, PodRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "scripts" / "docker-engine.sh"
BASE = REPO / "scripts" / "base-image.sh"

_skip_reason: list[str] = []


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _no_engine(reason: str) -> None:
    _skip_reason[:] = [reason]
    if os.environ.get("KTC_REQUIRE_CONTAINERS") == "1":
        pytest.fail(f"KTC_REQUIRE_CONTAINERS=1 and no Docker engine: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The loud line, last of all the output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if _skip_reason and reporter is not None:
        reporter.write_line(
            f"!!! CONTAINER TESTS SKIPPED: no Docker engine ({_skip_reason[0]}); "
            "the images and the chart's pods were NOT tested in containers !!!",
            red=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """The engine (see the module docstring); stopped at the end if this session started it."""
    if _skip_reason:
        _no_engine(_skip_reason[0])
    host = os.environ.get("DOCKER_HOST")
    started = False
    if not host:
        try:
            done = subprocess.run([str(ENGINE), "start"], capture_output=True, text=True, timeout=ENGINE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            _no_engine(f"scripts/docker-engine.sh start took over {ENGINE_TIMEOUT} s")
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            _no_engine(_last_line(done.stderr) or f"scripts/docker-engine.sh start exited {done.returncode}")
        host = _last_line(done.stdout)
        started = "started dockerd" in done.stderr
    engine = Docker(host, private=host == project_engine_host())
    try:
        if not engine.answers():
            _no_engine(f"DOCKER_HOST={host} does not answer")
        yield engine
    finally:
        if started:
            subprocess.run([str(ENGINE), "stop"], timeout=180, check=False)


@pytest.fixture(scope="session")
def base_image(docker: Docker) -> str:
    """The PYTHON_IMAGE build argument of both images."""
    if os.environ.get("KTC_BASE_IMAGE"):
        return os.environ["KTC_BASE_IMAGE"]
    started = time.monotonic()
    # debootstrap's own limit inside ours, so that the script, not our kill, ends it (and cleans up).
    env = {"KTC_BASE_TIMEOUT": str(BASE_TIMEOUT - 60), **docker.env}
    done = subprocess.run([str(BASE)], env=env, capture_output=True, text=True, timeout=BASE_TIMEOUT, check=False)
    assert done.returncode == 0, f"scripts/base-image.sh failed:\n{done.stderr[-3000:]}"
    print(f"\nbase image {_last_line(done.stdout)} ready in {time.monotonic() - started:.0f} s")
    return _last_line(done.stdout)


@pytest.fixture(scope="session")
def images(docker: Docker, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`tunectl images --no-load`: both images from the repository's Dockerfiles; {"tuner": ref, "tensorboard": ref}."""
    log = tmp_path_factory.mktemp("build") / "tunectl-images.log"
    command = [
        sys.executable, "-m", "cluster", "images", "--no-load", "--tag", TAG,
        "--tf-flavour", "cpu", "--base-image", base_image, "--network", "host",
    ]  # fmt: skip
    started = time.monotonic()
    with open(log, "w") as out:
        try:
            done = subprocess.run(command, env=docker.env, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, check=False, cwd=REPO)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tunectl images took over {BUILD_TIMEOUT} s; log: {log}")
    text = log.read_text(errors="replace")
    assert done.returncode == 0, f"tunectl images failed:\n{text[-4000:]}"
    assert f"images: {IMAGES['tuner']}, {IMAGES['tensorboard']}" in text, text[-2000:]
    print(f"\nboth images built in {time.monotonic() - started:.0f} s (log: {log})")
    if docker.private:
        # Our own engine: drop the containers that failed build steps leave. Not the
        # untagged images: the dependencies' stage is one, and it is the pip cache.
        docker("container", "prune", "--force", timeout=300, check=False)
    return dict(IMAGES)


@pytest.fixture
def pods(docker: Docker) -> Iterator[PodRunner]:
    """A PodRunner whose containers are all removed at the end of the test, even when it fails."""
    runner = PodRunner(docker)
    try:
        yield runner
    finally:
        runner.close()
