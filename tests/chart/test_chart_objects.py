"""What the rendered objects say: the contracts of DESIGN.md, per value set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_helpers import (
    CHART,
    NAMESPACE,
    RELEASE,
    _helm,
    by_kind_and_component,
    helm_template,
    pod_spec,
    rendered_containers,
)
from tuner_job import contract

WORKLOADS = [("Job", "chief"), ("Job", "worker"), ("Deployment", "tensorboard"), ("Pod", "test")]
CHIEF_DNS = f"{RELEASE}-keras-tuner-cluster-chief.{NAMESPACE}.svc"


def helm_values_file(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


def objects_of(rendered_sets: dict[str, list[dict[str, Any]]], name: str) -> dict[tuple[str, str | None], dict[str, Any]]:
    return by_kind_and_component(rendered_sets[name])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


ALL_SETS = ["default", "kind", "kind-gpu", "cpu-only", "gpu32x1", "existing-claim", "nfs"]


@pytest.mark.parametrize("name", ALL_SETS)
def test_worker_job_is_indexed_with_one_pod_per_worker(rendered_sets: dict, name: str) -> None:
    values = yaml.safe_load(helm_values_file(name).read_text()) or {}
    workers = values.get("workers", 2)
    job = objects_of(rendered_sets, name)[("Job", "worker")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == workers
    assert spec["backoffLimitPerIndex"] >= 1
    assert pod_spec(job)["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert fail_job[0]["onExitCodes"] == {"containerName": "worker", "operator": "In", "values": [1, 2]}


def test_tuner_ids_and_oracle_address(rendered_sets: dict) -> None:
    """The chart sets what `tuner_job.contract` names: one place for ports, variables and mounts."""
    found = objects_of(rendered_sets, "default")
    (chief,) = pod_spec(found[("Job", "chief")])["containers"]
    (worker,) = pod_spec(found[("Job", "worker")])["containers"]
    chief_env, worker_env = env_of(chief), env_of(worker)
    assert chief_env[contract.ENV_TUNER_ID]["value"] == contract.CHIEF_ID
    assert chief_env[contract.ENV_ORACLE_IP]["value"] == "0.0.0.0"
    assert chief_env[contract.ENV_ORACLE_PORT]["value"] == str(contract.ORACLE_PORT) == "8000"
    # The tuner id is built from the Indexed Job's completion index.
    index = worker_env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert worker_env[contract.ENV_TUNER_ID]["value"] == contract.worker_id("$(JOB_COMPLETION_INDEX)")
    names = list(worker_env)
    assert names.index("JOB_COMPLETION_INDEX") < names.index(contract.ENV_TUNER_ID), "$(VAR) needs VAR declared first"
    assert worker_env[contract.ENV_ORACLE_PORT]["value"] == str(contract.ORACLE_PORT)
    assert worker_env[contract.ENV_CONFIG]["value"] == contract.DEFAULT_CONFIG == "/config/search.yaml"
    assert worker_env[contract.ENV_SHARED_DIR]["value"] == contract.SHARED_MOUNT == "/shared"
    # The workers dial the chief Service by its DNS name.
    service = found[("Service", "chief")]
    assert worker_env[contract.ENV_ORACLE_IP]["value"] == f"{service['metadata']['name']}.{NAMESPACE}.svc" == CHIEF_DNS
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("grpc", contract.ORACLE_PORT)
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "chief"


def test_rendered_containers_resolves_each_process() -> None:
    processes = rendered_containers(helm_values_file("cpu-only"))
    assert processes["chief"]["command"] == ["python", "-m", "tuner_job"]
    assert processes["chief"]["env"]["KERASTUNER_TUNER_ID"] == "chief"
    assert [w["env"]["KERASTUNER_TUNER_ID"] for w in processes["workers"]] == ["tuner0", "tuner1", "tuner2", "tuner3"]
    assert all(w["env"]["KERASTUNER_ORACLE_IP"] == CHIEF_DNS for w in processes["workers"])
    assert all("chief" not in w["env"]["KERASTUNER_TUNER_ID"] for w in processes["workers"])
    search = yaml.safe_load(processes["search_yaml"])
    assert search["tuner"] == "hyperband"
    assert processes["workers"][0]["mounts"]["/config"]["read_only"] is True


def test_search_yaml_is_a_valid_config(rendered_sets: dict) -> None:
    from tuner_job.config import parse_config

    for name, objects in rendered_sets.items():
        config_map = by_kind_and_component(objects)[("ConfigMap", "search")]
        parse_config(yaml.safe_load(config_map["data"]["search.yaml"]), f"{name}: search.yaml")


def gpu_limit(job: dict[str, Any]) -> Any:
    (container,) = pod_spec(job)["containers"]
    return container["resources"].get("limits", {}).get("nvidia.com/gpu")


def test_gpus_per_worker(rendered_sets: dict) -> None:
    assert gpu_limit(objects_of(rendered_sets, "gpu32x1")[("Job", "worker")]) == 1
    assert gpu_limit(objects_of(rendered_sets, "default")[("Job", "worker")]) == 1
    assert gpu_limit(objects_of(rendered_sets, "kind-gpu")[("Job", "worker")]) == 1
    assert gpu_limit(objects_of(rendered_sets, "cpu-only")[("Job", "worker")]) is None
    assert gpu_limit(objects_of(rendered_sets, "kind")[("Job", "worker")]) is None
    # The chief runs the oracle, not training.
    assert gpu_limit(objects_of(rendered_sets, "gpu32x1")[("Job", "chief")]) is None
    worker = objects_of(rendered_sets, "gpu32x1")[("Job", "worker")]
    assert pod_spec(worker)["tolerations"][0]["key"] == "nvidia.com/gpu"


def shared_mount(obj: dict[str, Any]) -> dict[str, Any]:
    spec = pod_spec(obj)
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "shared"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "shared"]
    return {**mount, "volume": volume}


@pytest.mark.parametrize("name", ["default", "kind", "existing-claim"])
def test_one_shared_volume_at_one_path(rendered_sets: dict, name: str) -> None:
    found = objects_of(rendered_sets, name)
    mounts = [shared_mount(found[key]) for key in [("Job", "chief"), ("Job", "worker"), ("Deployment", "tensorboard")]]
    assert {m["mountPath"] for m in mounts} == {"/shared"}
    assert len({repr(m["volume"]) for m in mounts}) == 1, "chief, workers and TensorBoard must see the same volume"
    chief, worker, tensorboard = mounts
    assert not chief.get("readOnly") and not worker.get("readOnly")
    assert tensorboard["readOnly"] is True
    (tb,) = pod_spec(found[("Deployment", "tensorboard")])["containers"]
    assert tb["args"][tb["args"].index("--logdir") + 1] == "/shared/runs"


def test_storage_modes(rendered_sets: dict) -> None:
    default = objects_of(rendered_sets, "default")
    pvc = default[("PersistentVolumeClaim", "shared")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert shared_mount(default[("Job", "chief")])["volume"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    cpu = objects_of(rendered_sets, "cpu-only")[("PersistentVolumeClaim", "shared")]
    assert cpu["spec"]["storageClassName"] == "nfs-client"

    existing = objects_of(rendered_sets, "existing-claim")
    assert ("PersistentVolumeClaim", "shared") not in existing
    assert shared_mount(existing[("Job", "worker")])["volume"]["persistentVolumeClaim"]["claimName"] == "tuner-shared"

    kind = objects_of(rendered_sets, "kind")
    assert ("PersistentVolumeClaim", "shared") not in kind
    assert shared_mount(kind[("Job", "worker")])["volume"]["hostPath"]["path"] == "/shared"


def test_tensorboard_service(rendered_sets: dict) -> None:
    default = objects_of(rendered_sets, "default")[("Service", "tensorboard")]
    assert default["spec"]["type"] == "ClusterIP"
    assert default["spec"]["ports"][0]["port"] == contract.TENSORBOARD_PORT
    kind = objects_of(rendered_sets, "kind")[("Service", "tensorboard")]
    assert kind["spec"]["type"] == "NodePort"
    assert kind["spec"]["ports"][0]["nodePort"] == 30606


def test_network_policy_lets_only_workers_and_the_test_pod_reach_the_oracle(rendered_sets: dict) -> None:
    found = objects_of(rendered_sets, "default")
    policy = found[("NetworkPolicy", "chief")]["spec"]
    chief_labels = pod_spec_labels(found[("Job", "chief")])
    assert policy["podSelector"]["matchLabels"].items() <= chief_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    allowed = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"]), "no namespace or IP peers"
    # Exactly the worker pods and the helm test pod of this release.
    matched = {
        component: any(sel.items() <= pod_spec_labels(found[key]).items() for sel in allowed)
        for component, key in [
            ("worker", ("Job", "worker")),
            ("test", ("Pod", "test")),
            ("tensorboard", ("Deployment", "tensorboard")),
            ("chief", ("Job", "chief")),
        ]
    }
    assert matched == {"worker": True, "test": True, "tensorboard": False, "chief": False}
    assert all(sel["app.kubernetes.io/instance"] == RELEASE for sel in allowed)
    # Every other pod of the release is denied ingress by default.
    deny = found[("NetworkPolicy", "default")]["spec"]
    assert "ingress" not in deny and deny["policyTypes"] == ["Ingress"]
    for key in WORKLOADS:
        assert deny["podSelector"]["matchLabels"].items() <= pod_spec_labels(found[key]).items()


def pod_spec_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("name", ALL_SETS)
def test_every_pod_and_container_is_locked_down(rendered_sets: dict, name: str) -> None:
    found = objects_of(rendered_sets, name)
    values = yaml.safe_load(helm_values_file(name).read_text()) or {}
    uid = values.get("securityContext", {}).get("runAsUser", 1000)
    for key in WORKLOADS:
        spec = pod_spec(found[key])
        assert spec["automountServiceAccountToken"] is False, key
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == uid, key
        assert pod_sc["fsGroupChangePolicy"] == "OnRootMismatch", key
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, key
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp == [{"name": "tmp", "emptyDir": {}}], key
        for container in spec["containers"]:
            where = f"{key} {container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"], where
            assert env_of(container)["HOME"]["value"] == "/tmp", where
            assert container["imagePullPolicy"] in ("IfNotPresent", "Always", "Never"), where
            resources = container["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[part]), f"{where} {part}"


def test_probes(rendered_sets: dict) -> None:
    found = objects_of(rendered_sets, "default")
    (chief,) = pod_spec(found[("Job", "chief")])["containers"]
    # Alive (and started) from the process's first second; Ready once the oracle serves.
    for probe in ("startupProbe", "livenessProbe"):
        assert chief[probe]["grpc"] == {"port": 8000}, probe
    assert chief["readinessProbe"]["grpc"] == {"port": 8000, "service": "keras_tuner.Oracle"}
    (tb,) = pod_spec(found[("Deployment", "tensorboard")])["containers"]
    assert tb["readinessProbe"]["httpGet"]["port"] == "http"
    assert tb["ports"] == [{"name": "http", "containerPort": contract.TENSORBOARD_PORT, "protocol": "TCP"}]
    fallback = by_kind_and_component(helm_template(helm_values_file("default"), set_values={"chief.probe": "tcpSocket"}))[("Job", "chief")]
    (chief,) = pod_spec(fallback)["containers"]
    assert chief["readinessProbe"]["tcpSocket"] == {"port": "grpc"}


def test_helm_test_pod_checks_the_oracle_and_tensorboard(rendered_sets: dict) -> None:
    pod = objects_of(rendered_sets, "default")[("Pod", "test")]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["args"][0]
    assert "grpc_health" in script and "urlopen" in script
    env = env_of(container)
    assert env["ORACLE"]["value"] == f"{CHIEF_DNS}:8000"
    assert env["TENSORBOARD_URL"]["value"].startswith("http://tuner-keras-tuner-cluster-tensorboard.")
    compile(script, "test-connection", "exec")


def test_names_fit_in_63_characters() -> None:
    long_release = "r" * 53  # Helm's own limit on release names.
    result = _helm("template", long_release, str(CHART), "--namespace", NAMESPACE, "--set", "storage.storageClassName=nfs")
    assert result.returncode == 0, result.stderr
    for obj in yaml.safe_load_all(result.stdout):
        if obj:
            name = obj["metadata"]["name"]
            assert len(name) <= 63, name
            assert not name.endswith("-"), name


def test_labels(rendered_sets: dict) -> None:
    for obj in rendered_sets["default"]:
        labels = obj["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, (obj["kind"], obj["metadata"]["name"], key)
        assert obj["metadata"]["namespace"] == NAMESPACE
