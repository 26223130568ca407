"""The oracle's port already in use: one line, exit 2, no restart (issue 11, item 6).

The fault: `tunectl local --port P` with P taken gave four 30-line
tracebacks and exit 70 after tens of seconds (the chief crashed, was
restarted three times, crashed again). Now `tunectl local` refuses before it
starts anything, and a chief started as the chart starts it (Kubernetes: the
pod's port taken by another container) exits 2 with the line at once, before
TensorFlow loads; exit 2 is never restarted (by `tunectl local` or the chart's
`podFailurePolicy`).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml

from helpers import error_lines, free_port, run_chief_once, small_config, snapshot


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        yield holder.getsockname()[1]


def test_tunectl_local_refuses_a_taken_port_before_starting_anything(shared: Path, tmp_path: Path, taken_port: int) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    before = snapshot(shared)
    result = CliRunner().invoke(
        app, ["local", "--config", str(config), "--shared-dir", str(shared), "--port", str(taken_port), "--tensorboard-port", "0"]
    )
    assert result.exit_code == 2, result.output
    assert error_lines(result.output) == [
        f"error: port {taken_port} is in use: the oracle cannot bind 127.0.0.1:{taken_port}; stop what holds it, or choose another --port"
    ], result.output
    assert "started" not in result.output and "Traceback" not in result.output
    assert snapshot(shared) == before



def test_tunectl_local_refuses_a_taken_tensorboard_port_too(shared: Path, tmp_path: Path, taken_port: int) -> None:
    """TensorBoard on a taken port used to exit 255 while the search ran on, printing a URL that served another program."""
    from typer.testing import CliRunner

    from cluster.cli import app

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    before = snapshot(shared)
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", str(taken_port)])
    assert result.exit_code == 2, result.output
    assert error_lines(result.output) == [
        f"error: port {taken_port} is in use: TensorBoard cannot bind 127.0.0.1:{taken_port}; stop what holds it, "
        "or choose another --tensorboard-port (0 starts none)"
    ], result.output
    assert "started" not in result.output and snapshot(shared) == before


@pytest.mark.slow
def test_a_chief_whose_port_is_taken_exits_2_at_once(shared: Path, tmp_path: Path, taken_port: int) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    before = snapshot(shared)
    started = time.monotonic()
    result = run_chief_once(shared, config, taken_port)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = error_lines(result.stderr)
    expected = f"error: port {taken_port} is in use: the oracle cannot bind 127.0.0.1:{taken_port}"
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.splitlines()[-1] == "tensorflow not imported"  # it stopped before the slow part of a start-up
    assert snapshot(shared) == before
    assert time.monotonic() - started < 60  # (generous) seconds, not a TensorFlow start-up and three restarts
