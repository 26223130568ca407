"""`tunectl deploy`: from values to a chief that serves, naming each pitfall of a first deploy.

In order, before anything changes in the cluster:

1. the values are rendered locally (`helm template`): a value the chart's
   schema refuses is one line with the key and why (exit 2);
2. on kind, the cluster the context points at is the one the images were
   loaded into, and every node mounts the host folder at /shared;
3. an existing release is not upgraded (its Jobs' pod templates cannot
   change, helm/helm#7725): `--replace` removes it first, else the verb says
   what to do, and a search that already completed is reported as such.

Then `helm upgrade --install`, and the wait for the chief: Ready, or done
already, or waiting for its dataset (the next step is `tunectl data push`),
or stuck, said in one line: a Pending PVC with its events, an image that
cannot be pulled, a crash loop, an unschedulable pod.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml

from cluster.errors import BadInputError, LauncherError
from cluster.kube import kind, release
from cluster.kube.preflight import Preflight
from cluster.kube.status import chief_job_state, claim_names, newest_pod, pending_claim_line
from tuner_job.chief_startup import DATA_WAIT_MARKER

__all__ = ["deploy", "wait_for_chief", "wait_until_gone"]

_CANNOT_START = {
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
    "RunContainerError",
}  # fmt: skip


def _images(objects: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec", {}) if obj.get("kind") in ("Job", "Deployment") else {}
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            if container.get("image") and container["image"] not in found:
                found.append(container["image"])
    return found


def _uses_host_folder(objects: list[dict[str, Any]]) -> bool:
    for obj in objects:
        if obj.get("kind") == "Job":
            volumes = obj["spec"]["template"]["spec"].get("volumes", [])
            if any(v.get("name") == "shared" and "hostPath" in v for v in volumes):
                return True
    return False


def _dataset(objects: list[dict[str, Any]]) -> str:
    for obj in objects:
        text = (obj.get("data") or {}).get("search.yaml") if obj.get("kind") == "ConfigMap" else None
        if text:
            return str((yaml.safe_load(text) or {}).get("data", "data/toonvision"))
    return "data/toonvision"


def _check_kind(cluster: str, objects: list[dict[str, Any]]) -> None:
    if _uses_host_folder(objects):
        folder = kind.shared_folder(cluster)
        typer.echo(f"kind cluster {cluster!r}: every node mounts {folder} at /shared")
    missing = kind.missing_images(cluster, _images(objects))
    if missing:
        nodes = sorted({node for where in missing.values() for node in where})
        raise LauncherError(
            f"{'image' if len(missing) == 1 else 'images'} {', '.join(sorted(missing))} not in kind cluster {cluster!r} "
            f"(missing on {', '.join(nodes)}), the cluster this context deploys to: "
            f"`tunectl images --cluster {cluster}` builds and loads them"
        )


def _chief_job(jobs: list[Any]) -> Any | None:
    return next((j for j in jobs if (j.metadata.labels or {}).get("app.kubernetes.io/component") == "chief"), None)


def wait_until_gone(pf: Preflight, timeout_s: float = 180, sleep: Callable[[float], None] = time.sleep) -> None:
    """Block until the release has no pods left (an old chief must not answer for the new one)."""
    deadline = time.monotonic() + timeout_s
    while pf.cluster.pods(pf.release_name):
        if time.monotonic() >= deadline:
            raise LauncherError(f"pods of release {pf.release_name!r} still exist after {timeout_s:g} s; see `kubectl get pods`")
        sleep(2.0)


def _replace_or_refuse(pf: Preflight, replace: bool) -> None:
    assert pf.release is not None
    chief = _chief_job(pf.cluster.jobs(pf.release_name))
    done = chief is not None and chief_job_state(chief) == "Complete"
    state = "its search is complete: `tunectl status` shows the results" if done else (
        f"{pf.release.status}, revision {pf.release.revision}" if pf.release.revision else "installed"
    )
    if not replace:
        raise LauncherError(
            f"release {pf.release_name!r} already exists in namespace {pf.namespace!r} ({state}); its Jobs cannot "
            "change in place (helm upgrade fails with `spec.template: field is immutable`): `tunectl deploy --replace` "
            "removes it and installs it again, keeping the shared volume and its runs, or `tunectl undeploy` first"
        )
    typer.echo(f"--replace: removing release {pf.release_name!r} ({state.split(':')[0]}) ...")
    release.uninstall(pf.release_name, pf.namespace, pf.kube_args("--kube-context"), wait=True)
    wait_until_gone(pf)


def wait_for_chief(
    pf: Preflight,
    timeout_s: float,
    *,
    poll_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Wait for the release's chief: returns "ready", "complete" or "waiting-for-data".

    Raises LauncherError, in one line, as soon as it cannot come (a PVC
    Pending with Warning events, an image that cannot be pulled, a crash
    loop, a failed Job), or at `timeout_s` with the last reason seen.
    """
    cluster, name = pf.cluster, pf.release_name
    deadline = clock() + timeout_s
    last = "no chief pod yet"
    while True:
        job = _chief_job(cluster.jobs(name))
        if job is not None:
            state = chief_job_state(job)
            if state == "Complete":
                return "complete"
            if state == "Failed":
                reason = next((c.message or c.reason for c in job.status.conditions or [] if c.type == "Failed"), "")
                raise LauncherError(f"the chief's Job of {name!r} failed ({reason or 'see its pod'}); see `tunectl logs --chief`")
            for claim in claim_names(job):
                pvc = cluster.claim(claim)
                if pvc is None:
                    raise LauncherError(
                        f"PVC {claim!r} does not exist in namespace {pf.namespace!r} (storage.existingClaim?); the pods cannot start without it"
                    )
                if pvc.status and pvc.status.phase == "Pending":
                    warnings = cluster.warnings_for("PersistentVolumeClaim", claim)
                    if warnings:
                        raise LauncherError(pending_claim_line(pvc, warnings))
                    last = f"PVC {claim} is Pending"
        pod = newest_pod(cluster.pods(name, "chief"))
        if pod is not None:
            status = pod.status
            if status and status.phase == "Succeeded":
                return "complete"
            if any(c.type == "Ready" and c.status == "True" for c in (status and status.conditions) or []):
                return "ready"
            for container in (status and status.container_statuses) or []:
                waiting = container.state and container.state.waiting
                if waiting and waiting.reason in _CANNOT_START:
                    hint = "on kind: `tunectl images`; elsewhere check image.repository, image.tag and image.pullSecrets"
                    message = " ".join((waiting.message or "").split())[:200]
                    raise LauncherError(f"the chief's container cannot start: {waiting.reason}: {message} ({hint})")
                if waiting and waiting.reason == "CrashLoopBackOff":
                    ended = container.last_state and container.last_state.terminated
                    code = f" (exit {ended.exit_code})" if ended else ""
                    raise LauncherError(f"the chief keeps crashing{code}: see `tunectl logs --chief`")
            for condition in (status and status.conditions) or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    last = f"the chief pod cannot be scheduled: {' '.join((condition.message or condition.reason or '').split())[:200]}"
            if status and status.phase == "Running" and DATA_WAIT_MARKER in cluster.log_tail(pod.metadata.name):
                return "waiting-for-data"
        if clock() >= deadline:
            raise LauncherError(
                f"the chief of {name!r} is not Ready after {timeout_s:g} s ({last}); see `tunectl status` and `tunectl logs --chief`"
            )
        sleep(min(poll_s, max(0.0, deadline - clock())))


