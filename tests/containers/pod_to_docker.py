"""Turn a pod that `helm template` renders into the `docker run` lines a kubelet would amount to.

`convert_pod(objects, workload, ...)` takes the rendered objects (a list of
dicts, as `chart_helpers.helm_template` returns them) and one workload in
them (a Job, an Indexed Job's pod `index`, a Deployment or a Pod) and returns
a `PodRun`: its init containers and containers, each a `ContainerRun` whose
`argv` is the `docker run` command (without `docker`, without `--detach`).
It runs nothing: `docker_pods.PodRunner` does. `docker_flags` maps the
security context, the resource limits and the Services.

What the pod spec says, docker is told:

- image, `command` (the entrypoint) and `args`, `$(VAR)` expanded; `env` with
  `valueFrom` filled in from the pod (its name, namespace, labels and
  annotations: an Indexed Job's pod carries its completion index, and
  JOB_COMPLETION_INDEX is set as the Job controller sets it), `workingDir`;
- volumes: a ConfigMap's data written to a folder and bind-mounted read-only
  (as the kubelet's projection is); a PVC and a hostPath bind-mount the host
  folder the caller names for them; an emptyDir is a fresh folder per pod on
  the disk (world-writable, the fsGroup's, shared by the pod's containers and
  kept when one restarts, as the kubelet makes it), `--tmpfs` when its medium
  is Memory; `subPath` and `readOnly` as given;
- pod and container securityContext: runAsUser/runAsGroup -> `--user`,
  fsGroup and supplementalGroups -> `--group-add` (and `fs_group_dirs`, the
  folders a runner must give to that group, as the kubelet does),
  readOnlyRootFilesystem -> `--read-only`, allowPrivilegeEscalation false ->
  `--security-opt no-new-privileges`, capabilities -> `--cap-drop/--cap-add`,
  seccomp RuntimeDefault -> docker's default profile (Unconfined or unset ->
  `seccomp=unconfined`), privileged -> `--privileged`, sysctls -> `--sysctl`,
  runAsNonRoot -> refused for uid 0, else checked against the image by the
  runner;
- resource limits -> `--cpus`, `--memory`, `--gpus`; runtimeClassName ->
  `--runtime`; terminationGracePeriodSeconds -> `--stop-timeout`; the pod's
  name -> `--hostname`; its labels -> docker labels.

What a cluster provides and one machine does not is replaced, each time in
the same way:

- every container is on the host network, and each rendered Service's DNS
  names (`name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`) map to
  127.0.0.1 (`--add-host`); with no kube-proxy a Service must send its port to
  the same container port, else ConversionError;
- with `loopback=True` (tests bind loopback only) a bind to every interface is
  a bind to 127.0.0.1: an env value `0.0.0.0` and the `--bind_all` argument
  are rewritten, and each rewrite is listed in `ContainerRun.rewrites`;
- requests, nodeSelector, tolerations, affinity, pull policy and secrets are
  the scheduler's and the registry's business: ignored.

Any other field raises ConversionError naming it, so that a chart change
cannot be dropped here without a test noticing.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chart_helpers import by_kind_and_component, expand, pod_fields, pod_spec, resolve_env
from docker_flags import ConversionError, check_fields, resource_flags, security_flags, service_hosts

__all__ = ["COMPLETION_INDEX", "ContainerRun", "ConversionError", "PodRun", "convert_pod"]

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LOOPBACK = "127.0.0.1"
_TMPFS = Path("/dev/shm/emptyDir")  # a memory-backed emptyDir's "source": docker run --tmpfs
# Pod fields that only the scheduler, the registry or the API server reads.
_SCHEDULING = {
    "affinity", "nodeSelector", "tolerations", "topologySpreadConstraints", "priorityClassName",
    "priority", "schedulerName", "preemptionPolicy", "imagePullSecrets", "serviceAccountName",
    "serviceAccount", "restartPolicy", "activeDeadlineSeconds",
}  # fmt: skip
_POD_FIELDS = _SCHEDULING | {
    "containers", "initContainers", "volumes", "securityContext", "automountServiceAccountToken",
    "enableServiceLinks", "terminationGracePeriodSeconds", "runtimeClassName", "hostname",
}  # fmt: skip
_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "ports", "resources",
    "securityContext", "volumeMounts", "workingDir", "startupProbe", "readinessProbe",
    "livenessProbe", "terminationMessagePath", "terminationMessagePolicy",
}  # fmt: skip


@dataclass
class ContainerRun:
    """One container of the pod, as `docker run` arguments: `argv()`."""

    pod: str
    name: str
    docker_name: str
    image: str
    init: bool
    # `docker run` options, before the image.
    options: list[str]
    # Kubernetes' command (replaces the image's ENTRYPOINT, drops its CMD) and args (replace CMD).
    command: list[str]
    args: list[str]
    env: dict[str, str]
    # mount path -> (host folder or file, read-only)
    mounts: dict[str, tuple[Path, bool]]
    # readinessProbe / startupProbe with named ports resolved to numbers, or None.
    readiness: dict[str, Any] | None
    startup: dict[str, Any] | None
    user: str | None
    read_only_root: bool
    # runAsNonRoot without runAsUser: the image's USER must be a non-zero uid.
    check_image_non_root: bool
    rewrites: list[str] = field(default_factory=list)

    def argv(self, command: Sequence[str] | None = None) -> list[str]:
        """`run OPTIONS IMAGE ...` as rendered, or with `command` in place of the container's."""
        if command is not None:
            return [*self.options, "--entrypoint", command[0], self.image, *command[1:]]
        if self.command:
            return [*self.options, "--entrypoint", self.command[0], self.image, *self.command[1:], *self.args]
        return [*self.options, self.image, *self.args]


