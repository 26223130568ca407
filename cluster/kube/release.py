"""The search as a Helm release: render it, install it, remove it, and the words around it.

Every helm call names the kubeconfig context the pre-flight resolved
(`--kube-context`), so a verb never acts on another cluster than the one it
checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
import yaml

from cluster.errors import BadInputError, LauncherError
from cluster.kube.tools import run_tool
from tuner_job.contract import TENSORBOARD_PORT

__all__ = [
    "CHART_NAME",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RELEASE",
    "default_chart",
    "explain_schema_error",
    "helm_upgrade_args",
    "install",
    "kind_values",
    "notes",
    "render",
    "run_rendering",
    "selector",
    "uninstall",
]

CHART_NAME = "keras-tuner-cluster"
DEFAULT_RELEASE = "tuner"
DEFAULT_NAMESPACE = "default"
_REPO_ROOT = Path(__file__).resolve().parents[2]

# Why the chart's schema refuses these keys: helm says only which rule failed.
_SCHEMA_HINTS = {
    "storage.storageClassName": "required when the chart creates the PVC, since the cluster's default class often "
    "offers only ReadWriteOnce and the PVC would stay Pending: name a class that offers ReadWriteMany "
    "(`kubectl get storageclass`), or set storage.existingClaim (storage.hostPath on kind)",
    "worker.gpus": "a trial trains on one GPU, so a second one per worker would sit idle: give each worker 1 GPU and run more workers",
    "worker.runtimeClassName": "a RuntimeClass name, such as nvidia",
    "tests.runtimeClassName": "a RuntimeClass name, such as nvidia",
}


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


def kind_values(chart: Path) -> Path:
    """The chart's preset for a kind cluster: host folder at /shared, NodePort TensorBoard, no GPUs."""
    return Path(chart) / "ci" / "kind-values.yaml"


def _values_args(values: list[Path], sets: list[str]) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        if "=" not in assignment:
            raise BadInputError(f"--set takes key=value, but got {assignment!r}")
        args += ["--set", assignment]
    return args


def helm_upgrade_args(
    release: str, chart: Path, namespace: str, values: list[Path], sets: list[str], kube_args: list[str] | None = None
) -> list[str]:
    args = ["upgrade", "--install", release, str(chart), "--namespace", namespace, "--create-namespace"]
    return args + _values_args(values, sets) + list(kube_args or [])


def _check_inputs(chart: Path, values: list[Path]) -> None:
    if not (Path(chart) / "Chart.yaml").is_file():
        raise BadInputError(f"no Helm chart at {chart}; pass --chart or run from the repository root")
    for path in values:
        if not Path(path).is_file():
            raise BadInputError(f"values file {path} not found")


def explain_schema_error(stderr: str) -> str | None:
    """helm's schema complaint as one line, each refused key with why; None if it is not one."""
    if "don't meet the specifications of the schema" not in stderr:
        return None
    problems = []
    for line in stderr.splitlines():
        match = re.match(r"^- ([\w.\[\]-]+): (.*)$", line.strip())
        if not match or "as \"if\" was valid" in match.group(2):
            continue
        key, rule = match.groups()
        hint = _SCHEMA_HINTS.get(key)
        problems.append(f"{key}: {rule}" + (f" ({hint})" if hint else ""))
    return "the chart refuses these values: " + "; ".join(problems or ["see `helm template`"])


def run_rendering(args: list[str], failed: str, error: type[LauncherError] = BadInputError) -> str:
    """Run a helm call that renders the chart (`template`, `upgrade --dry-run`) and return what it printed.

    Values the chart's schema refuses raise BadInputError with the keys and
    why (`explain_schema_error`); any other failure raises `error` with
    `failed: <helm's last line>`.
    """
    result = run_tool("helm", *args, check=False)
    if not result.ok:
        explained = explain_schema_error(result.stderr)
        if explained:
            raise BadInputError(explained)
        last = next((line.strip() for line in reversed(result.stderr.splitlines()) if line.strip()), f"exit {result.returncode}")
        raise error(f"{failed}: {last}")
    return result.stdout


def render(release: str, chart: Path, namespace: str, values: list[Path], sets: list[str]) -> list[dict[str, Any]]:
    """`helm template` of what would be installed (no cluster needed): the schema's verdict, and the objects.

    Raises BadInputError (exit 2) with the refused keys and why.
    """
    _check_inputs(chart, values)
    args = ["template", release, str(chart), "--namespace", namespace, *_values_args(values, sets)]
    stdout = run_rendering(args, "the chart does not render with these values")
    try:
        return [doc for doc in yaml.safe_load_all(stdout) if isinstance(doc, dict)]
    except yaml.YAMLError as exc:
        raise LauncherError(f"helm template printed something that is not YAML: {exc}") from None


def install(
    release: str, chart: Path, namespace: str, values: list[Path], sets: list[str], kube_args: list[str] | None = None
) -> str:
    """`helm upgrade --install`; returns the NOTES that Helm printed (may be empty)."""
    _check_inputs(chart, values)
    output = run_tool("helm", *helm_upgrade_args(release, chart, namespace, values, sets, kube_args)).stdout
    head, marker, helm_notes = output.partition("NOTES:")
    first = next((line for line in head.splitlines() if line.strip()), f"release {release!r} deployed")
    typer.echo(first.strip())
    return helm_notes.strip() if marker else ""


def uninstall(release: str, namespace: str, kube_args: list[str] | None = None, wait: bool = False) -> None:
    """`helm uninstall`; with `wait`, until the release's objects (and their pods) are gone."""
    args = ["uninstall", release, "--namespace", namespace, *(kube_args or [])]
    if wait:
        args += ["--wait", "--cascade", "foreground", "--timeout", "300s"]
    run_tool("helm", *args)
    typer.echo(
        f"release {release!r} removed; the shared volume (PVC or kind host folder) is kept, with its data and runs."
    )


def notes(release: str, namespace: str, context: str | None = None) -> str:
    """What to run next: the same hints the chart's NOTES give."""
    ns = "" if namespace == DEFAULT_NAMESPACE else f" --namespace {namespace}"
    rel = "" if release == DEFAULT_RELEASE else f" --release {release}"
    ctx = f" --context {context}" if context else ""
    return "\n".join(
        [
            f"Search {release!r} is running in namespace {namespace!r}.",
            f"  progress:    tunectl status{rel}{ns}{ctx}",
            f"  chief logs:  tunectl logs --chief -f{rel}{ns}{ctx}",
            f"  worker logs: tunectl logs --worker 0 -f{rel}{ns}{ctx}",
            f"               kubectl{ctx} logs -f -n {namespace} -l {selector(release, 'chief')}",
            f"  TensorBoard: tunectl tensorboard{rel}{ns}{ctx}  (on kind: http://127.0.0.1:{TENSORBOARD_PORT})",
        ]
    )
