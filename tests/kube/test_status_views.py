"""The pure views behind `tunectl status` and `tunectl logs`, on real kubernetes.client models."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Job,
    V1JobCondition,
    V1JobSpec,
    V1JobStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
)
from rich.console import Console
from typer.testing import CliRunner

from cluster.cli import app
from cluster.kube.release import selector
from cluster.kube.status import format_best, job_rows, newest_pod, pod_rows, progress_rows, status_tables, worker_count_line

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def pod(name, component, index=None, phase="Running", ready=True, restarts=0, waiting=None, created=T0, node="kind-worker"):
    labels = {"app.kubernetes.io/instance": "tuner", "app.kubernetes.io/component": component}
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
    state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting)) if waiting else None
    return V1Pod(
        metadata=V1ObjectMeta(name=name, labels=labels, creation_timestamp=created),
        spec=V1PodSpec(containers=[], node_name=node),
        status=V1PodStatus(
            phase=phase,
            container_statuses=[
                V1ContainerStatus(name="main", image="x", image_id="", ready=ready, restart_count=restarts, state=state)
            ],
        ),
    )


def job(name, component, completions, succeeded=0, active=0, failed=0, done=None):
    conditions = [V1JobCondition(type=done, status="True")] if done else None
    return V1Job(
        metadata=V1ObjectMeta(name=name, labels={"app.kubernetes.io/component": component}),
        spec=V1JobSpec(completions=completions, template={}),
        status=V1JobStatus(succeeded=succeeded, active=active, failed=failed, conditions=conditions),
    )


def test_pod_rows_put_the_chief_first_and_workers_by_index():
    pods = [
        pod("tuner-worker-10-x", "worker", 10),
        pod("tuner-tb", "tensorboard"),
        pod("tuner-worker-2-y", "worker", 2, phase="Pending", ready=False, waiting="ImagePullBackOff"),
        pod("tuner-chief-z", "chief", restarts=2),
    ]

    rows = pod_rows(pods)

    assert [r[0] for r in rows] == ["tuner-chief-z", "tuner-worker-2-y", "tuner-worker-10-x", "tuner-tb"]
    assert rows[0] == ("tuner-chief-z", "chief", "-", "Running", "1/1", "2", "kind-worker")
    assert rows[1][2:5] == ("2", "ImagePullBackOff", "0/1")


def test_job_rows_show_state_and_completions():
    rows = job_rows(
        [
            job("tuner-worker", "worker", 4, succeeded=1, active=3),
            job("tuner-chief", "chief", None, succeeded=1, done="Complete"),
        ]
    )

    assert rows == [
        ("tuner-chief", "chief", "Complete", "1/1", "0", "0"),
        ("tuner-worker", "worker", "Running", "1/4", "3", "0"),
    ]


def test_newest_pod_is_the_one_to_read_logs_from():
    old = pod("tuner-chief-old", "chief", phase="Failed", created=T0)
    new = pod("tuner-chief-new", "chief", created=T0 + timedelta(minutes=3))

    assert newest_pod([new, old]).metadata.name == "tuner-chief-new"
    assert newest_pod([]) is None


def test_progress_comes_from_each_runs_status_json(tmp_path):
    (tmp_path / "runs" / "toonvision").mkdir(parents=True)
    (tmp_path / "runs" / "toonvision" / "status.json").write_text(
        json.dumps({"state": "running", "trials_done": 7, "max_trials": 20,
                    "best": {"trial_id": "03", "objective": "val_loss", "score": 0.123456}})
    )  # fmt: skip
    (tmp_path / "runs" / "fresh").mkdir()
    (tmp_path / "runs" / "precise").mkdir()
    (tmp_path / "runs" / "precise" / "status.json").write_text(  # as the chief writes it: the objective at the top
        json.dumps({"state": "completed", "objective": "val_precision", "direction": "max", "trials_done": 4, "max_trials": 4,
                    "best": {"trial_id": "2", "score": 0.875}})
    )  # fmt: skip

    rows = progress_rows(tmp_path)

    assert rows == [
        ("fresh", "unknown (no status.json yet)", "-", "-"),
        ("precise", "completed", "4/4", "trial 2, val_precision=0.875"),
        ("toonvision", "running", "7/20", "trial 03, val_loss=0.1235"),
    ]
    assert progress_rows(tmp_path, "toonvision") == rows[2:]
    assert progress_rows(tmp_path / "nothing") == []


def test_format_best_accepts_a_plain_number_or_nothing():
    assert format_best(None) == "-"
    assert format_best(0.5) == "0.5"


def test_status_tables_render():
    console = Console(width=160, record=True)
    for table in status_tables([job("tuner-chief", "chief", 1, active=1)], [pod("tuner-chief-z", "chief")], None):
        console.print(table)

    text = console.export_text()
    assert "tuner-chief-z" in text and "Running" in text and "Search" not in text


def test_selectors_use_the_standard_labels():
    assert selector("tuner") == "app.kubernetes.io/instance=tuner"
    assert selector("s", "worker", 3) == (
        "app.kubernetes.io/instance=s,app.kubernetes.io/component=worker,batch.kubernetes.io/job-completion-index=3"
    )


def test_logs_needs_exactly_one_of_chief_or_worker():
    runner = CliRunner()
    for args in (["logs"], ["logs", "--chief", "--worker", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "pass exactly one of --chief or --worker I" in result.output


def test_status_without_a_kubeconfig_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    result = CliRunner().invoke(app, ["status"])

    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    expected = f"error: no Kubernetes config: KUBECONFIG names no file that exists (looked at {tmp_path / 'missing'})"
    assert len(lines) == 1 and lines[0].startswith(expected), result.output
    assert "`tunectl up`" in lines[0]


def test_worker_count_line_says_desired_and_what_the_pods_do():
    from kubernetes.client import V1JobSpec

    workers = job("tuner-worker", "worker", 4)
    workers.spec = V1JobSpec(completions=2, parallelism=2, template={})  # just scaled down from 4
    leaving = pod("tuner-worker-3-x", "worker", 3)
    leaving.metadata.deletion_timestamp = T0
    pods = [
        pod("tuner-worker-0-x", "worker", 0),
        pod("tuner-worker-1-x", "worker", 1, phase="Pending", ready=False),
        pod("tuner-worker-1-old", "worker", 1, phase="Failed", ready=False),
        pod("tuner-worker-2-x", "worker", 2),
        leaving,
        pod("tuner-chief", "chief"),
    ]
    assert worker_count_line([job("tuner-chief", "chief", 1), workers], pods) == (
        "workers: 2 desired, 2 running, 1 starting, 1 stopping, 1 failed"
    )
    assert worker_count_line([workers], []) == "workers: 2 desired, 0 running"
    assert worker_count_line([job("tuner-chief", "chief", 1)], pods) is None
