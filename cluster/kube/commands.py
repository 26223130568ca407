"""The Kubernetes commands of `tunectl`: up, images, deploy, status, logs,
tensorboard, undeploy, down, doctor, and `data push`.

Each is a thin skin over `cluster.kube.kind`, `.release`, `.k8s`, `.dataset`
and `.doctor`; `register(app)` attaches them to the root app.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Optional

import typer

from cluster.errors import LauncherError, user_errors
from cluster.kube import dataset, kind, release
from cluster.kube.tools import run_tool

__all__ = ["register"]

_REPO_ROOT = Path(__file__).resolve().parents[2]

ClusterName = Annotated[
    str, typer.Option("--name", "--cluster", envvar="TUNECTL_CLUSTER", help="Name of the kind cluster.")
]
SharedDir = Annotated[
    Path,
    typer.Option(
        "--shared-dir",
        envvar="TUNECTL_SHARED_DIR",
        help="Host folder that kind mounts at /shared on every node (the shared volume).",
    ),
]
Release = Annotated[str, typer.Option("--release", "-r", envvar="TUNECTL_RELEASE", help="Helm release name.")]
Namespace = Annotated[
    str, typer.Option("--namespace", "-n", envvar="TUNECTL_NAMESPACE", help="Kubernetes namespace.")
]
Context = Annotated[
    Optional[str], typer.Option("--context", envvar="TUNECTL_CONTEXT", help="kubeconfig context (default: current).")
]


def up(
    name: ClusterName = kind.DEFAULT_CLUSTER,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", exists=True, dir_okay=False, help="A kind config to use instead of the bundled one."),
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="GPU workers, the nvkind way (see docs/kubernetes.md).")] = False,
    shared_dir: SharedDir = Path("shared"),
) -> None:
    """Create a local kind cluster (1 control-plane, 2 workers) with the shared host folder."""
    with user_errors():
        kind.create_cluster(name, shared_dir, gpu=gpu, template=config)


def down(name: ClusterName = kind.DEFAULT_CLUSTER) -> None:
    """Delete the kind cluster (the shared host folder stays)."""
    with user_errors():
        kind.delete_cluster(name)


def images(
    tag: Annotated[str, typer.Option("--tag", "-t", envvar="TUNECTL_TAG", help="Tag of both images.")] = kind.DEFAULT_TAG,
    cluster: Annotated[
        Optional[str],
        typer.Option("--cluster", envvar="TUNECTL_CLUSTER", help="kind cluster to load them into."),
    ] = kind.DEFAULT_CLUSTER,
    no_load: Annotated[bool, typer.Option("--no-load", help="Only build; do not load into kind.")] = False,
    context: Annotated[
        Optional[Path], typer.Option("--context-dir", help="Build context (default: the repository root).")
    ] = None,
) -> None:
    """Build the tuner and TensorBoard images and load them into the kind cluster."""
    with user_errors():
        root = context or (_REPO_ROOT if (_REPO_ROOT / "images").is_dir() else Path.cwd())
        built = kind.build_and_load_images(tag, None if no_load else cluster, root)
        typer.echo("images: " + ", ".join(built))


def deploy(
    values: Annotated[
        Optional[list[Path]], typer.Option("--values", "-f", help="Helm values file (repeatable).")
    ] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Helm value override key=value (repeatable).")
    ] = None,
    release_name: Release = release.DEFAULT_RELEASE,
    namespace: Namespace = release.DEFAULT_NAMESPACE,
    chart: Annotated[Optional[Path], typer.Option("--chart", help="Chart folder.")] = None,
    timeout: Annotated[
        int, typer.Option("--timeout", help="Seconds to wait for the chief pod to be Ready.")
    ] = 600,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once Helm has applied the release.")] = False,
    kind_preset: Annotated[
        Optional[bool],
        typer.Option(
            "--kind/--no-kind",
            help="Put the chart's ci/kind-values.yaml (host folder, NodePort, no GPUs) under your values; "
            "default: when kubectl's current context is a kind cluster.",
        ),
    ] = None,
) -> None:
    """helm upgrade --install the search, wait for its chief, print where to look next."""
    with user_errors():
        chart_dir = chart or release.default_chart()
        layered = list(values or [])
        if kind_preset if kind_preset is not None else release.on_kind():
            preset = release.kind_values(chart_dir)
            if preset.is_file():
                typer.echo(f"kind cluster: using {preset} under your values")
                layered.insert(0, preset)
            elif kind_preset:
                raise LauncherError(f"--kind: the chart has no {preset}")
        helm_notes = release.install(release_name, chart_dir, namespace, layered, set_ or [])
        if not no_wait:
            typer.echo(f"waiting up to {timeout} s for the chief pod to be Ready ...")
            release.wait_for_chief(release_name, namespace, timeout)
        if helm_notes:
            typer.echo(helm_notes + "\n")
        typer.echo(release.notes(release_name, namespace))


def undeploy(release_name: Release = release.DEFAULT_RELEASE, namespace: Namespace = release.DEFAULT_NAMESPACE) -> None:
    """helm uninstall the search; the shared volume (PVC or host folder) is kept."""
    with user_errors():
        release.uninstall(release_name, namespace)


def status(
    release_name: Release = release.DEFAULT_RELEASE,
    namespace: Namespace = release.DEFAULT_NAMESPACE,
    shared_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--shared-dir",
            envvar="TUNECTL_SHARED_DIR",
            help="The kind host folder, to read each run's progress from runs/<run>/status.json.",
        ),
    ] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run (default: all).")] = None,
    context: Context = None,
) -> None:
    """The search's Jobs and pods, and its progress: trials done of max, best so far."""
    from rich.console import Console

    from cluster.kube.k8s import connect
    from cluster.kube.status import progress_rows, status_tables

    with user_errors():
        cluster = connect(namespace, context)
        jobs, pods = cluster.jobs(release_name), cluster.pods(release_name)
        progress = progress_rows(shared_dir, run) if shared_dir is not None else None
        console = Console()
        if not jobs and not pods:
            console.print(f"no Jobs or pods for release {release_name!r} in namespace {namespace!r}.")
        for table in status_tables(jobs, pods, progress):
            console.print(table)
        if progress is None:
            console.print("progress: unknown here; pass --shared-dir with the kind host folder to read it.")


