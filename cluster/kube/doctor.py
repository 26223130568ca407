"""`tunectl doctor`: is every tool the Kubernetes commands call here, and does it answer?"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.errors import LauncherError
from cluster.kube.tools import find_tool, run_tool

__all__ = ["Check", "print_report", "project_engine_host", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One line of the report. A failed required check makes `doctor` exit 1; an optional one warns."""

    tool: str
    ok: bool
    detail: str
    fix: str
    required: bool = True


_FIXES = {
    "docker": "install Docker Engine: https://docs.docker.com/engine/install/",
    "docker engine": "start the Docker daemon (`sudo systemctl start docker`) and check you may use it "
    "(`docker info`; add yourself to the docker group), or start a private one: "
    "`sudo scripts/docker-engine.sh start` and export the DOCKER_HOST it prints",
    "kind": "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/#kubectl",
    "helm": "run `make tools` (helm into .tools/bin), or install it: https://helm.sh/docs/intro/install/",
    "nvidia-smi": "GPUs only: install the NVIDIA driver (https://www.nvidia.com/Download/index.aspx)",
    "nvidia runtime": "GPUs only: install nvidia-container-toolkit and run "
    "`sudo nvidia-ctk runtime configure --runtime=docker --set-as-default` "
    "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html)",
}


def project_engine_host() -> str:
    """The DOCKER_HOST of the project's private engine: `scripts/docker-engine.sh host` (same KTC_ENGINE_RUN)."""
    return f"unix://{Path(os.environ.get('KTC_ENGINE_RUN', '/run/keras-tuner-cluster')) / 'docker.sock'}"


def _engine_address() -> str:
    host = os.environ.get("DOCKER_HOST")
    if not host:
        return "the default socket"
    if host == project_engine_host():
        return f"DOCKER_HOST={host} (the project's engine)"
    return f"DOCKER_HOST={host}"


def _engine_fix() -> str:
    """The usual fix, or pointing DOCKER_HOST at the project's engine when that one runs."""
    socket = project_engine_host().removeprefix("unix://")
    if not os.environ.get("DOCKER_HOST") and Path(socket).exists():
        return f"the project's engine runs: export DOCKER_HOST=unix://{socket}  (eval \"$(scripts/docker-engine.sh env)\")"
    return _FIXES["docker engine"]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _version(tool: str, *args: str, required: bool = True) -> Check:
    if find_tool(tool) is None:
        return Check(tool, False, "not found", _FIXES[tool], required)
    try:
        result = run_tool(tool, *args, check=False, timeout=20)
    except LauncherError as exc:
        return Check(tool, False, str(exc), _FIXES[tool], required)
    text = _first_line(result.stdout) or _first_line(result.stderr)
    if not result.ok:
        return Check(tool, False, f"found, but `{tool} {' '.join(args)}` failed: {text}", _FIXES[tool], required)
    return Check(tool, True, text or "found", "", required)


def image_store(driver: str, driver_status: str) -> Check:
    """Which image store the engine uses: kind loads from the classic one directly, from containerd's by archive."""
    if "io.containerd.snapshotter" in driver_status:
        return Check(
            "image store", True,
            f"containerd ({driver}): `tunectl images` loads into kind through a one-platform image archive "
            "(kind load docker-image fails on it, kubernetes-sigs/kind#3795)", "", required=False,
        )  # fmt: skip
    return Check("image store", True, f"classic ({driver or 'unknown driver'}): kind load docker-image works", "", required=False)


def _docker_engine() -> list[Check]:
    """The daemon answers, its image store, and (optionally) the nvidia runtime."""
    if find_tool("docker") is None:
        return [Check("docker engine", False, "docker not found", _FIXES["docker engine"])]
    fields = "{{.ServerVersion}}|{{json .Runtimes}}|{{.Driver}}|{{json .DriverStatus}}"
    try:
        info = run_tool("docker", "info", "--format", fields, check=False, timeout=20)
    except LauncherError as exc:
        return [Check("docker engine", False, str(exc), _FIXES["docker engine"])]
    if not info.ok or not info.stdout.strip():
        reason = _first_line(info.stderr) or "no answer"
        return [Check("docker engine", False, f"not answering at {_engine_address()}: {reason}", _engine_fix())]
    version, runtimes, driver, driver_status = (info.stdout.strip().split("|", 3) + ["", "", ""])[:4]
    nvidia = "nvidia" in runtimes
    return [
        Check("docker engine", True, f"server {version} at {_engine_address()}", ""),
        image_store(driver, driver_status),
        Check(
            "nvidia runtime",
            nvidia,
            "registered with docker" if nvidia else "not registered with docker",
            "" if nvidia else _FIXES["nvidia runtime"],
            required=False,
        ),
    ]


def run_checks() -> list[Check]:
    checks = [_version("docker", "--version")]
    engine = _docker_engine()
    checks += engine[:2]
    checks += [
        _version("kind", "version"),
        _version("kubectl", "version", "--client"),
        _version("helm", "version", "--short"),
        _version("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", required=False),
    ]
    checks += engine[2:] or [
        Check("nvidia runtime", False, "unknown: docker engine not answering", _FIXES["nvidia runtime"], False)
    ]
    return checks


def print_report(checks: list[Check], console: Any) -> None:
    """The checks as a table (tool, status, what was found), then each fix under it, folded to the console's width.

    The fixes sit below the table rather than in a fourth column: at 80
    columns a column of long commands and URLs would fold every word.
    """
    from rich.table import Table

    table = Table(title="tunectl doctor", title_justify="left")
    for column in ("tool", "status", "found / version"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.tool, "ok" if check.ok else ("MISSING" if check.required else "warning"), check.detail)
    console.print(table, markup=False, highlight=False)
    fixes = [check for check in checks if not check.ok and check.fix]
    if not fixes:
        return
    console.print("to fix:", highlight=False)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for check in fixes:
        grid.add_row(f"  {check.tool}", check.fix)
    console.print(grid, markup=False, highlight=False)
