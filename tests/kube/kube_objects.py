"""Kubernetes objects as the API server returns them (JSON dicts), for the fake API server."""

from __future__ import annotations

from typing import Any

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:01:00Z"


def _labels(release: str, component: str | None) -> dict[str, str]:
    labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/name": "keras-tuner-cluster"}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def helm_release(name: str = "tuner", namespace: str = "default", revision: int = 1, status: str = "deployed") -> dict[str, Any]:
    """Helm's record of a release revision: a Secret labelled owner=helm."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": f"sh.helm.release.v1.{name}.v{revision}", "namespace": namespace,
                     "labels": {"owner": "helm", "name": name, "status": status, "version": str(revision)}},
    }  # fmt: skip


def job(component: str, release: str = "tuner", namespace: str = "default", *, complete: bool = False, failed: str | None = None,
        claim: str | None = "tuner-keras-tuner-cluster-shared", host_path: str | None = None, uid: int = 1000,
        fs_group: int = 1000, completions: int = 1, max_failed_indexes: int | None = None) -> dict[str, Any]:  # fmt: skip
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": failed})
    shared = {"name": "shared", "hostPath": {"path": host_path}} if host_path else {"name": "shared", "persistentVolumeClaim": {"claimName": claim}}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{release}-keras-tuner-cluster-{component}", "namespace": namespace, "labels": _labels(release, component)},
        "spec": {"completions": completions, "parallelism": completions, "maxFailedIndexes": max_failed_indexes, "template": {"spec": {
            "securityContext": {"runAsUser": uid, "runAsGroup": uid, "fsGroup": fs_group},
            "containers": [{"name": component, "image": "keras-tuner-cluster/tuner:0.1.0"}],
            "volumes": [shared]}}},
        "status": {"conditions": conditions, "active": 0 if complete or failed else 1},
    }  # fmt: skip


def pod(component: str, release: str = "tuner", namespace: str = "default", *, phase: str = "Running", ready: bool = False,
        waiting: str | None = None, message: str = "", unschedulable: str | None = None, name: str | None = None,
        created: str = T0, restarts: int = 0, last_exit: int | None = None, index: int | None = None) -> dict[str, Any]:  # fmt: skip
    state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if unschedulable:
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable})
    else:
        container = {"name": component, "image": "keras-tuner-cluster/tuner:0.1.0", "imageID": "", "ready": ready,
                     "restartCount": restarts, "state": state}
        if last_exit is not None:
            container["lastState"] = {"terminated": {"exitCode": last_exit}}
        status["containerStatuses"] = [container]
    labels = _labels(release, component)
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name or f"{release}-keras-tuner-cluster-{component}-abcde", "namespace": namespace,
                     "labels": labels, "creationTimestamp": created},
        "spec": {"containers": [{"name": component, "image": "keras-tuner-cluster/tuner:0.1.0"}]},
        "status": status,
    }  # fmt: skip


def claim(name: str = "tuner-keras-tuner-cluster-shared", namespace: str = "default", *, phase: str = "Bound",
          storage_class: str | None = "standard-rwo", modes: tuple[str, ...] = ("ReadWriteMany",),
          release: str = "tuner") -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"accessModes": list(modes), "resources": {"requests": {"storage": "20Gi"}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(release, "shared")},
        "spec": spec, "status": {"phase": phase},
    }  # fmt: skip


def warning(kind: str, name: str, reason: str, message: str, namespace: str = "default", when: str = T1) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": reason, "message": message,
        "metadata": {"name": f"{name}.{reason.lower()}", "namespace": namespace},
        "involvedObject": {"kind": kind, "name": name, "namespace": namespace}, "lastTimestamp": when,
    }  # fmt: skip


def service(component: str, release: str = "tuner", namespace: str = "default", node_port: int | None = None) -> dict[str, Any]:
    port: dict[str, Any] = {"port": 6006} if node_port is None else {"port": 6006, "nodePort": node_port}
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": f"{release}-keras-tuner-cluster-{component}", "namespace": namespace, "labels": _labels(release, component)},
        "spec": {"type": "ClusterIP" if node_port is None else "NodePort", "ports": [port]},
    }  # fmt: skip


def node(name: str, gpus: int = 0) -> dict[str, Any]:
    allocatable = {"cpu": "4", "memory": "16Gi"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"allocatable": allocatable}}


def storage_class(name: str, provisioner: str = "nfs.csi.k8s.io") -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name}, "provisioner": provisioner}


def runtime_class(name: str) -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": name}
