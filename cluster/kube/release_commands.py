"""The verbs that act on a release in a cluster: deploy, scale, undeploy, status, logs, tensorboard, data push.

Each starts with the same pre-flight (`cluster.kube.preflight`): the context
(`--context`, TUNECTL_CONTEXT), its server answering, the release found or
not; then stays a thin skin over `deploy`, `release`, `k8s` and `dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.errors import BadInputError, LauncherError, user_errors
from cluster.kube import dataset, kind, release
from cluster.kube.options import (
    DEFAULT_NAMESPACE,
    DEFAULT_RELEASE,
    ChartDir,
    Context,
    LocalShared,
    Namespace,
    Release,
    SetValues,
    ValuesFiles,
)  # fmt: skip
from cluster.kube.preflight import preflight
from cluster.kube.tools import run_tool
from cluster.tensorboard_probe import Answer, probe
from tuner_job.contract import TENSORBOARD_PORT, tensorboard_title

__all__ = ["deploy", "logs", "push", "scale", "status", "tensorboard", "undeploy"]


def deploy(
    values: ValuesFiles = None,
    set_: SetValues = None,
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    chart: ChartDir = None,
    timeout: Annotated[
        int, typer.Option("--timeout", metavar="SECONDS", help="Seconds to wait for the chief pod to be Ready.")
    ] = 600,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once Helm has applied the release.")] = False,
    kind_preset: Annotated[
        bool | None,
        typer.Option(
            "--kind/--no-kind",
            help="Put the chart's ci/kind-values.yaml (host folder, NodePort, no GPUs) under your values; "
            "default: when the context is a kind cluster.",
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Remove an existing release first (its Jobs cannot change); the shared volume stays."),
    ] = False,
    context: Context = None,
) -> None:
    """Install the search (helm), wait for its chief, print where to look next."""
    from cluster.kube.deploy import deploy as run_deploy

    with user_errors():
        pf = preflight(release_name, namespace, context, need_release=False)
        run_deploy(
            pf, chart or release.default_chart(), list(values or []), list(set_ or []),
            kind_preset=kind_preset, replace=replace, wait=not no_wait, timeout_s=timeout, context_flag=context,
        )  # fmt: skip


def scale(
    workers: Annotated[
        int, typer.Option("--workers", "-w", metavar="N", min=1, help="The new worker count (the chart allows up to 10000).")
    ],
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    chart: Annotated[Path | None, typer.Option("--chart", metavar="DIR", help="The chart the release was deployed from.")] = None,
    context: Context = None,
) -> None:
    """Grow or shrink the workers of the running search in place (Kubernetes 1.27+); the chief keeps running."""
    from cluster.kube.scale import scale as run_scale

    with user_errors():
        pf = preflight(release_name, namespace, context, need_release=True)
        run_scale(pf, chart or release.default_chart(), workers)


def undeploy(release_name: Release = DEFAULT_RELEASE, namespace: Namespace = DEFAULT_NAMESPACE, context: Context = None) -> None:
    """helm uninstall the search; the shared volume (PVC or host folder) is kept."""
    with user_errors():
        pf = preflight(release_name, namespace, context, need_release=True)
        release.uninstall(release_name, namespace, pf.kube_args("--kube-context"))


def status(
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    shared_dir: LocalShared = None,
    run: Annotated[str | None, typer.Option("--run", metavar="NAME", help="Only this run (default: all).")] = None,
    context: Context = None,
) -> None:
    """The search's Jobs, pods and volume, and its progress: trials done of max, best so far."""
    from cluster.console import make_console
    from cluster.kube.status import claim_names, pending_claim_line, progress_rows, status_tables, worker_count_line

    with user_errors():
        pf = preflight(release_name, namespace, context, need_release=True)
        cluster = pf.cluster
        jobs, pods = cluster.jobs(release_name), cluster.pods(release_name)
        if shared_dir is None:
            shared_dir = _kind_folder(pf.context)
        progress = progress_rows(shared_dir, run) if shared_dir is not None and shared_dir.is_dir() else None
        console = make_console()
        if not jobs and not pods:
            console.print(f"no Jobs or pods for release {release_name!r} in namespace {namespace!r}.")
        for table in status_tables(jobs, pods, progress):
            console.print(table)
        workers = worker_count_line(jobs, pods)
        if workers:
            typer.echo(workers)
        for claim in sorted({name for job in jobs for name in claim_names(job)}):
            pvc = cluster.claim(claim)
            if pvc is None:
                typer.echo(f"PVC {claim} does not exist: the pods cannot start without it")
            elif pvc.status and pvc.status.phase == "Pending":
                typer.echo(pending_claim_line(pvc, cluster.warnings_for("PersistentVolumeClaim", claim)))
        if progress is None:
            typer.echo("progress: unknown here; pass --shared-dir with a local copy of the shared volume to read it.")


