"""Scaling a running search: only the worker Job's completions and parallelism change with `workers`.

`tunectl scale` is `helm upgrade --reuse-values --set workers=N`. The worker
Job's completions and parallelism may change in place (elastic Indexed Jobs),
anything else in a Job's pod template may not (`spec.template: field is
immutable`), and a Job cannot be renamed. So the renders at two worker counts
must differ in those two lines and nothing else, whatever the release name.

The render-and-run test then scales a running search the way the cluster
would: the chart's rendered chief and workers run as local processes
(`local_pods`); scaling up starts the new indexes from the new render,
scaling down stops the removed indexes with SIGTERM, as the Job controller
deletes their pods.
"""

from __future__ import annotations

import difflib
import json
import time
from collections import Counter
from collections.abc import Container
from pathlib import Path
from typing import Any

import pytest

from chart_helpers import CHART, NAMESPACE, _helm, by_kind_and_component, helm_template_text, rendered_containers
from helpers import attempt_events
from local_pods import LocalPods, free_port
from tuner_job.layout import RunPaths, read_json

MAX_WORKERS = json.loads((CHART / "values.schema.json").read_text())["properties"]["workers"]["maximum"]


def changed_lines(old: str, new: str) -> list[str]:
    """The lines a unified diff of two renders removes (-) and adds (+)."""
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("---", "+++"))]


def assert_only_the_count_changed(old: str, new: str, old_count: int, new_count: int) -> None:
    """The renders differ in the worker Job's completions and parallelism, and in nothing else."""
    assert changed_lines(old, new) == [
        f"-  completions: {old_count}",
        f"-  parallelism: {old_count}",
        f"+  completions: {new_count}",
        f"+  parallelism: {new_count}",
    ], "\n".join(changed_lines(old, new))
    # ... and those two lines are the worker Job's spec.
    before = by_kind_and_component(_docs(old))
    after = by_kind_and_component(_docs(new))
    assert before.keys() == after.keys()
    worker = after[("Job", "worker")]["spec"]
    assert (worker["completions"], worker["parallelism"]) == (new_count, new_count)
    after[("Job", "worker")]["spec"] = {**worker, "completions": old_count, "parallelism": old_count}
    assert before == after


def _docs(text: str) -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("release", ["tuner", "r" * 53], ids=["short-name", "53-character-name"])
def test_the_worker_count_changes_only_completions_and_parallelism(release: str) -> None:
    """At every count up to the schema's maximum: the same Job name, the same pod template."""
    counts = [1, 2, 4, 9, 10, 11, 99, 100, 1000, MAX_WORKERS]

    def render(workers: int) -> str:
        result = _helm("template", release, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.30.0",
                       "--set", "storage.storageClassName=nfs", "--set", f"workers={workers}")  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = render(counts[0])
    for count in counts[1:]:
        assert_only_the_count_changed(first, render(count), counts[0], count)
    # The largest index's pod hostname, "<job name>-<index>", still fits a DNS label.
    job_name = by_kind_and_component(_docs(first))[("Job", "worker")]["metadata"]["name"]
    assert len(f"{job_name}-{MAX_WORKERS - 1}") <= 63, job_name


def test_the_schema_refuses_more_workers_than_the_job_name_leaves_room_for() -> None:
    result = _helm("template", "tuner", str(CHART), "--set", "storage.storageClassName=nfs", "--set", f"workers={MAX_WORKERS + 1}")
    assert result.returncode != 0 and "workers" in result.stderr, result.stderr


# --- a running search grows from 2 to 4 workers, then shrinks to 1 --------------------------

SEARCH = {
    "run": "scale",
    "data": "data/toonvision",
    "image_size": [24, 16],
    "max_trials": 30,
    "epochs": 4,
    "batch_size": 2,
    # Short, so that the trials of the stopped workers come back fast; long
    # enough that a live worker on two loaded cores never misses it.
    "lease_seconds": 8,
    "chief_wait_seconds": 120,
}
TIMEOUT = 600  # the whole search, on two loaded cores


def _wait_for(what: str, condition: Any, deadline: float, pods: LocalPods, stopped: Container[str] = ()) -> Any:
    """Poll `condition()` until it returns something truthy; fail with the logs at `deadline` or if a process
    other than the `stopped` ones died."""
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        dead = {name: p.returncode for name, p in pods.procs.items() if p.poll() is not None and name not in stopped}
        assert not dead, f"while waiting for {what}: {dead} exited\n{pods.all_logs()}"
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n{pods.all_logs()}")


