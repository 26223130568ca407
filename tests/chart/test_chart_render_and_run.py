"""The chief and worker containers, exactly as the chart renders them, run a whole search as local processes.

What is swapped for a local stand-in (the Service's DNS name, the mounts,
the interpreter) is listed in `local_pods`; command, args, the rest of the
environment and JOB_COMPLETION_INDEX per worker are the chart's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from chart_helpers import NAMESPACE, by_kind_and_component, helm_template, rendered_containers
from local_pods import LocalPods, free_port

SEARCH = {
    "run": "chart",
    "data": "data/toonvision",
    "image_size": [24, 16],
    "max_trials": 4,
    "epochs": 1,
    "batch_size": 16,
}
WORKERS = 2
TIMEOUT = 240


STAGED = {**SEARCH, "run": "staged", "stages": "random:3,bayesian:2", "stage_top": 2}


@pytest.mark.slow
@pytest.mark.parametrize("search", [SEARCH, STAGED], ids=["one-search", "two-stages"])
def test_rendered_chief_and_workers_run_a_search(shared: Path, tmp_path: Path, search: dict) -> None:
    port = free_port()
    # No GPU here: a worker given one (the default) would stop with exit 2 rather than train on the CPU.
    values = {"workers": WORKERS, "chief.port": port, "worker.gpus": 0, "storage.storageClassName": "nfs-client", "search": search}
    rendered = rendered_containers(set_values=values)
    objects = by_kind_and_component(helm_template(set_values=values))
    service = objects[("Service", "chief")]
    chief, workers = rendered["chief"], rendered["workers"]
    assert len(workers) == WORKERS

    # --- what is swapped is what the chart says it is ---------------------------
    service_dns = f"{service['metadata']['name']}.{service['metadata'].get('namespace', NAMESPACE)}.svc"
    (service_port,) = service["spec"]["ports"]
    target = service_port["targetPort"]
    target_port = chief["ports"][target] if isinstance(target, str) else target
    assert target_port == port, (service_port, chief["ports"])
    assert chief["env"]["KERASTUNER_ORACLE_IP"] == "0.0.0.0"
    assert chief["env"]["KERASTUNER_ORACLE_PORT"] == str(port)
    assert chief["env"]["KERASTUNER_TUNER_ID"] == "chief"
    for index, worker in enumerate(workers):
        assert worker["env"]["KERASTUNER_ORACLE_IP"] == service_dns, worker["env"]
        assert worker["env"]["KERASTUNER_ORACLE_PORT"] == str(port)
        assert worker["env"]["JOB_COMPLETION_INDEX"] == str(index)
        assert worker["env"]["KERASTUNER_TUNER_ID"] == f"tuner{index}"
    search_yaml = yaml.safe_load(rendered["search_yaml"])
    assert {key: search_yaml.get(key) for key in search} == search, search_yaml

    # --- the volumes: one shared folder, one config folder, a /tmp per process ---
    pods = LocalPods(shared, tmp_path, port)
    try:
        pods.start("chief", chief, rendered["search_yaml"])
        for index, worker in enumerate(workers):
            pods.start(f"tuner{index}", worker, rendered["search_yaml"])
        codes = pods.wait_all(time.monotonic() + TIMEOUT)
        assert codes == {"chief": 0, **{f"tuner{i}": 0 for i in range(WORKERS)}}, pods.all_logs()
    finally:
        pods.kill_all()
    all_logs = pods.all_logs

    # Each run (one, or one per stage) trained what it should, each trial once.
    if "stages" in search:
        runs = {f"{search['run']}-s{i}": int(part.split(":")[1]) for i, part in enumerate(search["stages"].split(","), start=1)}
    else:
        runs = {search["run"]: search["max_trials"]}
    trained_by: set[str] = set()
    for run, budget in runs.items():
        run_dir = shared / "runs" / run
        trials = {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "tuner").glob("trial_*/trial.json")}
        trained = {k: t for k, t in trials.items() if not str(t.get("message") or "").startswith("warm-start:")}
        assert sorted(t["status"] for t in trained.values()) == ["COMPLETED"] * budget, (run, all_logs())
        results = json.loads((run_dir / "results.json").read_text())
        ids = [t["trial_id"] for t in results["trials"]]
        assert sorted(ids) == sorted(t["trial_id"] for t in trials.values()) and len(ids) == len(set(ids)), ids
        trained_by |= {t["worker"] for t in results["trials"] if not t["worker"].startswith("warm-start:")}
    assert trained_by == {f"tuner{i}" for i in range(WORKERS)}, (trained_by, all_logs())
