"""Pure views of a running search: rows for its Jobs and pods, and its progress.

They take `kubernetes.client` models (or the chief's status.json) and return
plain strings, so they are tested without an API server.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from tuner_job.layout import RunPaths
from tuner_job.progress import state_line, trials_done_of_max
from tuner_job.trials import read_status

__all__ = [
    "COMPONENT_LABEL",
    "INDEX_LABEL",
    "chief_job_state",
    "claim_names",
    "format_best",
    "job_rows",
    "newest_pod",
    "pending_claim_line",
    "pod_rows",
    "progress_rows",
    "status_tables",
    "worker_count_line",
]

COMPONENT_LABEL = "app.kubernetes.io/component"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def _labels(obj: Any) -> dict[str, str]:
    return dict((obj.metadata and obj.metadata.labels) or {})


def _job_state(job: Any) -> str:
    for condition in (job.status and job.status.conditions) or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed", "Suspended"):
            return condition.type
    return "Running" if job.status and job.status.active else "Pending"


def chief_job_state(job: Any) -> str:
    """Complete, Failed, Suspended, Running or Pending."""
    return _job_state(job)


def claim_names(job: Any) -> list[str]:
    """The PVCs a Job's pods mount as the shared volume."""
    spec = job.spec and job.spec.template and job.spec.template.spec
    volumes = (spec and spec.volumes) or []
    return [v.persistent_volume_claim.claim_name for v in volumes if v.persistent_volume_claim is not None]


def pending_claim_line(claim: Any, warnings: list[Any]) -> str:
    """One line for a PVC that stays Pending: its class and modes, the last Warning event, the fix."""
    spec = claim.spec
    storage_class = (spec and spec.storage_class_name) or "the default class"
    modes = ", ".join((spec and spec.access_modes) or []) or "?"
    event = warnings[-1] if warnings else None
    said = f"{event.reason}: {' '.join((event.message or '').split())[:300]}" if event else "no event yet"
    return (
        f"PVC {claim.metadata.name} is Pending ({storage_class}, {modes}): {said}; set storage.storageClassName "
        "to a class that offers ReadWriteMany (`kubectl get storageclass`; `tunectl verify` tries it)"
    )


def job_rows(jobs: list[Any]) -> list[tuple[str, ...]]:
    """(name, component, state, succeeded/completions, active, failed) per Job."""
    rows = []
    for job in sorted(jobs, key=lambda j: j.metadata.name):
        status = job.status
        completions = job.spec.completions if job.spec and job.spec.completions is not None else 1
        rows.append(
            (
                job.metadata.name,
                _labels(job).get(COMPONENT_LABEL, "?"),
                _job_state(job),
                f"{(status and status.succeeded) or 0}/{completions}",
                str((status and status.active) or 0),
                str((status and status.failed) or 0),
            )
        )
    return rows


def worker_count_line(jobs: list[Any], pods: list[Any]) -> str | None:
    """`workers: 4 desired, 3 running, 1 starting`: the worker Job's count and its pods; None without a worker Job.

    Desired is the Job's parallelism (`tunectl scale` sets it with
    completions); running counts Running pods, starting Pending ones,
    stopping those being deleted (a scale-down), done and failed those that
    exited (a failed pod is replaced, with its index).
    """
    job = next((j for j in jobs if _labels(j).get(COMPONENT_LABEL) == "worker"), None)
    if job is None:
        return None
    spec = job.spec
    desired = spec.parallelism if spec and spec.parallelism is not None else (spec.completions if spec else None)
    counts = {"running": 0, "starting": 0, "stopping": 0, "done": 0, "failed": 0}
    for pod in pods:
        if _labels(pod).get(COMPONENT_LABEL) != "worker":
            continue
        phase = pod.status.phase if pod.status else None
        if pod.metadata.deletion_timestamp is not None:
            counts["stopping"] += 1
        elif phase == "Running":
            counts["running"] += 1
        elif phase == "Pending":
            counts["starting"] += 1
        elif phase == "Succeeded":
            counts["done"] += 1
        elif phase == "Failed":
            counts["failed"] += 1
    extra = "".join(f", {n} {what}" for what, n in counts.items() if n and what != "running")
    return f"workers: {desired if desired is not None else '?'} desired, {counts['running']} running{extra}"


