"""scripts/docker-engine.sh and with-docker-engine.sh on throwaway engines: start, reuse, stop by pid
(no container left running), purge; and the loud skip where no engine answers."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from container_setup import SETUP_TIMEOUT
from docker_pods import Docker

ENGINE = Path(__file__).resolve().parents[2] / "scripts" / "docker-engine.sh"
WITH_ENGINE = ENGINE.with_name("with-docker-engine.sh")


def _engine(env: dict[str, str], action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENGINE), action], env=env, capture_output=True, text=True, timeout=180, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _throwaway(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment for a second engine of our own, beside the session's."""
    run_dir = Path(f"/run/ktc-test-{secrets.token_hex(3)}")  # short: unix socket paths are limited
    env = {**os.environ, "KTC_ENGINE_HOME": str(tmp_path / "engine"), "KTC_ENGINE_RUN": str(run_dir)}
    env.pop("DOCKER_HOST", None)
    env.pop("KTC_REQUIRE_CONTAINERS", None)
    return env, run_dir


@pytest.mark.containers
@pytest.mark.timeout(SETUP_TIMEOUT)
def test_engine_starts_once_and_stops_by_pid_with_its_containers(docker, base_image, tmp_path):
    env, run_dir = _throwaway(tmp_path)
    try:
        started = _engine(env, "start")
        assert started.returncode == 0, started.stderr
        host = started.stdout.strip()
        assert host == f"unix://{run_dir}/docker.sock" and "started dockerd" in started.stderr
        pid = int((run_dir / "dockerd.pid").read_text())
        assert (tmp_path / "engine" / "data").is_dir(), "the data root is the one asked for"

        again = _engine(env, "start")
        assert again.returncode == 0 and "already running" in again.stderr, again.stderr
        assert int((run_dir / "dockerd.pid").read_text()) == pid, "one engine, not two"
        assert _engine(env, "status").stdout.strip() == host

        throwaway = Docker(host)
        saved = subprocess.Popen(["docker", "save", base_image], env=docker.env, stdout=subprocess.PIPE)
        subprocess.run(["docker", "load"], env=throwaway.env, stdin=saved.stdout, capture_output=True, timeout=300, check=True)
        assert saved.wait(60) == 0
        # --stop-timeout 1: sleep, as pid 1, ignores the SIGTERM of the engine's shutdown.
        # The host network, as the tests' pods use: dockerd mounts its namespace under the exec root.
        throwaway("run", "--detach", "--name", "sleeper", "--network", "host", "--stop-timeout", "1", base_image, "sleep", "600", timeout=120)
        sleeper = throwaway.inspect("sleeper")["State"]["Pid"]
        assert _alive(sleeper)

        stopped = _engine(env, "stop")
        assert stopped.returncode == 0 and f"stopped dockerd (pid {pid})" in stopped.stderr, stopped.stderr
        assert not _alive(pid) and not _alive(sleeper), "the engine and its container are gone"
        assert not (run_dir / "docker.sock").exists() and not (run_dir / "dockerd.pid").exists()
        assert str(run_dir) not in Path("/proc/mounts").read_text(), "nothing of the engine stays mounted"
        assert _engine(env, "status").returncode == 1
        assert _engine(env, "purge").returncode == 0 and not (tmp_path / "engine").exists()
    finally:
        _engine(env, "stop")
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.containers
@pytest.mark.timeout(SETUP_TIMEOUT)
def test_with_docker_engine_starts_one_and_stops_it_even_when_the_command_fails(docker, tmp_path):
    env, run_dir = _throwaway(tmp_path)
    seen = tmp_path / "seen"
    try:
        done = subprocess.run(
            [str(WITH_ENGINE), "sh", "-c", f'docker version >/dev/null && echo "$DOCKER_HOST" > {seen}; exit 3'],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 3, done.stderr
        assert seen.read_text().strip() == f"unix://{run_dir}/docker.sock", "the command ran against the new engine"
        assert "started dockerd" in done.stderr and "stopped dockerd" in done.stderr, done.stderr
        assert not (run_dir / "dockerd.pid").exists() and _engine(env, "status").returncode == 1
    finally:
        _engine(env, "purge")
        shutil.rmtree(run_dir, ignore_errors=True)


def test_with_docker_engine_skips_loudly_when_no_engine_answers(tmp_path):
    marker = tmp_path / "ran"
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    env.pop("KTC_REQUIRE_CONTAINERS", None)

    done = subprocess.run([str(WITH_ENGINE), "touch", str(marker)], env=env, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0 and not marker.exists()
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("!!! SKIPPED: no Docker engine here") and "does not answer" in line, done.stderr
    required = subprocess.run([str(WITH_ENGINE), "true"], env={**env, "KTC_REQUIRE_CONTAINERS": "1"}, capture_output=True, timeout=60, check=False)
    assert required.returncode == 1
