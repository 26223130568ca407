"""Render the Helm chart and read what it renders.

The helpers here are plain functions (importable as `from chart_helpers import
helm_template, rendered_containers` by tests in this folder) and also
fixtures of the same name.

Tools: helm and checkov come from `make tools` (.tools/bin), hadolint,
shellcheck and kubernetes-validate from the venv. When one is missing the
tests that need it fail under CI=true and are skipped otherwise.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "keras-tuner-cluster"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "tuner"
# Not "default": checkov's CKV_K8S_21 flags objects in the default namespace.
NAMESPACE = "tuner-test"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"

__all__ = [
    "CHART",
    "CI_VALUES",
    "NAMESPACE",
    "RELEASE",
    "HelmError",
    "find_tool",
    "require_tool",
    "helm_template",
    "helm_template_error",
    "helm_template_text",
    "by_kind_and_component",
    "pod_fields",
    "pod_metadata",
    "pod_spec",
    "quantity",
    "resolve_env",
    "rendered_containers",
]


class HelmError(Exception):
    """`helm` exited non-zero; the message is its stderr."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def find_tool(name: str) -> str | None:
    """The tool from .tools/bin, else beside this Python (the venv), else PATH."""
    for folder in (REPO / ".tools" / "bin", Path(sys.executable).parent):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def require_tool(name: str) -> str:
    """The tool's path; a missing tool fails the test in CI and skips it elsewhere."""
    path = find_tool(name)
    if path is None:
        reason = f"{name} not found in .tools/bin, the venv or PATH; run `make tools` (or `make install`)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _values_args(values_files: str | Path | Iterable[str | Path] | None, set_values: Mapping[str, Any] | None) -> list[str]:
    if values_files is None:
        files: list[str | Path] = []
    elif isinstance(values_files, (str, Path)):
        files = [values_files]
    else:
        files = list(values_files)
    args: list[str] = []
    for path in files:
        args += ["--values", str(path)]
    for key, value in (set_values or {}).items():
        # --set-json keeps the type: 2 is a number, "two" a string, -1 a number.
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = require_tool("helm")
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def _template_args(
    values_files: str | Path | Iterable[str | Path] | None,
    set_values: Mapping[str, Any] | None,
    kube_version: str,
) -> list[str]:
    return [
        "template", RELEASE, str(CHART),
        "--namespace", NAMESPACE,
        "--kube-version", kube_version,
        *_values_args(values_files, set_values),
    ]  # fmt: skip


def helm_template_text(
    values_file: str | Path | Iterable[str | Path] | None = None,
    set_values: Mapping[str, Any] | None = None,
    *,
    kube_version: str = "1.30.0",
) -> str:
    """What `helm template` prints (helm test pods included), as text; raises HelmError."""
    result = _helm(*_template_args(values_file, set_values, kube_version))
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    return result.stdout


def helm_template(
    values_file: str | Path | Iterable[str | Path] | None = None,
    set_values: Mapping[str, Any] | None = None,
    *,
    kube_version: str = "1.30.0",
) -> list[dict[str, Any]]:
    """`helm template` (helm test pods included) parsed into a list of objects.

    `set_values` maps dotted keys to values, passed with `--set-json` so that
    their YAML/JSON types survive (`{"workers": "two"}` is a string).
    """
    text = helm_template_text(values_file, set_values, kube_version=kube_version)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template_error(
    values_file: str | Path | Iterable[str | Path] | None = None,
    set_values: Mapping[str, Any] | None = None,
) -> str:
    """helm's error text for values that must be refused; fails the test if helm renders them."""
    result = _helm(*_template_args(values_file, set_values, "1.30.0"))
    if result.returncode == 0:
        pytest.fail(f"helm rendered values it should refuse: {set_values or values_file}")
    return result.stderr


def component(obj: Mapping[str, Any]) -> str | None:
    return obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")


def by_kind_and_component(objects: list[dict[str, Any]]) -> dict[tuple[str, str | None], dict[str, Any]]:
    """`{("Job", "chief"): {...}, ("Service", "tensorboard"): {...}, ...}`; a pair that repeats is an error."""
    found: dict[tuple[str, str | None], dict[str, Any]] = {}
    for obj in objects:
        key = (obj["kind"], component(obj))
        assert key not in found, f"two {key} objects rendered"
        found[key] = obj
    return found


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod, Job or Deployment."""
    if obj["kind"] == "Pod":
        return obj["spec"]
    return obj["spec"]["template"]["spec"]


def pod_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return obj["metadata"]
    return obj["spec"]["template"].get("metadata", {})


# --- what each process of the search gets -----------------------------------

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, others kept, `$$` is `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, text)


def _field_ref(path: str, pod: Mapping[str, Any]) -> str:
    if path in ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName"):
        return str(pod[path])
    if path in ("status.podIP", "status.hostIP"):
        return "127.0.0.1"
    match = _FIELD_KEY.match(path)
    if match:
        kind, key = match.groups()
        values = pod[f"metadata.{kind}"]
        if key not in values:
            raise KeyError(f"fieldRef {path!r}: the pod has no such {kind[:-1]}")
        return str(values[key])
    raise KeyError(f"fieldRef {path!r} is not resolved by rendered_containers")


_QUANTITY = re.compile(r"^([0-9.]+)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_SCALE = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("500m", "2", "1.5Gi") as a number; ValueError for anything else."""
    match = _QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    return number / 1000 if unit == "m" else number * _SCALE[unit]