@dataclass
class PodRun:
    """A pod: init containers (run in order, each to exit 0), then its containers."""

    name: str
    labels: dict[str, str]
    init_containers: list[ContainerRun]
    containers: list[ContainerRun]
    fs_group: int | None
    # Host folders the kubelet would give to fs_group (PVCs, emptyDirs; not hostPath).
    fs_group_dirs: list[Path]
    # Host folders to create (emptyDirs, hostPath DirectoryOrCreate); ConfigMaps are written already.
    make_dirs: list[Path]

    def container(self, name: str) -> ContainerRun:
        return next(c for c in self.init_containers + self.containers if c.name == name)


def _random(length: int) -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(length))


def _pod_name(workload: Mapping[str, Any], index: int | None) -> str:
    """A new pod's name, the controllers' way: `<job>-<index>-<random>`, `<deployment>-<hash>-<random>`, ..."""
    name = workload["metadata"]["name"]
    if workload["kind"] == "Pod":
        return name
    if index is not None:
        return f"{name}-{index}-{_random(5)}"
    if workload["kind"] == "Deployment":
        return f"{name}-{_random(10)}-{_random(5)}"
    return f"{name}-{_random(5)}"


class _Converter:
    """Converts one pod; keeps what its containers share (volumes, security context, hosts)."""

    def __init__(self, objects: Sequence[Mapping[str, Any]], workload: Mapping[str, Any], index: int | None,
                 claims: Mapping[str, Path], host_paths: Mapping[str, Path], workdir: Path, loopback: bool,
                 labels: Mapping[str, str]) -> None:  # fmt: skip
        self.index, self.loopback = index, loopback
        self.spec = pod_spec(workload)
        check_fields(f"{workload['kind']} {workload['metadata']['name']}: pod spec", self.spec, _POD_FIELDS)
        indexed = workload["kind"] == "Job" and workload["spec"].get("completionMode") == "Indexed"
        if indexed != (index is not None):
            raise ConversionError(f"{workload['metadata']['name']}: pass index= exactly for an Indexed Job")
        self.name = _pod_name(workload, index)
        marks = {COMPLETION_INDEX: str(index)} if index is not None else {}
        self.fields = pod_fields(workload, self.name, marks, marks)
        self.labels = {**self.fields["metadata.labels"], **labels}
        self.config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
        self.pod_dir = workdir / self.name
        self.fs_group_dirs: list[Path] = []
        self.make_dirs: list[Path] = []
        self.pod_security = self.spec.get("securityContext", {})
        self.volumes = {v["name"]: self._volume(v, claims, host_paths) for v in self.spec.get("volumes", [])}
        self.hosts = service_hosts(objects)
        self._check_pod_options()

    def _check_pod_options(self) -> None:
        if self.spec.get("automountServiceAccountToken", True):
            raise ConversionError(f"{self.name}: automountServiceAccountToken must be false (no API server here)")
        if self.spec.get("enableServiceLinks", True):
            raise ConversionError(f"{self.name}: enableServiceLinks must be false (service env vars are not converted)")

    # --- volumes -------------------------------------------------------------

    def _volume(self, volume: Mapping[str, Any], claims: Mapping[str, Path], host_paths: Mapping[str, Path]) -> tuple[Path, bool]:
        """(host folder, read-only) of one pod volume; writes a ConfigMap's files."""
        name = volume["name"]
        kinds = sorted(set(volume) - {"name"})
        if kinds == ["configMap"]:
            return self._config_map(name, volume["configMap"]), True
        if kinds == ["persistentVolumeClaim"]:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in claims:
                raise ConversionError(f"{self.name}: volume {name!r}: no host folder given for PVC {claim!r}")
            self.fs_group_dirs.append(claims[claim])
            return claims[claim], bool(volume["persistentVolumeClaim"].get("readOnly"))
        if kinds == ["hostPath"]:
            path = volume["hostPath"]["path"]
            if path not in host_paths:
                raise ConversionError(f"{self.name}: volume {name!r}: no host folder given for hostPath {path!r}")
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                self.make_dirs.append(host_paths[path])
            return host_paths[path], False
        if kinds == ["emptyDir"]:
            if volume["emptyDir"].get("medium", "") not in ("", "Memory"):
                raise ConversionError(f"{self.name}: volume {name!r}: emptyDir medium {volume['emptyDir']['medium']!r} is not converted")
            if volume["emptyDir"].get("medium") == "Memory":
                return _TMPFS, False
            # On the node's disk, shared by the pod's containers, kept when a container restarts.
            folder = self.pod_dir / "volumes" / name
            self.make_dirs.append(folder)
            self.fs_group_dirs.append(folder)
            return folder, False
        raise ConversionError(f"{self.name}: volume {name!r}: {', '.join(kinds)} not converted to docker run")

    def _config_map(self, volume: str, source: Mapping[str, Any]) -> Path:
        check_fields(f"{self.name}: volume {volume!r} configMap", source, {"name", "items", "defaultMode", "optional"})
        data = self.config_maps.get(source["name"])
        if data is None:
            raise ConversionError(f"{self.name}: volume {volume!r}: ConfigMap {source['name']!r} is not rendered")
        folder = self.pod_dir / "volumes" / volume
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
            target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
        return folder

    def _mounts(self, container: Mapping[str, Any]) -> dict[str, tuple[Path, bool]]:
        mounts = {}
        for mount in container.get("volumeMounts", []):
            check_fields(f"{self.name}/{container['name']}: volumeMount", mount, {"name", "mountPath", "readOnly", "subPath"})
            source, read_only = self.volumes[mount["name"]]
            if source == _TMPFS and (mount.get("subPath") or self._mounted_by_others(mount["name"], container)):
                raise ConversionError(f"{self.name}: memory emptyDir {mount['name']!r} shared or with subPath is not converted")
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts[mount["mountPath"]] = (source, read_only or bool(mount.get("readOnly")))
        return mounts

    def _mounted_by_others(self, volume: str, container: Mapping[str, Any]) -> bool:
        every = self.spec.get("initContainers", []) + self.spec["containers"]
        return any(m["name"] == volume for c in every if c is not container for m in c.get("volumeMounts", []))

    # --- one container ---------------------------------------------------------

    def _probe(self, container: Mapping[str, Any], key: str) -> dict[str, Any] | None:
        probe = container.get(key)
        if probe is None:
            return None
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        resolved = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in probe.items()}
        for action in ("httpGet", "tcpSocket", "grpc"):
            if action in resolved and isinstance(resolved[action].get("port"), str):
                resolved[action]["port"] = ports[resolved[action]["port"]]
        return resolved

    def container(self, container: Mapping[str, Any], init: bool) -> ContainerRun:
        where = f"{self.name}/{container['name']}"
        check_fields(where, container, _CONTAINER_FIELDS)
        try:
            env = resolve_env(container, self.fields, self.config_maps)
        except (KeyError, ValueError) as exc:
            raise ConversionError(f"{where}: env: {exc.args[0] if exc.args else exc}") from None
        if self.index is not None:  # the Job controller adds it where the pod does not declare it
            env.setdefault("JOB_COMPLETION_INDEX", str(self.index))
        command = [expand(part, env) for part in container.get("command", [])]
        args = [expand(part, env) for part in container.get("args", [])]
        rewrites: list[str] = []
        if self.loopback:
            for key, value in env.items():
                if value == "0.0.0.0":
                    env[key] = LOOPBACK
                    rewrites.append(f"env {key}=0.0.0.0 -> {LOOPBACK}")
            if "--bind_all" in args:
                at = args.index("--bind_all")
                args[at : at + 1] = ["--host", LOOPBACK]
                rewrites.append(f"arg --bind_all -> --host {LOOPBACK}")
        security = security_flags(self.pod_security, container.get("securityContext", {}), where)
        mounts = self._mounts(container)
        docker_name = f"k8s_{container['name']}_{self.name}_{self.fields['metadata.namespace']}"
        argv = ["run", "--name", docker_name, "--hostname", self.spec.get("hostname", self.name), "--network", "host"]
        argv += [f"--add-host={host}:{LOOPBACK}" for host in self.hosts]
        for key, value in {**self.labels, "io.kubernetes.pod.name": self.name, "io.kubernetes.container.name": container["name"]}.items():
            argv += ["--label", f"{key}={value}"]
        argv += security.flags + resource_flags(container.get("resources", {}), where)
        if "terminationGracePeriodSeconds" in self.spec:
            argv += ["--stop-timeout", str(self.spec["terminationGracePeriodSeconds"])]
        if self.spec.get("runtimeClassName"):
            argv += ["--runtime", self.spec["runtimeClassName"]]
        if container.get("workingDir"):
            argv += ["--workdir", container["workingDir"]]
        for target, (source, ro) in mounts.items():
            if source == _TMPFS:  # one container's memory-backed emptyDir
                argv += ["--tmpfs", f"{target}:rw,exec,nosuid,nodev,mode=1777"]
            else:
                argv += ["--mount", f"type=bind,source={source},target={target}" + (",readonly" if ro else "")]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        return ContainerRun(
            pod=self.name, name=container["name"], docker_name=docker_name, image=container["image"], init=init,
            options=argv, command=command, args=args, env=env, mounts=mounts, readiness=self._probe(container, "readinessProbe"),
            startup=self._probe(container, "startupProbe"), user=security.user,
            read_only_root=security.read_only_root, check_image_non_root=security.check_image_non_root,
            rewrites=rewrites,
        )  # fmt: skip


