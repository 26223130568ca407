"""doctor: a missing required tool is named, with its fix, and the exit status is 1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.kube.doctor import project_engine_host

REPO = Path(__file__).resolve().parents[2]

runner = CliRunner()


CLASSIC = 'overlay2|[["Backing Filesystem","extfs"],["Supports d_type","true"]]'
CONTAINERD = 'overlayfs|[["driver-type","io.containerd.snapshotter.v1"]]'


def _all_tools(fake_tools, runtimes: str = '{"runc":{}}', store: str = CLASSIC) -> None:
    info = f"28.2.2|{runtimes}|{store}\n"
    fake_tools.add("docker", (["--version"], "Docker version 28.2.2\n", "", 0), (["info"], info, "", 0))
    fake_tools.add("kind", (["version"], "kind v0.30.0 go1.24 linux/amd64\n", "", 0))
    fake_tools.add("kubectl", (["version"], "Client Version: v1.34.1\n", "", 0))
    fake_tools.add("helm", (["version"], "v3.19.0+g3d8990f\n", "", 0))


def test_doctor_without_kind_names_it_with_the_fix(fake_tools):
    _all_tools(fake_tools)
    (fake_tools.bin / "kind").unlink()

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 1, result.output
    kind_line = next(line for line in result.output.splitlines() if "│ kind" in line)
    assert "MISSING" in kind_line and "not found" in kind_line, result.output
    assert _fix(result.output, "kind") == "installkind:https://kind.sigs.k8s.io/docs/user/quick-start/#installation", result.output
    assert "error: missing or not working: kind" in result.output


def test_doctor_with_everything_but_gpus_passes_with_a_warning(fake_tools):
    _all_tools(fake_tools)

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 0, result.output
    assert "v3.19.0" in result.output and "kind v0.30.0" in result.output
    assert "nvidia-ctk runtime configure" in result.output
    assert "GPU pieces are missing" in result.output


def test_doctor_sees_the_nvidia_runtime(fake_tools):
    _all_tools(fake_tools, runtimes='{"nvidia":{},"runc":{}}')
    fake_tools.add("nvidia-smi", (["--query-gpu=name,driver_version"], "NVIDIA H200, 570.1\n", "", 0))

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 0, result.output
    assert "everything is ready" in result.output
    assert "NVIDIA H200" in result.output


def test_doctor_flags_a_docker_engine_that_does_not_answer(fake_tools):
    _all_tools(fake_tools)
    fake_tools.add(
        "docker",
        (["--version"], "Docker version 28.2.2\n", "", 0),
        (["info"], "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n", 1),
    )

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 1, result.output
    assert "Cannot connect to the Docker daemon" in result.output
    assert "error: missing or not working: docker engine" in result.output


def _line(output: str, tool: str) -> str:
    return next(line for line in output.splitlines() if f"│ {tool}" in line)


def test_doctor_says_which_image_store_docker_uses(fake_tools):
    _all_tools(fake_tools, store=CONTAINERD)

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 0, result.output
    line = _line(result.output, "image store")
    assert "containerd (overlayfs)" in line and "image archive" in result.output, result.output
    assert fake_tools.calls("docker")[-1][:3] == ["docker", "info", "--format"]

    _all_tools(fake_tools, store=CLASSIC)
    result = runner.invoke(app, ["doctor"])
    line = _line(result.output, "image store")
    assert "classic (overlay2)" in line and "kind load docker-image works" in line, result.output
    assert "image archive" not in result.output


def _cells(output: str, tool: str) -> str:
    """The row of `tool` in doctor's table, its folded lines joined and every space removed."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"│ {tool} "))
    rows = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("│  "):  # the next tool's row, or the table's end
            break
        rows.append(line)
    columns = zip(*(line.split("│")[1:-1] for line in rows), strict=True)
    return "|".join("".join("".join(part.split()) for part in column) for column in columns)


def _fix(output: str, tool: str) -> str:
    """The fix doctor prints under its table for `tool`, its folded lines joined and every space removed."""
    lines = output.splitlines()
    start = lines.index("to fix:")
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(f"  {tool}  "))
    indent = len(lines[first]) - len(lines[first][len(f"  {tool}") :].lstrip())
    parts = [lines[first][indent:]]
    for line in lines[first + 1 :]:
        if not line.startswith(" " * indent) or not line.strip():  # the next tool's fix, or the end
            break
        parts.append(line)
    return "".join("".join(part.split()) for part in parts)


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_doctor_fits_the_width_columns_gives(fake_tools, monkeypatch, columns):
    """The fault: doctor printed 200 columns whatever COLUMNS said, so an 80-column terminal wrapped every row."""
    _all_tools(fake_tools)
    (fake_tools.bin / "kind").unlink()
    monkeypatch.setenv("COLUMNS", str(columns))

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 1, result.output
    too_wide = [line for line in result.output.splitlines() if len(line.rstrip()) > columns]
    assert not too_wide, "\n".join(too_wide)
    # Nothing is cut: every fix is there whole, folded at most.
    assert _fix(result.output, "kind") == "installkind:https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    assert "nvidia-ctkruntimeconfigure--runtime=docker--set-as-default" in _fix(result.output, "nvidia runtime")
    if columns >= 100:  # a URL that fits is never broken
        assert "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" in result.output


def test_doctor_names_the_projects_engine_when_docker_host_points_at_it(fake_tools, monkeypatch, tmp_path):
    _all_tools(fake_tools)
    monkeypatch.setenv("KTC_ENGINE_RUN", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 0, result.output
    engine = _cells(result.output, "docker engine")
    assert engine.endswith(f"|ok|server28.2.2atDOCKER_HOST=unix://{tmp_path}/docker.sock(theproject'sengine)"), result.output


def test_doctor_points_at_the_running_project_engine_when_docker_host_is_unset(fake_tools, monkeypatch, tmp_path):
    _all_tools(fake_tools)
    fake_tools.add("docker", (["--version"], "Docker version 28.2.2\n", "", 0), (["info"], "", "Cannot connect to the Docker daemon\n", 1))
    monkeypatch.setenv("KTC_ENGINE_RUN", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    (tmp_path / "docker.sock").touch()

    result = runner.invoke(app, ["doctor"])

    assert result.exit_code == 1, result.output
    assert f"theproject'sengineruns:exportDOCKER_HOST=unix://{tmp_path}/docker.sock" in _fix(result.output, "docker engine")


@pytest.mark.parametrize("run_dir", [None, "/tmp/ktc-elsewhere"])
def test_doctor_and_the_engine_script_agree_on_the_socket(monkeypatch, run_dir):
    env = {k: v for k, v in os.environ.items() if k != "KTC_ENGINE_RUN"} | ({"KTC_ENGINE_RUN": run_dir} if run_dir else {})
    if run_dir:
        monkeypatch.setenv("KTC_ENGINE_RUN", run_dir)
    else:
        monkeypatch.delenv("KTC_ENGINE_RUN", raising=False)

    script = subprocess.run([str(REPO / "scripts" / "docker-engine.sh"), "host"], env=env, capture_output=True, text=True, check=True)

    assert script.stdout.strip() == project_engine_host()
