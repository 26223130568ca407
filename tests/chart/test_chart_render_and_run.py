"""The chief and worker containers, exactly as the chart renders them, run a whole search as local processes.

Only what a cluster provides is swapped for a local stand-in:

- the chief Service's DNS name (the workers' KERASTUNER_ORACLE_IP) and the
  chief's bind address 0.0.0.0 become 127.0.0.1 (tests bind loopback only);
- the oracle port is a free port, rendered through the chart's `chief.port`;
- every mount (the shared volume, /config, /tmp) becomes a local folder,
  wherever its path occurs in the environment; /config holds the rendered
  ConfigMap's search.yaml;
- `python` in the container's command becomes this interpreter.

Command, args, the rest of the environment and JOB_COMPLETION_INDEX per
worker are the chart's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_helpers import NAMESPACE, by_kind_and_component, helm_template, rendered_containers

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _swap_paths(value: str, mounts: dict[str, Path]) -> str:
    """Replace each mount path (a whole path or a path prefix) in `value` by its local folder, in one pass."""
    if not mounts:
        return value
    alternatives = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/.-])({alternatives})(?=/|$|[:;,\s])")
    return pattern.sub(lambda m: str(mounts[m.group(1)]), value)


def _local_command(proc: dict[str, Any], mounts: dict[str, Path]) -> list[str]:
    command = list(proc["command"]) + list(proc["args"])
    assert command, f"{proc['name']}: the chart renders no command"
    assert command[0] in ("python", "python3"), command
    return [sys.executable] + [_swap_paths(part, mounts) for part in command[1:]]


def _local_env(proc: dict[str, Any], mounts: dict[str, Path], port: int) -> dict[str, str]:
    env = dict(os.environ)
    # The image has no such variables; the host's must not leak into the run.
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "TUNER_CONFIG", "TUNER_SHARED_DIR", "JOB_COMPLETION_INDEX"):
        env.pop(name, None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update({name: _swap_paths(value, mounts) for name, value in proc["env"].items()})
    assert env["KERASTUNER_ORACLE_PORT"] == str(port)
    env["KERASTUNER_ORACLE_IP"] = "127.0.0.1"
    return env


STAGED = {**SEARCH, "run": "staged", "stages": "random:3,bayesian:2", "stage_top": 2}


@pytest.mark.slow
@pytest.mark.parametrize("search", [SEARCH, STAGED], ids=["one-search", "two-stages"])
def test_rendered_chief_and_workers_run_a_search(shared: Path, tmp_path: Path, search: dict) -> None:
    port = _free_port()
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
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}

    def local_mounts(name: str, proc: dict[str, Any]) -> dict[str, Path]:
        local: dict[str, Path] = {}
        for path, mount in proc["mounts"].items():
            source = mount["source"]
            if "configMap" in source:
                local[path] = config_dir
            elif "emptyDir" in source:
                local[path] = tmp_path / "emptydir" / name / mount["volume"]
                local[path].mkdir(parents=True)
            else:  # the shared volume: a PVC or a host folder
                assert mount["volume"] == "shared" and not mount["read_only"], (path, mount)
                local[path] = shared
        assert config_dir in local.values() and shared in local.values(), proc["mounts"]
        return local

    def start(name: str, proc: dict[str, Any]) -> None:
        mounts = local_mounts(name, proc)
        (config_dir / "search.yaml").write_text(rendered["search_yaml"])
        env = _local_env(proc, mounts, port)
        assert Path(env["TUNER_CONFIG"]) == config_dir / "search.yaml"
        assert Path(env["TUNER_SHARED_DIR"]) == shared
        workdir = tmp_path / "workdir" / name
        workdir.mkdir(parents=True)
        cwd = _swap_paths(proc["working_dir"], mounts) if proc.get("working_dir") else workdir
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "wb") as handle:
            procs[name] = subprocess.Popen(_local_command(proc, mounts), env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)

    def all_logs() -> str:
        return "\n".join(f"===== {name}\n{path.read_text(errors='replace')[-4000:]}" for name, path in logs.items())

    try:
        start("chief", chief)
        for index, worker in enumerate(workers):
            start(f"tuner{index}", worker)
        deadline = time.monotonic() + TIMEOUT
        codes: dict[str, int | None] = {}
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = None
        assert codes == {"chief": 0, **{f"tuner{i}": 0 for i in range(WORKERS)}}, all_logs()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

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