def _events(paths: RunPaths) -> dict[str, list[dict[str, Any]]]:
    """Each worker's trial events (start, epoch, end), as it wrote them, in order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in attempt_events(paths.root):
        found.setdefault(event["worker"], []).append(event)
    return found


def _held(events: list[dict[str, Any]]) -> str | None:
    """The trial a worker is in (its last event is not an end), else None."""
    last = events[-1] if events else None
    return str(last["trial"]) if last is not None and last.get("event") in ("start", "epoch") else None


@pytest.mark.slow
def test_a_running_search_grows_then_shrinks_its_workers(shared: Path, tmp_path: Path) -> None:
    port = free_port()
    values = {"chief.port": port, "worker.gpus": 0, "storage.storageClassName": "nfs-client", "search": SEARCH}

    def render(workers: int) -> tuple[str, dict[str, Any]]:
        step = {**values, "workers": workers}
        return helm_template_text(set_values=step), rendered_containers(set_values=step)

    paths = RunPaths(shared, SEARCH["run"])

    def trials_done() -> int:
        return int((read_json(paths.status) or {}).get("trials_done", 0))

    pods = LocalPods(shared, tmp_path, port)
    deadline = time.monotonic() + TIMEOUT
    stopped_in: dict[str, str] = {}
    try:
        # --- 2 workers ------------------------------------------------------------------
        text2, two = render(2)
        assert len(two["workers"]) == 2
        pods.start("chief", two["chief"], two["search_yaml"])
        for index, worker in enumerate(two["workers"]):
            pods.start(f"tuner{index}", worker, two["search_yaml"])
        _wait_for("2 trials done", lambda: trials_done() >= 2, deadline, pods)

        # --- workers=4: the two new indexes start mid-search ------------------------------
        text4, four = render(4)
        assert_only_the_count_changed(text2, text4, 2, 4)
        assert four["workers"][:2] == two["workers"], "the running workers' pods are unchanged"
        assert [w["env"]["KERASTUNER_TUNER_ID"] for w in four["workers"][2:]] == ["tuner2", "tuner3"]
        for index in (2, 3):
            pods.start(f"tuner{index}", four["workers"][index], four["search_yaml"])

        def new_workers_trained() -> bool:
            ended = {e["worker"] for events in _events(paths).values() for e in events if e.get("event") == "end"}
            return {"tuner2", "tuner3"} <= ended

        _wait_for("tuner2 and tuner3 to finish a trial each", new_workers_trained, deadline, pods)
        done_at_scale_down = trials_done()

        # --- workers=1: indexes 1-3 are stopped with SIGTERM, each in the middle of a trial ------
        text1, one = render(1)
        assert_only_the_count_changed(text4, text1, 4, 1)
        assert one["workers"] == four["workers"][:1]

        def stop_those_mid_trial() -> bool:
            # "Mid-trial": an epoch done and at least two to go, so the trial cannot end before the signal lands.
            for tuner, events in _events(paths).items():
                last = events[-1]
                if tuner in ("tuner1", "tuner2", "tuner3") and tuner not in stopped_in and last.get("event") == "epoch" \
                        and last.get("epoch", SEARCH["epochs"]) <= SEARCH["epochs"] - 3:  # fmt: skip
                    pods.sigterm(tuner)
                    stopped_in[tuner] = str(last["trial"])
            return len(stopped_in) == 3

        _wait_for("tuner1-3 each in the middle of a trial", stop_those_mid_trial, deadline, pods, stopped_in)
        assert trials_done() < SEARCH["max_trials"] - 3, "scaled down mid-search"
        codes = pods.wait_all(deadline)
        assert codes["chief"] == 0 and codes["tuner0"] == 0, pods.all_logs()
        assert all(codes[f"tuner{i}"] is not None for i in (1, 2, 3)), codes
    finally:
        pods.kill_all()

    # --- the search completed, every trial once ---------------------------------------------
    assert 2 <= done_at_scale_down < SEARCH["max_trials"]
    results = json.loads(paths.results_json.read_text())
    ids = [t["trial_id"] for t in results["trials"]]
    assert len(ids) == len(set(ids)) == SEARCH["max_trials"], ids
    assert {t["status"] for t in results["trials"]} == {"COMPLETED"}, results["trials"]
    assert len(list(paths.tuner.glob("trial_*/trial.json"))) == SEARCH["max_trials"]
    events = _events(paths)
    ends = Counter(str(e["trial"]) for worker_events in events.values() for e in worker_events if e.get("event") == "end")
    assert dict(ends) == {trial_id: 1 for trial_id in ids}, f"a trial ended twice or never: {ends}"
    # Each stopped worker died inside the trial it was stopped in; that trial went back to the
    # queue (after its lease) and the remaining worker trained it.
    by_id = {t["trial_id"]: t for t in results["trials"]}
    held = {tuner: _held(events[tuner]) for tuner in stopped_in}
    assert held == stopped_in, f"{ {tuner: events[tuner][-3:] for tuner in stopped_in} }\n{pods.all_logs()[-6000:]}"
    for tuner, trial_id in stopped_in.items():
        assert by_id[trial_id]["worker"] == "tuner0", (tuner, by_id[trial_id])
        assert by_id[trial_id]["attempts"] >= 2, by_id[trial_id]
    # Each new index joined the search as a new tuner id.
    assert {"tuner2", "tuner3"} <= {t["worker"] for t in results["trials"]}
