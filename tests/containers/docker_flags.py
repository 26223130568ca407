"""The `docker run` flags for a pod's securityContext, a container's resource limits and the Services' names.

Part of the converter in `pod_to_docker` (read its docstring first): each
function maps one Kubernetes field group and raises ConversionError, naming
the field, for anything it does not map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chart_helpers import pod_metadata, pod_spec, quantity

__all__ = ["ConversionError", "SecurityFlags", "check_fields", "resource_flags", "security_flags", "service_hosts"]

POD_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy",
                "supplementalGroups", "seccompProfile", "sysctls"}  # fmt: skip
_CONTAINER_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "allowPrivilegeEscalation", "privileged",
                       "readOnlyRootFilesystem", "capabilities", "seccompProfile", "procMount"}  # fmt: skip


class ConversionError(Exception):
    """The rendered pod has a field that has no docker equivalent here (the message names it)."""


def check_fields(where: str, given: Mapping[str, Any], known: set[str]) -> None:
    """Raise ConversionError naming every key of `given` that is not in `known`."""
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConversionError(f"{where}: {', '.join(unknown)} not converted to docker run (tests/containers/)")


@dataclass(frozen=True)
class SecurityFlags:
    flags: list[str]
    # `--user` value, or None for the image's USER.
    user: str | None
    read_only_root: bool
    # runAsNonRoot without runAsUser: the runner must check that the image's USER is a non-zero uid.
    check_image_non_root: bool


def security_flags(pod: Mapping[str, Any], container: Mapping[str, Any], where: str) -> SecurityFlags:
    """The flags for pod securityContext `pod` and container securityContext `container` (which wins).

    Kubernetes' default seccomp is Unconfined, docker's is its RuntimeDefault
    profile: an unset profile becomes `--security-opt seccomp=unconfined`.
    """
    check_fields(f"{where}: pod securityContext", pod, POD_SECURITY)
    check_fields(f"{where}: securityContext", container, _CONTAINER_SECURITY)
    merged = {**pod, **container}
    flags: list[str] = []
    uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
    if gid is not None and uid is None:
        raise ConversionError(f"{where}: runAsGroup without runAsUser is not converted")
    if merged.get("runAsNonRoot") and uid == 0:
        raise ConversionError(f"{where}: runAsNonRoot with runAsUser 0 (the kubelet refuses it)")
    user = None if uid is None else (f"{uid}:{gid}" if gid is not None else str(uid))
    if user:
        flags += ["--user", user]
    groups = ([pod["fsGroup"]] if "fsGroup" in pod else []) + list(pod.get("supplementalGroups", []))
    for group in dict.fromkeys(groups):
        flags += ["--group-add", str(group)]
    for sysctl in pod.get("sysctls", []):
        flags += ["--sysctl", f"{sysctl['name']}={sysctl['value']}"]
    read_only = bool(merged.get("readOnlyRootFilesystem"))
    if read_only:
        flags.append("--read-only")
    if merged.get("privileged"):
        flags.append("--privileged")
    if merged.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    capabilities = merged.get("capabilities", {})
    check_fields(f"{where}: capabilities", capabilities, {"drop", "add"})
    for cap in capabilities.get("drop", []):
        flags += ["--cap-drop", cap]
    for cap in capabilities.get("add", []):
        flags += ["--cap-add", cap]
    seccomp = merged.get("seccompProfile", {}).get("type", "Unconfined")
    if seccomp == "Unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise ConversionError(f"{where}: seccompProfile {seccomp} is not converted")
    if merged.get("procMount", "Default") != "Default":
        raise ConversionError(f"{where}: procMount {merged['procMount']} is not converted")
    return SecurityFlags(flags, user, read_only, bool(merged.get("runAsNonRoot")) and uid is None)


def _quantity(value: Any, what: str) -> float:
    try:
        return quantity(value)
    except ValueError:
        raise ConversionError(f"{what}: cannot read the quantity {value!r}") from None


def resource_flags(resources: Mapping[str, Any], where: str) -> list[str]:
    """Limits as `--cpus`, `--memory` (bytes) and `--gpus`; requests are the scheduler's business."""
    limits = resources.get("limits", {})
    where = f"{where}: resources.limits"
    check_fields(where, limits, {"cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"})
    flags = []
    if "cpu" in limits:
        flags += ["--cpus", f"{_quantity(limits['cpu'], where + '.cpu'):g}"]
    if "memory" in limits:
        flags += ["--memory", str(int(_quantity(limits["memory"], where + ".memory")))]
    if int(limits.get("nvidia.com/gpu", 0)):
        flags += ["--gpus", str(int(limits["nvidia.com/gpu"]))]
    return flags


def service_hosts(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every DNS name of every rendered Service, for `--add-host NAME:127.0.0.1`.

    Raises ConversionError when a Service sends its port to another port of
    the pods it selects: with no kube-proxy, a client on the host network
    reaches the container port itself.
    """
    hosts: list[str] = []
    workloads = [o for o in objects if o["kind"] in ("Job", "Deployment", "StatefulSet", "Pod")]
    for service in (o for o in objects if o["kind"] == "Service"):
        name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", "default")
        hosts += [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        selector = service["spec"].get("selector", {})
        for workload in workloads:
            labels = pod_metadata(workload).get("labels", {})
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            ports = {p.get("name"): p["containerPort"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                number = ports.get(target) if isinstance(target, str) else int(target)
                if number != port["port"]:
                    raise ConversionError(
                        f"Service {name}: port {port['port']} goes to {target!r} ({number}) of "
                        f"{workload['metadata']['name']}; on the host network they must be equal"
                    )
    return hosts
