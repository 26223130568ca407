"""The converter from rendered pods to `docker run`, on the real `helm template` output (no engine needed)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_helpers import by_kind_and_component, helm_template, pod_spec, require_tool
from container_setup import IMAGES, chart_values
from docker_flags import resource_flags, security_flags
from pod_to_docker import ContainerRun, ConversionError, convert_pod
from tuner_job.contract import CONFIG_MOUNT, ENV_ORACLE_IP, ENV_ORACLE_PORT, ENV_TUNER_ID, SHARED_MOUNT, worker_id

SEARCH = {"run": "unit", "max_trials": 2, "epochs": 1}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    require_tool("helm")
    return helm_template(set_values=chart_values(workers=2, chief_port=18000, tensorboard_port=16006, search=SEARCH))


def _claims(objects: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    (claim,) = (o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim")
    return {claim: folder}


def _options(run: ContainerRun, flag: str) -> list[str]:
    argv = run.options
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_chief_and_workers_are_the_rendered_containers(rendered, tmp_path):
    objects = by_kind_and_component(rendered)
    shared = tmp_path / "shared"
    chief_pod = convert_pod(rendered, ("Job", "chief"), workdir=tmp_path, claims=_claims(rendered, shared))
    workers = [convert_pod(rendered, ("Job", "worker"), index=i, workdir=tmp_path, claims=_claims(rendered, shared)) for i in range(2)]
    (chief,) = chief_pod.containers
    spec = pod_spec(objects[("Job", "chief")])["containers"][0]

    assert chief.image == spec["image"] == IMAGES["tuner"]
    assert chief.argv()[-5:] == ["--entrypoint", "python", IMAGES["tuner"], "-m", "tuner_job"]
    assert chief.command == spec["command"] and chief.args == spec.get("args", [])
    # Loopback only: the chief's bind to every interface is the one rewrite.
    assert chief.rewrites == [f"env {ENV_ORACLE_IP}=0.0.0.0 -> 127.0.0.1"]
    assert chief.env[ENV_ORACLE_IP] == "127.0.0.1" and chief.env[ENV_ORACLE_PORT] == "18000"

    service = objects[("Service", "chief")]["metadata"]
    dns = f"{service['name']}.{service['namespace']}.svc"
    for index, pod in enumerate(workers):
        (worker,) = pod.containers
        assert pod.name.startswith(f"{objects[('Job', 'worker')]['metadata']['name']}-{index}-")
        assert worker.env["JOB_COMPLETION_INDEX"] == str(index)
        assert worker.env[ENV_TUNER_ID] == worker_id(index)
        assert worker.env[ENV_ORACLE_IP] == dns and worker.rewrites == []
        assert f"{dns}:127.0.0.1" in [opt.removeprefix("--add-host=") for opt in worker.options if opt.startswith("--add-host=")]
        assert pod.labels["batch.kubernetes.io/job-completion-index"] == str(index)
        assert f"JOB_COMPLETION_INDEX={index}" in _options(worker, "--env")

    for run in [chief] + [pod.containers[0] for pod in workers]:
        assert _options(run, "--network") == ["host"]
        assert _options(run, "--user") == ["1000:1000"] and _options(run, "--group-add") == ["1000"]
        assert "--read-only" in run.options and _options(run, "--cap-drop") == ["ALL"]
        assert _options(run, "--security-opt") == ["no-new-privileges"], "RuntimeDefault seccomp is docker's default"
        assert _options(run, "--cpus") == ["1"] and _options(run, "--memory")[0].isdigit()
        assert "--gpus" not in run.options
        mounts = {target: (source, ro) for target, (source, ro) in run.mounts.items()}
        assert mounts[SHARED_MOUNT] == (shared, False)
        config, read_only = mounts[CONFIG_MOUNT]
        assert read_only and yaml.safe_load((config / "search.yaml").read_text())["run"] == "unit"
        assert mounts["/tmp"][0].parent.parent.name == run.pod, "/tmp is the pod's own emptyDir"
    assert chief_pod.fs_group == 1000 and shared in chief_pod.fs_group_dirs


def test_flags_follow_the_values_not_a_fixed_list(tmp_path):
    require_tool("helm")
    values = chart_values(workers=1, chief_port=18000, tensorboard_port=16006, search=SEARCH)
    values |= {"securityContext.runAsUser": 1234, "securityContext.fsGroup": 4321, "worker.gpus": 1, "worker.runtimeClassName": "nvidia"}
    objects = helm_template(set_values=values)

    (worker,) = convert_pod(objects, ("Job", "worker"), index=0, workdir=tmp_path, claims=_claims(objects, tmp_path)).containers

    assert _options(worker, "--user") == ["1234:1000"] and _options(worker, "--group-add") == ["4321"]
    assert _options(worker, "--gpus") == ["1"] and _options(worker, "--runtime") == ["nvidia"]


def test_tensorboard_reads_the_volume_read_only_on_loopback(rendered, tmp_path):
    (board,) = convert_pod(rendered, ("Deployment", "tensorboard"), workdir=tmp_path, claims=_claims(rendered, tmp_path)).containers

    assert board.image == IMAGES["tensorboard"]
    assert board.mounts[SHARED_MOUNT] == (tmp_path, True)
    assert board.rewrites == ["arg --bind_all -> --host 127.0.0.1"]
    argv = board.argv()
    start = argv.index("--logdir")
    assert argv[start : start + 6] == ["--logdir", f"{SHARED_MOUNT}/runs", "--host", "127.0.0.1", "--port", "16006"]
    assert argv[start + 6 :] == ["--window_title", "keras-tuner-cluster tuner-test/tuner"], "the title `tunectl tensorboard` checks"
    assert board.readiness["httpGet"] == {"path": "/", "port": 16006}, "the named port is resolved"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda spec: spec["containers"][0].__setitem__("lifecycle", {"preStop": {}}), "lifecycle"),
        (lambda spec: spec.__setitem__("hostIPC", True), "hostIPC"),
        (lambda spec: spec["securityContext"].__setitem__("seLinuxOptions", {"level": "s0"}), "seLinuxOptions"),
        (lambda spec: spec["containers"][0]["securityContext"]["capabilities"].__setitem__("keep", []), "keep"),
        (lambda spec: spec["volumes"].append({"name": "s", "secret": {"secretName": "x"}}), "secret"),
        (lambda spec: spec.__setitem__("enableServiceLinks", True), "enableServiceLinks"),
        (lambda spec: spec["containers"][0]["resources"]["limits"].__setitem__("cpu", "lots"), "'lots'"),
    ],
    ids=["container-field", "pod-field", "pod-security", "capabilities", "volume-type", "service-links", "quantity"],
)
def test_a_field_it_does_not_convert_is_named(rendered, tmp_path, change, named):
    objects = copy.deepcopy(rendered)
    change(pod_spec(by_kind_and_component(objects)[("Job", "chief")]))

    with pytest.raises(ConversionError, match=named):
        convert_pod(objects, ("Job", "chief"), workdir=tmp_path, claims=_claims(objects, tmp_path))


def test_a_pvc_without_a_host_folder_and_a_missing_index_are_refused(rendered, tmp_path):
    with pytest.raises(ConversionError, match="no host folder given for PVC"):
        convert_pod(rendered, ("Job", "chief"), workdir=tmp_path)
    with pytest.raises(ConversionError, match="index"):
        convert_pod(rendered, ("Job", "worker"), workdir=tmp_path, claims=_claims(rendered, tmp_path))


def test_a_service_that_changes_the_port_is_refused(tmp_path):
    require_tool("helm")
    values = chart_values(workers=1, chief_port=18000, tensorboard_port=16006, search=SEARCH)
    objects = helm_template(set_values={**values, "tensorboard.service.port": 80})

    with pytest.raises(ConversionError, match="port 80 goes to 'http' \\(16006\\)"):
        convert_pod(objects, ("Job", "chief"), workdir=tmp_path, claims=_claims(objects, tmp_path))


def test_the_charts_init_container_comes_first_as_root_with_its_capabilities(tmp_path):
    require_tool("helm")
    values = chart_values(workers=1, chief_port=18000, tensorboard_port=16006, search=SEARCH) | {"storage.fixOwnership": True}
    objects = helm_template(set_values=values)

    pod = convert_pod(objects, ("Job", "chief"), workdir=tmp_path, claims=_claims(objects, tmp_path / "shared"))

    (init,) = pod.init_containers
    (chief,) = pod.containers
    assert init.init and init.name == "fix-ownership" and not chief.init
    assert _options(init, "--user") == ["0:0"] and _options(init, "--cap-drop") == ["ALL"]
    assert _options(init, "--cap-add") == ["CHOWN", "FOWNER", "DAC_OVERRIDE"]
    assert init.env["OWNER"] == "1000:1000" and init.env["SHARED"] == SHARED_MOUNT
    assert init.mounts[SHARED_MOUNT] == chief.mounts[SHARED_MOUNT] == (tmp_path / "shared", False)
    assert init.argv()[-4:-1] == ["sh", IMAGES["tuner"], "-c"]


def test_security_context_and_limits_map_to_docker_flags():
    unset = security_flags({}, {}, "p/c")
    assert unset.flags == ["--security-opt", "seccomp=unconfined"], "Kubernetes' default seccomp is Unconfined"
    assert unset.user is None and not unset.read_only_root

    pod = {"runAsNonRoot": True, "supplementalGroups": [5, 6]}
    checked = security_flags(pod, {"capabilities": {"add": ["NET_BIND_SERVICE"]}, "seccompProfile": {"type": "RuntimeDefault"}}, "p/c")
    assert checked.check_image_non_root and checked.flags == ["--group-add", "5", "--group-add", "6", "--cap-add", "NET_BIND_SERVICE"]

    with pytest.raises(ConversionError, match="runAsUser 0"):
        security_flags({"runAsNonRoot": True}, {"runAsUser": 0}, "p/c")
    with pytest.raises(ConversionError, match="Localhost"):
        security_flags({}, {"seccompProfile": {"type": "Localhost"}}, "p/c")
    assert resource_flags({"requests": {"cpu": "8"}, "limits": {"cpu": "500m", "memory": "1.5Gi"}}, "p/c") == [
        "--cpus", "0.5", "--memory", str(3 * 2**29)
    ]  # fmt: skip