def _resource_field(ref: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    """The downward API's resourceFieldRef: the container's request or limit over the divisor, rounded up."""
    if ref.get("containerName", container["name"]) != container["name"]:
        raise KeyError(f"resourceFieldRef of container {ref['containerName']!r} is not resolved by rendered_containers")
    kind, _, resource = ref["resource"].partition(".")
    value = container.get("resources", {}).get(kind, {}).get(resource)
    if value is None:  # the kubelet would use the node's allocatable
        raise KeyError(f"resourceFieldRef {ref['resource']!r}: the container sets none, and there is no node here")
    return str(math.ceil(quantity(value) / quantity(ref.get("divisor", "1"))))


def resolve_env(
    container: Mapping[str, Any], pod: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """A container's `env` as the kubelet sets it: values `$(VAR)`-expanded in
    order, `valueFrom` read from `pod` (see `pod_fields`) and the ConfigMaps'
    data (`{name: {key: value}}`). Raises KeyError for a source it cannot resolve."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            env[name] = _field_ref(source["fieldRef"]["fieldPath"], pod)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = config_maps[ref["name"]][ref["key"]]
        elif "resourceFieldRef" in source:
            env[name] = _resource_field(source["resourceFieldRef"], container)
        else:
            raise KeyError(f"env {name!r}: valueFrom {sorted(source)} is not resolved by rendered_containers")
    return env


def pod_fields(obj: Mapping[str, Any], name: str, annotations: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, Any]:
    """The downward-API fields of a pod named `name` made from workload `obj`,
    with `annotations` and `labels` added by its controller (an Indexed Job's
    completion index)."""
    meta = pod_metadata(obj)
    return {
        "metadata.name": name,
        "metadata.namespace": obj["metadata"].get("namespace", NAMESPACE),
        "metadata.uid": "00000000-0000-0000-0000-000000000000",
        "spec.nodeName": "localhost",
        "spec.serviceAccountName": "default",
        "metadata.labels": {**meta.get("labels", {}), **labels},
        "metadata.annotations": {**meta.get("annotations", {}), **annotations},
    }


def _process(
    obj: Mapping[str, Any], pod: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, str]], extra_env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    spec = pod_spec(obj)
    (container,) = spec["containers"]
    env = resolve_env(container, pod, config_maps)
    # What the Job controller adds itself (after the declared variables).
    for name, value in (extra_env or {}).items():
        env.setdefault(name, value)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return {
        "name": container["name"],
        "image": container["image"],
        "command": [expand(part, env) for part in container.get("command", [])],
        "args": [expand(part, env) for part in container.get("args", [])],
        "env": env,
        "working_dir": container.get("workingDir"),
        # mount path -> the volume it shows ({"persistentVolumeClaim": ...} etc.) and readOnly.
        "mounts": {
            m["mountPath"]: {"volume": m["name"], "source": volumes[m["name"]], "read_only": bool(m.get("readOnly"))}
            for m in container.get("volumeMounts", [])
        },
        "ports": {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])},
    }


def rendered_containers(
    values_files: str | Path | Iterable[str | Path] | None = None,
    set_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What each process of the search runs, as the chart renders it.

    Returns `{"chief": proc, "workers": [proc for index 0..N-1], "search_yaml": str}`
    where each `proc` has `command`, `args` (with `$(VAR)` expanded as the
    kubelet does), `env` (a plain dict: `valueFrom` resolved from the pod's
    metadata, the Indexed Job's JOB_COMPLETION_INDEX set per worker),
    `mounts`, `image`, `ports`. The chief's and workers' images run
    `command + args` with `env`; a local run swaps the paths in `mounts`
    (and TUNER_CONFIG / TUNER_SHARED_DIR) for local folders.
    """
    objects = helm_template(values_files, set_values)
    found = by_kind_and_component(objects)
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    chief_job = found[("Job", "chief")]
    worker_job = found[("Job", "worker")]
    chief_pod = pod_fields(chief_job, f"{chief_job['metadata']['name']}-abcde", {}, {})
    chief = _process(chief_job, chief_pod, config_maps)
    workers = []
    for index in range(int(worker_job["spec"]["completions"])):
        marks = {COMPLETION_INDEX: str(index)}
        pod = pod_fields(worker_job, f"{worker_job['metadata']['name']}-{index}-abcde", marks, marks)
        workers.append(_process(worker_job, pod, config_maps, {"JOB_COMPLETION_INDEX": str(index)}))
    (search_yaml,) = (data["search.yaml"] for data in config_maps.values() if "search.yaml" in data)
    return {"chief": chief, "workers": workers, "search_yaml": search_yaml}


# --- fixtures -------------------------------------------------------------------