def _pod_state(pod: Any) -> str:
    """The phase, or the reason a container is stuck (CrashLoopBackOff, ImagePullBackOff...)."""
    status = pod.status
    if pod.metadata.deletion_timestamp is not None:
        return "Terminating"
    for container in (status and status.container_statuses) or []:
        waiting = container.state and container.state.waiting
        if waiting is not None and waiting.reason:
            return waiting.reason
        terminated = container.state and container.state.terminated
        if terminated is not None and terminated.reason and status.phase != "Succeeded":
            return terminated.reason
    return (status and status.phase) or "Unknown"


def pod_rows(pods: list[Any]) -> list[tuple[str, ...]]:
    """(name, component, worker index, state, ready, restarts, node) per pod, chief first."""
    order = {"chief": 0, "worker": 1, "tensorboard": 2}

    def key(pod: Any) -> tuple[int, int, str]:
        labels = _labels(pod)
        index = labels.get(INDEX_LABEL, "")
        return (order.get(labels.get(COMPONENT_LABEL, ""), 3), int(index) if index.isdigit() else -1, pod.metadata.name)

    rows = []
    for pod in sorted(pods, key=key):
        labels = _labels(pod)
        containers = (pod.status and pod.status.container_statuses) or []
        ready = sum(1 for c in containers if c.ready)
        total = len(containers) or len((pod.spec and pod.spec.containers) or [])
        rows.append(
            (
                pod.metadata.name,
                labels.get(COMPONENT_LABEL, "?"),
                labels.get(INDEX_LABEL, "-") if labels.get(COMPONENT_LABEL) == "worker" else "-",
                _pod_state(pod),
                f"{ready}/{total}",
                str(sum(c.restart_count or 0 for c in containers)),
                (pod.spec and pod.spec.node_name) or "-",
            )
        )
    return rows


def newest_pod(pods: list[Any]) -> Any | None:
    """The pod to read logs from: a Job may have replaced a failed one, so take the newest."""
    live = [p for p in pods if p.metadata.deletion_timestamp is None] or pods
    return max(live, key=lambda p: p.metadata.creation_timestamp or _EPOCH, default=None)


def format_best(best: Any) -> str:
    if best is None:
        return "-"
    if isinstance(best, dict):
        score = best.get("score", best.get("value"))
        parts = []
        if best.get("trial_id") is not None:
            parts.append(f"trial {best['trial_id']}")
        if score is not None:
            name = best.get("objective", "score")
            parts.append(f"{name}={score:.4g}" if isinstance(score, (int, float)) else f"{name}={score}")
        return ", ".join(parts) or str(best)
    if isinstance(best, float):
        return f"{best:.4g}"
    return str(best)


def progress_rows(shared_dir: Path, run: str | None = None) -> list[tuple[str, ...]]:
    """(run, state, trials done/max, best) from each run's status.json under `shared_dir`."""
    runs_dir = RunPaths(Path(shared_dir), "_").runs_dir
    names = [run] if run else sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    rows = []
    for name in names:
        status = read_status(RunPaths(Path(shared_dir), name))
        if not status:
            rows.append((name, "unknown (no status.json yet)", "-", "-"))
            continue
        done, total = trials_done_of_max(status)
        best = status.get("best")
        if isinstance(best, dict) and status.get("objective"):
            best = {"objective": status["objective"], **best}  # the chief names the objective once, at the top
        rows.append(
            (
                name,
                state_line(status),
                f"{done if done is not None else '?'}/{total if total is not None else '?'}",
                format_best(best),
            )
        )
    return rows


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def status_tables(
    jobs: list[Any], pods: list[Any], progress: list[tuple[str, ...]] | None
) -> list[Table]:
    tables = [
        _table("Jobs", ("job", "component", "state", "succeeded", "active", "failed"), job_rows(jobs)),
        _table("Pods", ("pod", "component", "worker", "state", "ready", "restarts", "node"), pod_rows(pods)),
    ]
    if progress is not None:
        tables.append(_table("Search", ("run", "state", "trials", "best so far"), progress))
    return tables
