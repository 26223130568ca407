"""`tunectl verify-run` (the second half of `make verify-cluster`): a short search on your cluster, checked.

`tunectl verify` checks, before a deploy, that a cluster can hold the search
(storage, data, GPUs, images). This goes on where it stops, and where the
test suite stops too: the suite runs the chart's pods as containers on one
machine (tests/containers), but a real scheduler, the Indexed Job's
completion indexes, GPUs, ReadWriteMany storage shared across nodes and the
Services only a cluster can show. So, on the cluster of the pre-flight:

1. the release must not be installed (it is deployed here, then removed);
2. `helm template` of your values tells the number of workers; the search is
   deployed (`tunectl deploy`'s own path) with your values plus a short run
   of its own: `search.run=verify-<time>`, 3 trials per worker, 1 epoch;
3. the chief gets Ready (or has finished), then the chief's and the
   workers' Jobs complete; a failed Job, or a chief that waits for its data,
   ends the check at once;
4. the chief's log says the search completed, and every worker index has
   trained at least one trial (`trial <id> start on tuner<i>` in the logs of
   its pods): every pod was scheduled, got its own completion index, reached
   the chief through its Service and wrote to the shared volume;
5. TensorBoard, asked through the API server's service proxy (`kubectl get
   --raw`), lists every trial of the run in its HParams table: it reads the
   volume the workers wrote, from its own pod;
6. `helm uninstall`, also when a check failed (`--keep` leaves the release);
   the shared volume and its runs stay, as with `tunectl undeploy`.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from cluster.errors import LauncherError, user_errors
from cluster.kube import kind, release
from cluster.kube.deploy import deploy, wait_for_chief
from cluster.kube.options import DEFAULT_NAMESPACE, DEFAULT_RELEASE, ChartDir, Context, Namespace, Release, SetValues, ValuesFiles
from cluster.kube.preflight import Preflight, preflight
from cluster.kube.status import chief_job_state
from cluster.kube.tools import run_tool
from tuner_job.progress import counted

__all__ = ["TRIALS_PER_WORKER", "register", "verify_run"]

TRIALS_PER_WORKER = 3
_POLL_S = 5.0
_HPARAMS_REQUEST = {"experimentName": "", "startIndex": 0, "sliceSize": 10000,
                    "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}  # fmt: skip


def _ok(what: str) -> None:
    typer.echo(f"  ok   {what}")


def _component(obj: Any) -> str | None:
    labels = obj.metadata.labels if hasattr(obj, "metadata") else obj.get("metadata", {}).get("labels", {})
    return (labels or {}).get("app.kubernetes.io/component")


def _workers(objects: list[dict[str, Any]]) -> int:
    job = next((o for o in objects if o.get("kind") == "Job" and _component(o) == "worker"), None)
    if job is None:
        raise LauncherError("the chart rendered no worker Job")
    return int(job["spec"]["completions"])


def _wait_jobs(pf: Preflight, deadline: float, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
    """Until both Jobs are Complete; LauncherError when one Failed or at the deadline."""
    while True:
        states = {_component(job): chief_job_state(job) for job in pf.cluster.jobs(pf.release_name)}
        for component in ("chief", "worker"):
            if states.get(component) == "Failed":
                log = "--chief" if component == "chief" else "--worker 0"
                raise LauncherError(f"the {component}s' Job failed; see `tunectl status` and `tunectl logs {log}`")
        if states.get("chief") == states.get("worker") == "Complete":
            return
        if clock() >= deadline:
            raise LauncherError(f"the Jobs did not complete in time ({states}); see `tunectl status`")
        sleep(_POLL_S)


def _logs(pf: Preflight, component: str, index: int | None = None) -> str:
    """Every pod's whole log: an Indexed Job may have replaced a failed pod of the same index."""
    pods = pf.cluster.pods(pf.release_name, component, index)
    return "\n".join(pf.cluster.log_tail(pod.metadata.name, lines=1_000_000) for pod in pods)


def _tensorboard_trials(pf: Preflight, run: str, expected: int, deadline: float,
                        sleep: Callable[[float], None], clock: Callable[[], float]) -> set[str]:  # fmt: skip
    """The trials of `run` that TensorBoard's HParams table lists, through the API server's service proxy."""
    services = pf.cluster.services(pf.release_name, "tensorboard")
    if not services:
        raise LauncherError(f"no TensorBoard Service for release {pf.release_name!r} (tensorboard.enabled=false?)")
    query = urllib.parse.quote(json.dumps(_HPARAMS_REQUEST, separators=(",", ":")))
    path = (f"/api/v1/namespaces/{pf.namespace}/services/{services[0].metadata.name}:http/proxy"
            f"/data/plugin/hparams/session_groups?request={query}")  # fmt: skip
    while True:  # TensorBoard reads new event files every few seconds
        answer = run_tool("kubectl", "get", "--raw", path, *pf.kube_args(), check=False)
        trials: set[str] = set()
        if answer.ok:
            groups = json.loads(answer.stdout or "{}").get("sessionGroups", [])
            trials = {g["name"].rsplit("/", 1)[-1] for g in groups if g["name"].startswith(f"{run}/")}
            if len(trials) >= expected:
                return trials
        if clock() >= deadline:
            reason = (answer.stderr.strip().splitlines() or ["no answer"])[-1] if not answer.ok else f"{len(trials)} listed"
            raise LauncherError(f"TensorBoard did not list the {expected} trials of {run} in time ({reason})")
        sleep(_POLL_S)


