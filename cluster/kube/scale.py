"""`tunectl scale`: grow or shrink the workers of a running search, in place.

The worker Job is an Indexed Job whose `completions` and `parallelism` are
both the worker count. Since Kubernetes 1.27 ("elastic Indexed Jobs", GA in
1.31) the two may change together on a running Job: new indexes start pods
(new tuner ids that ask the chief for trials), and the pods of removed
indexes are deleted (SIGTERM). A trial a removed worker held goes back to the
queue when its lease runs out (`lease_seconds`), and the next free worker
trains it; the chief keeps running.

`scale()` is `helm upgrade --reuse-values --set workers=N` with guards, in
this order, before anything changes:

1. the server is new enough (`MIN_KUBERNETES`), else one line, exit 2;
2. the search is still running (its chief Job has not completed, its worker
   Job has not failed), and N differs from the current count;
3. `worker.maxFailedIndexes`, if set, is not above N (the API refuses it);
4. the same upgrade as a dry run renders exactly the installed manifest but
   the worker Job's completions and parallelism: a chart folder that differs
   from the installed chart would change more (a ConfigMap, a pod template
   that the API refuses to change), and is refused with what it would change.

Source of the feature: KEP-3715, "Elastic Indexed Jobs"
(https://github.com/kubernetes/enhancements/tree/master/keps/sig-apps/3715-elastic-indexed-job).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
import yaml

from cluster.errors import BadInputError, LauncherError
from cluster.kube.preflight import Preflight
from cluster.kube.release import run_rendering
from cluster.kube.status import COMPONENT_LABEL, chief_job_state
from cluster.kube.tools import run_tool
from tuner_job.contract import worker_id

__all__ = ["MIN_KUBERNETES", "manifest_changes", "parse_version", "require_elastic_jobs", "scale", "scale_args"]

#: Elastic Indexed Jobs: beta and on by default from 1.27, GA in 1.31.
MIN_KUBERNETES = (1, 27)
#: The keys of the worker Job that the worker count sets; any other change is refused.
_COUNT_KEYS = (("spec", "completions"), ("spec", "parallelism"))


def parse_version(git_version: str) -> tuple[int, int] | None:
    """(major, minor) of a server's gitVersion (`v1.30.2`, `v1.29.3-gke.1`, `v1.28.5+k3s1`); None if unreadable."""
    match = re.match(r"^v?(\d+)\.(\d+)", git_version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def require_elastic_jobs(git_version: str, server: str) -> None:
    """Raise BadInputError (exit 2) when the server is older than elastic Indexed Jobs need.

    An unreadable version is let through: the API server then has the last word.
    """
    version = parse_version(git_version)
    if version is not None and version < MIN_KUBERNETES:
        need = ".".join(map(str, MIN_KUBERNETES))
        raise BadInputError(
            f"Kubernetes {git_version} at {server} cannot change the worker count of a running search: elastic Indexed "
            f"Jobs need Kubernetes {need} or later; `tunectl deploy --replace --set workers=N` restarts the search with "
            "N workers instead (its run resumes from the shared volume)"
        )


def scale_args(release: str, chart: Path, namespace: str, workers: int, kube_args: list[str], dry_run: bool = False) -> list[str]:
    """helm's argv for the upgrade that sets only the worker count (reusing the release's values).

    `dry_run`: the same upgrade, rendered against the cluster and printed as
    JSON (its `manifest`), changing nothing.
    """
    preview = ["--dry-run=server", "--output", "json"] if dry_run else []
    return [
        "upgrade", *preview, release, str(chart), "--namespace", namespace,
        "--reuse-values", "--set", f"workers={workers}", "--description", f"tunectl scale --workers {workers}",
        *kube_args,
    ]  # fmt: skip


def _documents(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    return {(d.get("kind", "?"), (d.get("metadata") or {}).get("name", "?")): d for d in docs}


def _is_worker_job(obj: dict[str, Any]) -> bool:
    return obj.get("kind") == "Job" and ((obj.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL) == "worker"


def _differences(old: Any, new: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[tuple[str, ...]] = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key), new.get(key), (*path, str(key)))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in _differences(a, b, (*path, str(i)))]
    return [] if old == new else [path]


def manifest_changes(installed: str, upgraded: str) -> list[str]:
    """What an upgrade changes beyond the worker count: `Kind name: dotted.path` per difference ([] = nothing).

    `installed` and `upgraded` are multi-document manifests (`helm get
    manifest`, the dry run's `manifest`). The worker Job's spec.completions
    and spec.parallelism are the only changes allowed, so they are not listed.
    """
    before, after = _documents(installed), _documents(upgraded)
    changes = [f"{kind} {name}: removed" for kind, name in before if (kind, name) not in after]
    changes += [f"{kind} {name}: added" for kind, name in after if (kind, name) not in before]
    for key in before.keys() & after.keys():
        allowed = _COUNT_KEYS if _is_worker_job(before[key]) and _is_worker_job(after[key]) else ()
        paths = [p for p in _differences(before[key], after[key]) if p not in allowed]
        changes += [f"{key[0]} {key[1]}: {'.'.join(p)}" for p in paths]
    return sorted(changes)


def _helm_manifest(pf: Preflight) -> str:
    return run_tool("helm", "get", "manifest", pf.release_name, "--namespace", pf.namespace, *pf.kube_args("--kube-context")).stdout


def _dry_run(pf: Preflight, chart: Path, workers: int) -> str:
    args = scale_args(pf.release_name, chart, pf.namespace, workers, pf.kube_args("--kube-context"), dry_run=True)
    stdout = run_rendering(args, "helm upgrade --dry-run failed", LauncherError)
    try:
        return str(json.loads(stdout)["manifest"])
    except (ValueError, KeyError, TypeError):
        raise LauncherError("helm upgrade --dry-run printed no release with a manifest") from None


def _lease_seconds(manifest: str) -> float:
    from tuner_job.config import SearchConfig

    for obj in _documents(manifest).values():
        text = (obj.get("data") or {}).get("search.yaml") if obj.get("kind") == "ConfigMap" else None
        if text:
            value = (yaml.safe_load(text) or {}).get("lease_seconds")
            if isinstance(value, (int, float)):
                return float(value)
    return float(SearchConfig.model_fields["lease_seconds"].default)


def _worker_job(jobs: list[Any], release: str) -> Any:
    job = next((j for j in jobs if (j.metadata.labels or {}).get(COMPONENT_LABEL) == "worker"), None)
    if job is None:
        raise LauncherError(f"release {release!r} has no worker Job; `tunectl status` shows what it has")
    return job


def _check_running(jobs: list[Any], worker_job: Any, release: str) -> None:
    chief = next((j for j in jobs if (j.metadata.labels or {}).get(COMPONENT_LABEL) == "chief"), None)
    if (chief is not None and chief_job_state(chief) == "Complete") or chief_job_state(worker_job) == "Complete":
        raise LauncherError(f"the search of release {release!r} is complete, there is nothing to scale: `tunectl status` shows its results")
    if chief_job_state(worker_job) == "Failed":
        reason = next((c.message or c.reason for c in worker_job.status.conditions or [] if c.type == "Failed"), "")
        raise LauncherError(
            f"the worker Job of release {release!r} has failed ({reason or 'see its pods'}) and a count cannot restart it: "
            "`tunectl logs --worker I` says why; `tunectl deploy --replace` starts the search again"
        )


def _indexes(first: int, last: int) -> str:
    if first == last:
        return f"index {first} ({worker_id(first)})"
    return f"indexes {first}-{last} ({worker_id(first)}..{worker_id(last)})"


def scale(pf: Preflight, chart: Path, workers: int) -> None:
    """Set the worker count of the release `pf` found; see the module docstring. Raises LauncherError in one line."""
    require_elastic_jobs(pf.version, pf.server)
    jobs = pf.cluster.jobs(pf.release_name)
    job = _worker_job(jobs, pf.release_name)
    _check_running(jobs, job, pf.release_name)
    current = job.spec.parallelism if job.spec.parallelism is not None else job.spec.completions
    if current == workers:
        typer.echo(f"release {pf.release_name!r} already has {workers} worker(s); nothing to change.")
        return
    max_failed = job.spec.max_failed_indexes
    if max_failed is not None and max_failed > workers:
        raise BadInputError(
            f"worker.maxFailedIndexes is {max_failed}, more than --workers {workers}: the API server refuses a Job "
            f"that may lose more indexes than it has; scale to {max_failed} or more"
        )
    if not (Path(chart) / "Chart.yaml").is_file():
        raise BadInputError(f"no Helm chart at {chart}; pass --chart or run from the repository root")
    installed = _helm_manifest(pf)
    upgraded = _dry_run(pf, chart, workers)
    changes = manifest_changes(installed, upgraded)
    if changes:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        raise LauncherError(
            f"the chart at {chart} would change more than the worker count of release {pf.release_name!r} ({shown}); "
            "pass --chart with the chart it was deployed from, or `tunectl deploy --replace` to deploy this one"
        )
    try:
        output = run_tool("helm", *scale_args(pf.release_name, chart, pf.namespace, workers, pf.kube_args("--kube-context"))).stdout
    except LauncherError as exc:
        if "immutable" in str(exc) and "completions" in str(exc):
            raise LauncherError(
                f"{exc} (the API server refused to change the worker Job's completions: elastic Indexed Jobs are "
                "turned off on this cluster, feature gate ElasticIndexedJob)"
            ) from None
        raise
    first = next((line.strip() for line in output.splitlines() if line.strip()), f"release {pf.release_name!r} upgraded")
    typer.echo(first)
    typer.echo(f"workers: {current} -> {workers} (worker Job {job.metadata.name}: completions and parallelism {workers})")
    if workers > current:
        typer.echo(f"{_indexes(current, workers - 1)} start and join the search; `tunectl status` shows them come up.")
    else:
        typer.echo(
            f"{_indexes(workers, current - 1)} stop; a trial one of them holds goes back to the queue when its lease runs "
            f"out (lease_seconds: {_lease_seconds(upgraded):g} s) and the next free worker trains it."
        )
