"""`tunectl doctor`: is every tool the Kubernetes commands call here, and does it answer?"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.errors import LauncherError
from cluster.kube.tools import find_tool, run_tool

__all__ = ["Check", "run_checks"]


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
    "(`docker info`; add yourself to the docker group)",
    "kind": "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/#kubectl",
    "helm": "run `make tools` (helm into .tools/bin), or install it: https://helm.sh/docs/intro/install/",
    "nvidia-smi": "GPUs only: install the NVIDIA driver (https://www.nvidia.com/Download/index.aspx)",
    "nvidia runtime": "GPUs only: install nvidia-container-toolkit and run "
    "`sudo nvidia-ctk runtime configure --runtime=docker --set-as-default` "
    "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html)",
}


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
        return [Check("docker engine", False, f"not answering: {reason}", _FIXES["docker engine"])]
    version, runtimes, driver, driver_status = (info.stdout.strip().split("|", 3) + ["", "", ""])[:4]
    nvidia = "nvidia" in runtimes
    return [
        Check("docker engine", True, f"server {version}", ""),
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