def _run_checks(pf: Preflight, chart: Path, values: list[Path], sets: list[str], run: str, kind_preset: bool | None,
                timeout_s: float, context_flag: str | None, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:  # fmt: skip
    deadline = clock() + timeout_s
    layered = list(values)
    if (kind_preset if kind_preset is not None else kind.cluster_of_context(pf.context) is not None) and release.kind_values(chart).is_file():
        layered.insert(0, release.kind_values(chart))
    workers = _workers(release.render(pf.release_name, chart, pf.namespace, layered, sets))
    trials = TRIALS_PER_WORKER * workers
    typer.echo(f"verify-run: a search of {counted(trials, 'trial')} on {counted(workers, 'worker')}, run {run}, release {pf.release_name!r}")
    run_sets = [*sets, f"search.run={run}", f"search.max_trials={trials}", "search.epochs=1"]
    deploy(pf, chart, values, run_sets, kind_preset=kind_preset, replace=False, wait=False,
           timeout_s=timeout_s, context_flag=context_flag)  # fmt: skip
    outcome = wait_for_chief(pf, max(1.0, deadline - clock()), sleep=sleep, clock=clock)
    if outcome == "waiting-for-data":
        raise LauncherError("the chief waits for its dataset: `tunectl data push` it, then run verify-run again")
    _ok("the chief pod ran (scheduled, image pulled, probes answered)")
    _wait_jobs(pf, deadline, sleep, clock)
    _ok(f"the chief's Job and the {workers} workers' Indexed Job completed")
    if not re.search(r"search completed in", _logs(pf, "chief")):
        raise LauncherError("the chief's log does not say `search completed`; see `tunectl logs --chief`")
    for index in range(workers):
        trained = set(re.findall(rf"trial (\S+) start on tuner{index}\b", _logs(pf, "worker", index)))
        if not trained:
            raise LauncherError(f"worker {index} trained no trial; see `tunectl logs --worker {index}`")
        _ok(f"worker {index} trained {len(trained)} trial(s) as tuner{index}")
    listed = _tensorboard_trials(pf, run, trials, deadline, sleep, clock)
    _ok(f"TensorBoard answers, and its HParams table lists the {len(listed)} trials of {run}")


def verify_run(pf: Preflight, chart: Path, values: list[Path], sets: list[str], *, run: str, kind_preset: bool | None = None,
               timeout_s: float = 1800, keep: bool = False, context_flag: str | None = None,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
    """Deploy, check, undeploy (see the module docstring). Raises LauncherError naming the first check that failed."""
    if pf.release is not None:
        raise LauncherError(
            f"release {pf.release_name!r} is installed in namespace {pf.namespace!r}; verify-run deploys its own: "
            "`tunectl undeploy` it first, or pass another --release"
        )
    try:
        _run_checks(pf, chart, values, sets, run, kind_preset, timeout_s, context_flag, sleep, clock)
    except LauncherError as exc:
        typer.echo(f"  FAIL {exc}")
        raise
    finally:
        if keep:
            typer.echo(f"--keep: release {pf.release_name!r} stays; `tunectl undeploy --release {pf.release_name}` removes it")
        else:
            release.uninstall(pf.release_name, pf.namespace, pf.kube_args("--kube-context"))
    typer.echo("verify-run: every check passed.")


def command(
    values: ValuesFiles = None,
    set_: SetValues = None,
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    chart: ChartDir = None,
    run: Annotated[str | None, typer.Option("--run", metavar="NAME", help="Name of the check's run (default: verify-<UTC time>).")] = None,
    timeout: Annotated[int, typer.Option("--timeout", metavar="SECONDS", help="Seconds for the whole check.")] = 1800,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the release installed after the check.")] = False,
    kind_preset: Annotated[
        bool | None, typer.Option("--kind/--no-kind", help="Put the chart's ci/kind-values.yaml under your values (default: on a kind context).")
    ] = None,
    context: Context = None,
) -> None:
    """Deploy a short search, check that every worker trained and TensorBoard lists every trial, then undeploy.

    What the tests on one machine cannot show: the scheduler, the Indexed
    Job's completion indexes, GPUs (if your values ask for them), the shared
    ReadWriteMany volume across nodes, the Services. The dataset named by
    `search.data` must be on the shared volume (`tunectl data push`).
    """
    with user_errors():
        pf = preflight(release_name, namespace, context, need_release=False)
        name = run or datetime.now(timezone.utc).strftime("verify-%Y%m%d-%H%M%S")
        verify_run(pf, chart or release.default_chart(), list(values or []), list(set_ or []), run=name,
                   kind_preset=kind_preset, timeout_s=timeout, keep=keep, context_flag=context)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("verify-run", rich_help_panel="Kubernetes")(command)
