"""verify-run (the second half of `make verify-cluster`): deploy a short search, check it, undeploy.

What the cluster says is read through the real `kubernetes` client from the
fake API server; helm is a recording fake whose `template` answers what the
real helm renders from the real chart; kubectl (TensorBoard through the
service proxy) is a recording fake. The exact helm and kubectl calls are
checked.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.kube.verify_run import TRIALS_PER_WORKER

from .kube_objects import claim, helm_release, job, pod, service

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "keras-tuner-cluster"
RUN = "verify-test"
WORKERS = 2  # ci/default-values.yaml: the chart's default
TRIALS = TRIALS_PER_WORKER * WORKERS
PROXY = "/api/v1/namespaces/default/services/tuner-keras-tuner-cluster-tensorboard:http/proxy/data/plugin/hparams/session_groups?request="


@pytest.fixture(scope="module")
def rendered() -> str:
    helm = REPO / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not installed (make tools)")
    args = [str(helm), "template", "tuner", str(CHART), "--namespace", "default", "--values", str(CHART / "ci" / "default-values.yaml")]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


def _worker_pod(index: int, name: str) -> dict:
    return pod("worker", name=name, index=index, phase="Succeeded")


def _finished_search(fake_api, *, worker1_log: str = "trial 1 start on tuner1: {...}\n", worker_job: dict | None = None) -> None:
    fake_api.add(job("chief", complete=True), worker_job or job("worker", complete=True), claim(), service("tensorboard"),
                 pod("chief", phase="Succeeded"), _worker_pod(0, "w0-a"), _worker_pod(0, "w0-b"), _worker_pod(1, "w1-a"))  # fmt: skip
    fake_api.set_log("default", "tuner-keras-tuner-cluster-chief-abcde", "search completed in 41.0s: 6 trials (6 completed, 0 failed)\n")
    # Index 0's first pod died; the Job's replacement (same index) trained the trials.
    fake_api.set_log("default", "w0-a", "tuner0 ready after 3.0s\n")
    fake_api.set_log("default", "w0-b", "trial 0 start on tuner0: {...}\ntrial 2 start on tuner0: {...}\n")
    fake_api.set_log("default", "w1-a", worker1_log)


def _tools(fake_tools, rendered: str, listed: int = TRIALS) -> None:
    fake_tools.add("helm", (["template"], rendered, "", 0), (["upgrade"], 'Release "tuner" has been installed.\n', "", 0))
    groups = {"sessionGroups": [{"name": f"{RUN}/logs/trial_{i}", "hparams": {"units": 8}} for i in range(listed)]}
    fake_tools.add("kubectl", (["get", "--raw"], json.dumps(groups), "", 0))


def _invoke(*extra: str):
    return runner.invoke(app, ["verify-run", "--chart", str(CHART), "--context", "prod-gpus", "--run", RUN, "--timeout", "60", *extra])


def test_verify_run_deploys_checks_every_worker_and_tensorboard_then_undeploys(fake_api, fake_tools, rendered, tmp_path):
    _finished_search(fake_api)
    _tools(fake_tools, rendered)
    mine = tmp_path / "gpu.yaml"
    mine.write_text("storage: {storageClassName: nfs-client}\n")

    result = _invoke("--values", str(mine), "--set", "worker.gpus=1")

    assert result.exit_code == 0, result.output
    raw = fake_tools.calls("kubectl")[0][3]
    assert raw.startswith(PROXY) and json.loads(urllib.parse.unquote(raw.removeprefix(PROXY)))["sliceSize"] >= TRIALS
    user = ["--values", str(mine), "--set", "worker.gpus=1"]
    ours = ["--set", f"search.run={RUN}", "--set", f"search.max_trials={TRIALS}", "--set", "search.epochs=1"]
    assert fake_tools.calls() == [
        ["helm", "template", "tuner", str(CHART), "--namespace", "default", *user],
        ["helm", "template", "tuner", str(CHART), "--namespace", "default", *user, *ours],
        ["helm", "upgrade", "--install", "tuner", str(CHART), "--namespace", "default", "--create-namespace", *user, *ours,
         "--kube-context", "prod-gpus"],
        ["kubectl", "get", "--raw", raw, "--context", "prod-gpus"],
        ["helm", "uninstall", "tuner", "--namespace", "default", "--kube-context", "prod-gpus"],
    ]  # fmt: skip
    assert "worker 0 trained 2 trial(s) as tuner0" in result.output
    assert "worker 1 trained 1 trial(s) as tuner1" in result.output
    assert f"lists the {TRIALS} trials of {RUN}" in result.output
    assert "verify-run: every check passed." in result.output


def test_a_worker_that_trained_nothing_fails_the_check_and_still_undeploys(fake_api, fake_tools, rendered):
    _finished_search(fake_api, worker1_log="tuner1: the search is complete (completed); this worker trained 0 trials\n")
    _tools(fake_tools, rendered)

    result = _invoke()

    assert result.exit_code == 1, result.output
    assert "FAIL worker 1 trained no trial; see `tunectl logs --worker 1`" in result.output
    assert fake_tools.calls()[-1] == ["helm", "uninstall", "tuner", "--namespace", "default", "--kube-context", "prod-gpus"]
    assert not fake_tools.calls("kubectl"), "it stops at the first failed check"


def test_a_failed_worker_job_ends_the_check_and_keep_leaves_the_release(fake_api, fake_tools, rendered):
    _finished_search(fake_api, worker_job=job("worker", failed="Job has reached the specified backoff limit"))
    _tools(fake_tools, rendered)

    result = _invoke("--keep")

    assert result.exit_code == 1, result.output
    assert "FAIL the workers' Job failed" in result.output
    assert [c[1] for c in fake_tools.calls("helm")] == ["template", "template", "upgrade"], "--keep: no uninstall"
    assert "--keep: release 'tuner' stays" in result.output


def test_tensorboard_that_lists_too_few_trials_fails_after_the_timeout(fake_api, fake_tools, rendered):
    _finished_search(fake_api)
    _tools(fake_tools, rendered, listed=TRIALS - 1)

    result = runner.invoke(app, ["verify-run", "--chart", str(CHART), "--context", "prod-gpus", "--run", RUN, "--timeout", "1"])

    assert result.exit_code == 1, result.output
    assert f"TensorBoard did not list the {TRIALS} trials of {RUN} in time ({TRIALS - 1} listed)" in result.output
    assert fake_tools.calls()[-1][:2] == ["helm", "uninstall"]


def test_an_installed_release_is_left_alone(fake_api, fake_tools, rendered):
    fake_api.add(helm_release(revision=3), job("chief"), job("worker"))
    _tools(fake_tools, rendered)

    result = _invoke()

    assert result.exit_code == 1, result.output
    assert "release 'tuner' is installed in namespace 'default'; verify-run deploys its own" in result.output
    assert fake_tools.calls() == []