def convert_pod(
    objects: Sequence[Mapping[str, Any]],
    workload: tuple[str, str] | Mapping[str, Any],
    *,
    workdir: Path,
    index: int | None = None,
    claims: Mapping[str, Path] | None = None,
    host_paths: Mapping[str, Path] | None = None,
    loopback: bool = True,
    labels: Mapping[str, str] | None = None,
) -> PodRun:
    """One pod of `workload` as docker runs.

    Args:
        objects: the rendered objects (`helm template` output, parsed).
        workload: the object itself, or `(kind, component)` such as `("Job", "worker")`.
        workdir: where the pod's ConfigMap files and emptyDir folders go (`<workdir>/<pod name>/`).
        index: the completion index of an Indexed Job's pod (required for one, refused otherwise).
        claims: PVC name -> host folder; host_paths: hostPath -> host folder.
        loopback: rewrite binds to every interface to 127.0.0.1 (see the module docstring).
        labels: extra docker labels on every container (a test's, to find them again).

    Raises ConversionError for a field that is not converted, a volume without
    a host folder, or a Service whose port differs from its target port.
    """
    if not isinstance(workload, Mapping):
        workload = by_kind_and_component(list(objects))[workload]
    converter = _Converter(objects, workload, index, claims or {}, host_paths or {}, workdir, loopback, labels or {})
    spec = converter.spec
    return PodRun(
        name=converter.name,
        labels=converter.labels,
        init_containers=[converter.container(c, init=True) for c in spec.get("initContainers", [])],
        containers=[converter.container(c, init=False) for c in spec["containers"]],
        fs_group=converter.pod_security.get("fsGroup"),
        fs_group_dirs=converter.fs_group_dirs,
        make_dirs=converter.make_dirs,
    )
