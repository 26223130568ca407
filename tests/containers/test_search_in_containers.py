"""The chart's chief, workers and TensorBoard, as `helm template` renders them, run as containers.

Each pod is converted by `pod_to_docker` (see its docstring for the few
stand-ins: the host network, Service names mapped to 127.0.0.1, loopback
binds, host folders for the PVC) and run by `docker_pods.PodRunner`; the
shared volume is one host folder, bind-mounted into every container.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chart_helpers import helm_template
from container_setup import SETUP_TIMEOUT, chart_values
from docker_pods import Docker, PodRunner
from helpers import FAULT_HYPERMODEL, attempt_events, free_port, trial_files
from pod_to_docker import ContainerRun, PodRun, convert_pod
from tuner_job.contract import ENV_TUNER_ID, SHARED_MOUNT, worker_id

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(SETUP_TIMEOUT + 900)]

SEARCH = {"run": "containers", "data": "data/toonvision", "image_size": [24, 16], "max_trials": 4, "epochs": 1,
          "batch_size": 16, "lease_seconds": 30, "chief_wait_seconds": 180}  # fmt: skip
SEARCH_TIMEOUT = 600


class ContainerSearch:
    """One rendered release on the host network: its objects, its shared folder, its pods."""

    def __init__(self, runner: PodRunner, root: Path, dataset: Path, *, workers: int, search: dict[str, Any],
                 worker_env: dict[str, str] | None = None, values: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.runner = runner
        self.root = root
        self.shared = root / "shared"
        shutil.copytree(dataset, self.shared / "data" / "toonvision")
        self.values = chart_values(workers=workers, chief_port=free_port(), tensorboard_port=free_port(), search=search, worker_env=worker_env)
        self.values.update(values or {})
        self.objects = helm_template(set_values=self.values)
        (claim,) = (o["metadata"]["name"] for o in self.objects if o["kind"] == "PersistentVolumeClaim")
        self.claims = {claim: self.shared}
        self.run_dir = self.shared / "runs" / search["run"]
        self.pods: dict[str, PodRun] = {}

    def start(self, key: str, workload: tuple[str, str], index: int | None = None) -> ContainerRun:
        """Convert a new pod of `workload` (index: a worker's completion index), start it, keep it as `key`."""
        pod = convert_pod(self.objects, workload, index=index, workdir=self.root / "pods", claims=self.claims, labels={"ktc.test": "containers"})
        self.runner.start(pod)
        self.pods[key] = pod
        return pod.containers[0]

    def container(self, key: str) -> ContainerRun:
        return self.pods[key].containers[0]

    def logs(self, key: str) -> str:
        return self.runner.logs(self.container(key))

    def all_logs(self) -> str:
        return "\n".join(f"===== {key}\n{self.logs(key)[-3000:]}" for key in self.pods)

    def wait_all(self, keys: list[str], timeout: float) -> dict[str, int | None]:
        deadline = time.monotonic() + timeout
        return {key: self.runner.wait(self.container(key), max(1.0, deadline - time.monotonic())) for key in keys}


def _results(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((run_dir / "results.json").read_text())["trials"]


@pytest.fixture(scope="module")
def finished(images: dict[str, str], docker: Docker, tmp_path_factory: pytest.TempPathFactory, pristine_dataset: Path):
    """The rendered chief and two rendered workers, run to the end of a 4-trial search."""
    runner = PodRunner(docker)
    search = ContainerSearch(runner, tmp_path_factory.mktemp("release"), pristine_dataset, workers=2, search=SEARCH)
    try:
        chief = search.start("chief", ("Job", "chief"))
        for index in range(2):
            search.start(f"tuner{index}", ("Job", "worker"), index)
        # The chief's own rendered probes (grpc.health.v1 on its port) say it serves.
        runner.wait_ready(chief, 300)
        codes = search.wait_all(["chief", "tuner0", "tuner1"], SEARCH_TIMEOUT)
        yield search, codes
    finally:
        runner.close()


def test_rendered_chief_and_two_workers_complete_a_search(finished):
    search, codes = finished

    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, search.all_logs()
    trials = trial_files(search.run_dir)
    assert sorted(t["status"] for t in trials.values()) == ["COMPLETED"] * SEARCH["max_trials"], search.all_logs()
    results = _results(search.run_dir)
    ids = [t["trial_id"] for t in results]
    assert sorted(ids) == sorted(trials) and len(set(ids)) == len(ids), ids
    starts = Counter(e["trial"] for e in attempt_events(search.run_dir) if e.get("event") == "start")
    assert starts == {trial_id: 1 for trial_id in trials}, f"every trial trained once: {starts}"
    # Each worker's `docker logs` (what `kubectl logs` shows) has a line per trial it trained, and only those.
    for index in range(2):
        mine = {t["trial_id"] for t in results if t["worker"] == f"tuner{index}"}
        logged = set(re.findall(rf"^\S+ tuner{index} INFO trial (\S+) start$", search.logs(f"tuner{index}"), re.MULTILINE))
        assert mine and logged == mine, (index, mine, logged, search.logs(f"tuner{index}")[-3000:])
    # Written by the containers' user (uid 1000), on the bind-mounted volume.
    assert (search.run_dir / "results.json").stat().st_uid == 1000


def test_rendered_tensorboard_serves_the_run_and_lists_every_trial(finished):
    search, codes = finished
    assert codes["chief"] == 0, search.all_logs()

    board = search.start("tensorboard", ("Deployment", "tensorboard"))
    search.runner.wait_ready(board, 180)  # its rendered startup and readiness probes (httpGet /)
    port = search.values["tensorboard.port"]
    runs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=30).read())
    request = {"experimentName": "", "startIndex": 0, "sliceSize": 1000,
               "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}  # fmt: skip
    url = f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups?request={urllib.parse.quote(json.dumps(request))}"
    groups = json.loads(urllib.request.urlopen(url, timeout=60).read())["sessionGroups"]

    trials = trial_files(search.run_dir)
    listed = {group["name"].rsplit("/", 1)[-1] for group in groups}
    assert listed == {f"trial_{trial_id}" for trial_id in trials}, (listed, runs)
    for group in groups:
        assert group["hparams"], group  # each trial's hyperparameters are in the table
    assert any(run.startswith(f"{SEARCH['run']}/logs/trial_") for run in runs), runs


def test_a_worker_container_killed_and_started_again_resumes_its_trial(images, docker, tmp_path, pristine_dataset):
    resume = {**SEARCH, "run": "resume", "max_trials": 1, "epochs": 4, "hypermodel": f"{SHARED_MOUNT}/models/slow.py:build"}
    runner = PodRunner(docker)
    # storage.fixOwnership: the chief's pod runs the chart's init container (as root, CAP_CHOWN) first.
    search = ContainerSearch(runner, tmp_path, pristine_dataset, workers=1, search=resume,
                             worker_env={"FAULT_SLEEP": "1.0"}, values={"storage.fixOwnership": True})  # fmt: skip
    (search.shared / "models").mkdir()
    (search.shared / "models" / "slow.py").write_text(FAULT_HYPERMODEL)
    try:
        search.start("chief", ("Job", "chief"))
        (fix,) = search.pods["chief"].init_containers
        assert runner.state(fix)["ExitCode"] == 0 and "data and runs belong to 1000:1000" in runner.logs(fix)
        first = search.start("tuner0", ("Job", "worker"), 0)
        deadline = time.monotonic() + 300
        while not (epochs := [e for e in attempt_events(search.run_dir) if e.get("event") == "epoch"]):
            assert time.monotonic() < deadline and runner.state(first)["Running"], search.all_logs()
            time.sleep(0.2)
        trial_id = epochs[0]["trial"]
        runner.kill(first)  # SIGKILL, mid-trial: epoch 1 of 4 is done
        assert runner.wait(first, 60) == 137 and not runner.state(first)["OOMKilled"]

        # The Indexed Job's replacement: a new pod with the same index, so the same tuner id.
        again = search.start("tuner0-again", ("Job", "worker"), 0)
        assert again.env[ENV_TUNER_ID] == first.env[ENV_TUNER_ID] == worker_id(0)
        assert again.pod != first.pod
        codes = search.wait_all(["chief", "tuner0-again"], SEARCH_TIMEOUT)
        assert codes == {"chief": 0, "tuner0-again": 0}, search.all_logs()

        assert re.search(rf"trial {trial_id} resumes after epoch [1-3] of 4", search.logs("tuner0-again")), search.all_logs()
        trained = [e["epoch"] for e in attempt_events(search.run_dir) if e.get("event") == "epoch" and e["trial"] == trial_id]
        assert trained.count(0) == 1 and sorted(set(trained)) == [0, 1, 2, 3], f"epoch 1 not trained again: {trained}"
        assert trial_files(search.run_dir)[trial_id]["status"] == "COMPLETED"
        assert [t["trial_id"] for t in _results(search.run_dir)] == [trial_id]
    finally:
        runner.close()