def deploy(
    pf: Preflight,
    chart: Path,
    values: list[Path],
    sets: list[str],
    *,
    kind_preset: bool | None,
    replace: bool,
    wait: bool,
    timeout_s: float,
    context_flag: str | None,
) -> None:
    """Render, check, (re)install and wait; see the module docstring. Raises LauncherError in one line."""
    kind_cluster = kind.cluster_of_context(pf.context)
    layered = list(values)
    if kind_preset if kind_preset is not None else kind_cluster is not None:
        preset = release.kind_values(chart)
        if preset.is_file():
            typer.echo(f"kind cluster: using {preset} under your values")
            layered.insert(0, preset)
        elif kind_preset:
            raise BadInputError(f"--kind: the chart has no {preset}")
    objects = release.render(pf.release_name, chart, pf.namespace, layered, sets)
    if kind_cluster is not None:
        _check_kind(kind_cluster, objects)
    if pf.release is not None:
        _replace_or_refuse(pf, replace)
    helm_notes = release.install(pf.release_name, chart, pf.namespace, layered, sets, pf.kube_args("--kube-context"))
    if wait:
        typer.echo(f"waiting up to {timeout_s:g} s for the chief pod to be Ready ...")
        outcome = wait_for_chief(pf, timeout_s)
        if outcome == "complete":
            typer.echo("the chief has already finished: the search is complete (`tunectl status` shows the results).")
            return
        if outcome == "waiting-for-data":
            data = _dataset(objects)
            typer.echo(
                f"the chief is up and waits for {data} on the shared volume: "
                f"`tunectl data push DIR --name {Path(data).name}` (it waits data_wait_seconds, 30 min by default)."
            )
    if helm_notes:
        typer.echo(helm_notes + "\n")
    typer.echo(release.notes(pf.release_name, pf.namespace, context_flag))
