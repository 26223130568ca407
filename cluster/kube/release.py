"""The search as a Helm release: install or upgrade it, wait for its chief, remove it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer

from cluster.errors import LauncherError
from cluster.kube.tools import run_tool

__all__ = [
    "CHART_NAME",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RELEASE",
    "TENSORBOARD_NODE_PORT",
    "default_chart",
    "helm_upgrade_args",
    "install",
    "kind_values",
    "notes",
    "on_kind",
    "selector",
    "uninstall",
    "wait_for_chief",
]

CHART_NAME = "keras-tuner-cluster"
DEFAULT_RELEASE = "tuner"
DEFAULT_NAMESPACE = "default"
TENSORBOARD_NODE_PORT = 30606
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_chart() -> Path:
    """`helm/keras-tuner-cluster` in the current folder, else beside the installed package."""
    here = Path("helm") / CHART_NAME
    return here if here.is_dir() else _REPO_ROOT / "helm" / CHART_NAME


def selector(release: str, component: str | None = None, index: int | None = None) -> str:
    """A label selector for the release's objects (the chart's standard labels).

    `index` picks worker i: the Indexed Job labels its pods with their completion index.
    """
    labels = {"app.kubernetes.io/instance": release}
    if component is not None:
        labels["app.kubernetes.io/component"] = component
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
    return ",".join(f"{key}={value}" for key, value in labels.items())


def helm_upgrade_args(
    release: str, chart: Path, namespace: str, values: list[Path], sets: list[str]
) -> list[str]:
    args = ["upgrade", "--install", release, str(chart), "--namespace", namespace, "--create-namespace"]
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        if "=" not in assignment:
            raise LauncherError(f"--set takes key=value, but got {assignment!r}")
        args += ["--set", assignment]
    return args


def on_kind() -> bool:
    """Whether kubectl's current context is a kind cluster (kind names them `kind-<name>`)."""
    try:
        result = run_tool("kubectl", "config", "current-context", check=False)
    except LauncherError:
        return False
    return result.ok and result.stdout.strip().startswith("kind-")


def kind_values(chart: Path) -> Path:
    """The chart's preset for a kind cluster: host folder at /shared, NodePort TensorBoard, no GPUs."""
    return Path(chart) / "ci" / "kind-values.yaml"


def install(release: str, chart: Path, namespace: str, values: list[Path], sets: list[str]) -> str:
    """`helm upgrade --install`; returns the NOTES that Helm printed (may be empty)."""
    if not (Path(chart) / "Chart.yaml").is_file():
        raise LauncherError(f"no Helm chart at {chart}; pass --chart or run from the repository root")
    for path in values:
        if not Path(path).is_file():
            raise LauncherError(f"values file {path} not found")
    output = run_tool("helm", *helm_upgrade_args(release, chart, namespace, values, sets)).stdout
    head, marker, helm_notes = output.partition("NOTES:")
    first = next((line for line in head.splitlines() if line.strip()), f"release {release!r} deployed")
    typer.echo(first.strip())
    return helm_notes.strip() if marker else ""


def wait_for_chief(release: str, namespace: str, timeout_s: float) -> None:
    """Block until the chief pod is Ready (its gRPC health probe answers).

    The Job creates the pod a moment after `helm upgrade` returns, and `kubectl
    wait -l` fails at once while nothing matches, so it is retried until the
    pod exists; `kubectl wait` does the watching itself.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(1, math.ceil(deadline - time.monotonic()))
        result = run_tool(
            "kubectl", "wait", "--for=condition=Ready", "pod",
            "--selector", selector(release, "chief"),
            "--namespace", namespace, f"--timeout={left}s",
            check=False,
        )  # fmt: skip
        if result.ok:
            return
        no_pod = "no matching resources" in (result.stderr + result.stdout)
        if not no_pod or time.monotonic() >= deadline:
            reason = (result.stderr.strip().splitlines() or ["timed out"])[-1]
            raise LauncherError(
                f"the chief of {release!r} is not Ready after {timeout_s:g} s ({reason}); "
                f"see `tunectl status` and `tunectl logs --chief`"
            )
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def notes(release: str, namespace: str) -> str:
    """What to run next: the same hints the chart's NOTES give."""
    ns = "" if namespace == DEFAULT_NAMESPACE else f" --namespace {namespace}"
    rel = "" if release == DEFAULT_RELEASE else f" --release {release}"
    return "\n".join(
        [
            f"Search {release!r} is running in namespace {namespace!r}.",
            f"  progress:    tunectl status{rel}{ns}",
            f"  chief logs:  tunectl logs --chief -f{rel}{ns}",
            f"  worker logs: tunectl logs --worker 0 -f{rel}{ns}",
            f"               kubectl logs -f -n {namespace} -l {selector(release, 'chief')}",
            f"  TensorBoard: tunectl tensorboard{rel}{ns}  (on kind: http://127.0.0.1:6006)",
        ]
    )


def uninstall(release: str, namespace: str) -> None:
    run_tool("helm", "uninstall", release, "--namespace", namespace)
    typer.echo(
        f"release {release!r} removed; the shared volume (PVC or kind host folder) is kept, "
        "with its data and runs."
    )
