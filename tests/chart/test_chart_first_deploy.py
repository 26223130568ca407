"""What a first deploy on a real cluster needs from the chart (issue 18), checked on real `helm template` output.

Storage class, RuntimeClass, one GPU per worker, names that fit the Job
controller's hostnames, the volume's ownership, CPU limits for TensorFlow's
thread pools, and probes that let a slow start live.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chart_helpers import CHART, NAMESPACE, _helm, by_kind_and_component, helm_template, helm_template_error, pod_spec

DEFAULT = CHART / "ci" / "default-values.yaml"
SCHEMA_ERROR = "values don't meet the specifications of the schema"


def containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(obj)["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


# --- storage class ------------------------------------------------------------


def test_a_pvc_made_by_the_chart_needs_a_storage_class() -> None:
    error = helm_template_error()
    assert SCHEMA_ERROR in error, error
    assert "storage.storageClassName" in error, error


@pytest.mark.parametrize(
    "storage",
    [
        pytest.param({"storage.existingClaim": "my-claim"}, id="existing-claim"),
        pytest.param({"storage.hostPath": "/shared"}, id="kind-host-folder"),
        pytest.param({"storage.storageClassName": "nfs-client"}, id="named-class"),
    ],
)
def test_each_way_to_name_the_volume_renders(storage: dict[str, str]) -> None:
    found = by_kind_and_component(helm_template(set_values=storage))
    pvc = found.get(("PersistentVolumeClaim", "shared"))
    if "storage.storageClassName" in storage:
        assert pvc is not None and pvc["spec"]["storageClassName"] == "nfs-client"
    else:
        assert pvc is None


# --- GPUs: RuntimeClass, one per worker, the worker knows what it was given ----


def test_runtime_class_reaches_the_workers_and_the_test_pod() -> None:
    found = by_kind_and_component(
        helm_template(DEFAULT, set_values={"worker.runtimeClassName": "nvidia", "tests.runtimeClassName": "nvidia"})
    )
    assert pod_spec(found[("Job", "worker")])["runtimeClassName"] == "nvidia"
    assert pod_spec(found[("Pod", "test")])["runtimeClassName"] == "nvidia"
    # The chief and TensorBoard need no GPU runtime.
    assert "runtimeClassName" not in pod_spec(found[("Job", "chief")])
    assert "runtimeClassName" not in pod_spec(found[("Deployment", "tensorboard")])
    plain = by_kind_and_component(helm_template(DEFAULT))
    assert "runtimeClassName" not in pod_spec(plain[("Job", "worker")])


@pytest.mark.parametrize(
    ("set_values", "named"),
    [
        pytest.param({"worker.runtimeClassName": "Nvidia_GPU"}, "worker.runtimeClassName", id="runtime-class-not-a-dns-name"),
        pytest.param({"tests.runtimeClassName": "-nvidia"}, "tests.runtimeClassName", id="test-pod-runtime-class"),
        pytest.param({"worker.gpus": 2}, "worker.gpus", id="two-gpus-per-worker"),
    ],
)
def test_gpu_values_are_refused_with_the_key_named(set_values: dict[str, Any], named: str) -> None:
    error = helm_template_error(DEFAULT, set_values)
    assert SCHEMA_ERROR in error, error
    assert named in error, error


@pytest.mark.parametrize(("gpus", "expected"), [(1, "1"), (0, "0")])
def test_workers_are_told_how_many_gpus_they_hold(gpus: int, expected: str) -> None:
    worker = by_kind_and_component(helm_template(DEFAULT, set_values={"worker.gpus": gpus}))[("Job", "worker")]
    assert env_of(containers(worker)["worker"])["TUNER_GPUS"]["value"] == expected


# --- long release names ----------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 10, 11, 100, 10000])
@pytest.mark.parametrize("release", ["r" * 53, "search-" + "x" * 46, "tuner"])
def test_every_worker_hostname_fits_63_characters(release: str, workers: int) -> None:
    """The Job controller names worker i's host `<job name>-<i>`; longer than 63 is refused."""
    result = _helm(
        "template", release, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.30.0",
        "--values", str(DEFAULT), "--set", f"workers={workers}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    worker = by_kind_and_component(objects)[("Job", "worker")]
    name = worker["metadata"]["name"]
    last_host = f"{name}-{workers - 1}"
    assert len(last_host) <= 63, last_host
    assert not name.endswith("-") and name.endswith("-worker"), name
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        kubernetes_validate.validate(obj, "1.30.0", strict=True)


# --- the volume's ownership -----------------------------------------------------------


def test_ownership_fix_is_opt_in_and_runs_as_root_only_in_its_init_container() -> None:
    plain = by_kind_and_component(helm_template(DEFAULT))[("Job", "chief")]
    assert "initContainers" not in pod_spec(plain)
    values = {"storage.fixOwnership": True, "securityContext.runAsUser": 2000, "securityContext.fsGroup": 3000}
    chief = by_kind_and_component(helm_template(DEFAULT, set_values=values))[("Job", "chief")]
    (init,) = pod_spec(chief)["initContainers"]
    assert init["securityContext"]["runAsUser"] == 0
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}
    assert env_of(init)["OWNER"]["value"] == "2000:3000"
    assert {"name": "shared", "mountPath": "/shared"} in init["volumeMounts"]
    # The chief itself stays non-root.
    assert containers(chief)["chief"]["securityContext"]["runAsUser"] == 2000


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_the_ownership_script_gives_the_volume_to_the_pods_user(tmp_path: Path) -> None:
    chief = by_kind_and_component(helm_template(DEFAULT, set_values={"storage.fixOwnership": True}))[("Job", "chief")]
    (init,) = pod_spec(chief)["initContainers"]
    volume = tmp_path / "volume"
    (volume / "data" / "toons" / "a").mkdir(parents=True)
    (volume / "data" / "toons" / "a" / "0.png").write_bytes(b"png")
    os.chown(volume, 0, 0)
    volume.chmod(0o755)
    env = {**os.environ, "SHARED": str(volume), "OWNER": env_of(init)["OWNER"]["value"]}
    result = subprocess.run([*init["command"], init["args"][0]], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    for path in (volume, volume / "data", volume / "runs", volume / "data" / "toons" / "a" / "0.png"):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (1000, 1000), path
    for path in (volume, volume / "data", volume / "runs"):
        mode = path.stat().st_mode
        assert mode & stat.S_IWGRP and mode & stat.S_ISGID, (path, oct(mode))


# --- CPU limits and start-up probes --------------------------------------------------


def test_chief_and_workers_learn_their_cpu_limit_from_the_downward_api() -> None:
    found = by_kind_and_component(helm_template(DEFAULT))
    for key, name in ((("Job", "chief"), "chief"), (("Job", "worker"), "worker")):
        limit = env_of(containers(found[key])[name])["TUNER_CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]
        assert limit == {"containerName": name, "resource": "limits.cpu", "divisor": "1"}, key


def test_the_chief_may_start_slowly_but_is_ready_only_when_the_oracle_serves() -> None:
    chief = containers(by_kind_and_component(helm_template(DEFAULT))[("Job", "chief")])["chief"]
    startup = chief["startupProbe"]
    # The process answers "" from its first second, whatever the dataset's size.
    assert "service" not in startup["grpc"]
    assert chief["readinessProbe"]["grpc"]["service"] == "keras_tuner.Oracle"
    from tuner_job.oracle_server import SERVICE_NAME

    assert chief["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