def logs(
    chief: Annotated[bool, typer.Option("--chief", help="The chief's log.")] = False,
    worker: Annotated[int | None, typer.Option("--worker", "-w", metavar="I", min=0, help="Worker I's log.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming while the pod runs.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", metavar="N", min=0, help="Only the last N lines.")] = None,
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    context: Context = None,
) -> None:
    """Print (or follow) the chief's or a worker's log."""
    with user_errors():
        if chief == (worker is not None):
            raise BadInputError("pass exactly one of --chief or --worker I")
        pf = preflight(release_name, namespace, context, need_release=True)
        pod = pf.cluster.pod_for(release_name, "chief" if chief else "worker", worker)
        pf.cluster.write_logs(pod.metadata.name, follow=follow, tail=tail)


def _runs_note(answer: Answer) -> str:
    trials = answer.trials_by_run()
    if not trials:
        return "no trial logs yet"
    return "logs of " + ", ".join(f"run {run}: {count} trials" for run, count in trials.items())


def tensorboard(
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Local port for the port-forward.")] = TENSORBOARD_PORT,
    context: Context = None,
) -> None:
    """Print the release's TensorBoard URL (checked: it is that release's TensorBoard); port-forward where kind maps none."""
    with user_errors():
        pf = preflight(release_name, namespace, context, need_release=True)
        services = pf.cluster.services(release_name, "tensorboard")
        if not services:
            raise LauncherError(
                f"no TensorBoard Service for release {release_name!r} in namespace {namespace!r} (tensorboard.enabled=false?)"
            )
        service = services[0]
        title = tensorboard_title(namespace, release_name)
        on_kind = kind.cluster_of_context(pf.context)
        node_port = next((p.node_port for p in (service.spec.ports or []) if p.node_port), None) if service.spec else None
        address = kind.published_address(on_kind, node_port) if on_kind and node_port else None
        if address is not None:
            answer = probe(f"http://{address}")
            if answer.is_release(title):
                typer.echo(f"TensorBoard: {answer.url}  ({_runs_note(answer)})")
                return
            if answer.answers:
                raise LauncherError(
                    f"{answer.url} (kind's mapping of TensorBoard's NodePort {node_port}) answers, but it is {answer.what()}, "
                    f"not release {release_name!r}'s TensorBoard; stop that program, or port-forward: `tunectl tensorboard --port 16006`"
                )
            typer.echo(f"{answer.url} does not answer yet (is the TensorBoard pod ready?); port-forwarding instead", err=True)
        taken = probe(f"http://127.0.0.1:{port}", timeout=1.0)
        if taken.answers:
            raise BadInputError(f"local port {port} is taken by {taken.what()}; pick a free one with --port PORT")
        name = service.metadata.name
        typer.echo(f"TensorBoard: http://127.0.0.1:{port}  (port-forwarding svc/{name}; Ctrl-C stops it)")
        run_tool(
            "kubectl", "port-forward", "--namespace", namespace, *pf.kube_args(), f"svc/{name}", f"{port}:{TENSORBOARD_PORT}", stream=True
        )  # fmt: skip


def push(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="Image folder: <class>/*.png|jpg.")],
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Dataset name: data/<NAME> (default: the folder's name).")
    ] = None,
    shared_dir: LocalShared = None,
    via_pod: Annotated[
        bool, typer.Option("--via-pod", help="Copy through a helper pod and the PVC, even on kind.")
    ] = False,
    pvc: Annotated[
        str | None, typer.Option("--pvc", metavar="NAME", help="The shared PVC (default: the release's).")
    ] = None,
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    context: Context = None,
    helper_image: Annotated[
        str, typer.Option("--helper-image", metavar="IMAGE", help="Image of the helper pod (needs sh and tar).")
    ] = "busybox:1.36",
) -> None:
    """Copy a dataset onto the shared volume, at data/<name>.

    The folder must hold <class>/*.png|jpg (2 classes or more); only those
    images are copied. On kind: into the host folder the nodes mount; on
    another cluster: through a helper pod that mounts the release's PVC.
    """
    with user_errors():
        files = dataset.check_layout(source)
        dataset_name = name or source.resolve().name
        if shared_dir is not None and not via_pod:
            target = dataset.copy_to_host_folder(files, shared_dir, dataset_name)
            typer.echo(f"copied {sum(map(len, files.values()))} images in {len(files)} classes to {target}")
        else:
            pf = preflight(release_name, namespace, context, need_release=False)
            on_kind = None if via_pod else kind.cluster_of_context(pf.context)
            if on_kind is not None:
                target = dataset.copy_to_host_folder(files, kind.shared_folder(on_kind), dataset_name)
                typer.echo(
                    f"copied {sum(map(len, files.values()))} images in {len(files)} classes to {target} "
                    f"(/shared on kind cluster {on_kind!r})"
                )
            else:
                if pvc is None:
                    pf.require_release()
                claim, owner = dataset.release_volume(pf.cluster, release_name) if pf.release else (pvc, dataset.DEFAULT_OWNER)
                dataset.copy_via_pod(files, dataset_name, pvc or claim, namespace, helper_image, owner, pf.kube_args())
        typer.echo(f"use it with `data: data/{dataset_name}` in search.yaml")


def _kind_folder(context: str) -> Path | None:
    """The host folder a kind context's nodes mount at /shared, if any: where `status` reads progress."""
    on_kind = kind.cluster_of_context(context)
    if on_kind is None:
        return None
    try:
        return kind.shared_folder(on_kind)
    except LauncherError:
        return None