def logs(
    chief: Annotated[bool, typer.Option("--chief", help="The chief's log.")] = False,
    worker: Annotated[Optional[int], typer.Option("--worker", "-w", min=0, help="Worker i's log.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming while the pod runs.")] = False,
    tail: Annotated[Optional[int], typer.Option("--tail", min=0, help="Only the last N lines.")] = None,
    release_name: Release = release.DEFAULT_RELEASE,
    namespace: Namespace = release.DEFAULT_NAMESPACE,
    context: Context = None,
) -> None:
    """Print (or follow) the chief's or a worker's log."""
    from cluster.kube.k8s import connect

    with user_errors():
        if chief == (worker is not None):
            raise LauncherError("pass exactly one of --chief or --worker I")
        cluster = connect(namespace, context)
        pod = cluster.pod_for(release_name, "chief" if chief else "worker", worker)
        cluster.write_logs(pod.metadata.name, follow=follow, tail=tail)


def tensorboard_answers(url: str) -> bool:
    """Whether something serves `url`: kind maps TensorBoard's NodePort to 127.0.0.1:6006."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tensorboard(
    release_name: Release = release.DEFAULT_RELEASE,
    namespace: Namespace = release.DEFAULT_NAMESPACE,
    port: Annotated[int, typer.Option("--port", help="Local port for the port-forward.")] = 6006,
) -> None:
    """Print the TensorBoard URL; port-forward its Service when the kind mapping does not answer."""
    with user_errors():
        if tensorboard_answers("http://127.0.0.1:6006"):
            typer.echo("TensorBoard: http://127.0.0.1:6006")
            return
        services = run_tool(
            "kubectl", "get", "service", "--namespace", namespace,
            "--selector", release.selector(release_name, "tensorboard"),
            "--output", "jsonpath={.items[*].metadata.name}",
        ).stdout.split()  # fmt: skip
        if not services:
            raise LauncherError(f"no TensorBoard Service for release {release_name!r} in namespace {namespace!r}")
        typer.echo(f"TensorBoard: http://127.0.0.1:{port}  (port-forwarding svc/{services[0]}; Ctrl-C stops it)")
        run_tool("kubectl", "port-forward", "--namespace", namespace, f"svc/{services[0]}", f"{port}:6006", stream=True)


def doctor() -> None:
    """Check docker (and its engine), kind, kubectl, helm, and the optional NVIDIA pieces."""
    from rich.console import Console
    from rich.table import Table

    from cluster.kube.doctor import run_checks

    checks = run_checks()
    table = Table(title="tunectl doctor", title_justify="left")
    for column in ("tool", "status", "found / version", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        mark = "ok" if check.ok else ("MISSING" if check.required else "warning")
        table.add_row(check.tool, mark, check.detail, check.fix)
    console = Console()
    # Piped or captured output would wrap the fixes at 80 columns; keep URLs whole.
    (console if console.is_terminal else Console(width=200)).print(table)
    missing = [c.tool for c in checks if c.required and not c.ok]
    if missing:
        typer.echo(f"error: missing or not working: {', '.join(missing)}", err=True)
        raise typer.Exit(1)
    if any(not c.ok for c in checks):
        typer.echo("Kubernetes tools are ready; the GPU pieces are missing (CPU-only clusters work).")
    else:
        typer.echo("everything is ready.")


def push(
    source: Annotated[Path, typer.Argument(help="Image folder: <class>/*.png|jpg.", file_okay=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="Dataset name: data/<name> (default: the folder's name).")] = None,
    shared_dir: SharedDir = Path("shared"),
    via_pod: Annotated[
        bool, typer.Option("--via-pod", help="Copy through a helper pod and the PVC, even if the host folder exists.")
    ] = False,
    pvc: Annotated[Optional[str], typer.Option("--pvc", help="The shared PVC (default: found by the release's labels).")] = None,
    release_name: Release = release.DEFAULT_RELEASE,
    namespace: Namespace = release.DEFAULT_NAMESPACE,
    helper_image: Annotated[str, typer.Option("--helper-image", help="Image of the helper pod (needs tar).")] = "busybox:1.36",
) -> None:
    """Copy a dataset onto the shared volume, at data/<name>.

    Into the kind host folder when it exists here (`tunectl up` made it);
    otherwise through a helper pod that mounts the release's PVC.
    """
    with user_errors():
        dataset_name = name or source.resolve().name
        if not via_pod and shared_dir.is_dir():
            target = dataset.copy_to_host_folder(source, shared_dir, dataset_name)
            typer.echo(f"copied {source} to {target}")
        else:
            claim = pvc or dataset.find_pvc(release_name, namespace)
            dataset.copy_via_pod(source, dataset_name, claim, namespace, helper_image)
        typer.echo(f"use it with `data: data/{dataset_name}` in search.yaml")


def _data_group(app: typer.Typer) -> typer.Typer:
    """The root app's `data` group (cluster/data.py's, registered before us), or a new one."""
    for group in app.registered_groups:
        names = {getattr(group.name, "value", group.name), getattr(group.typer_instance.info.name, "value", None)}
        if "data" in names:
            return group.typer_instance
    data_app = typer.Typer(name="data", no_args_is_help=True, help="Datasets on the shared volume.")
    app.add_typer(data_app, name="data")
    return data_app


def register(app: typer.Typer) -> None:
    """Attach the Kubernetes commands to `app`, and `push` to its `data` group."""
    for command in (up, images, deploy, status, logs, tensorboard, undeploy, down, doctor):
        app.command(rich_help_panel="Kubernetes")(command)
    _data_group(app).command("push")(push)
