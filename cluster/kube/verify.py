"""`tunectl verify` (`make verify-cluster`): will the search deploy and run here, with these values?

Run on your own cluster before the first deploy; nothing of the search is
installed. One line per check, `ok`, `warning` or `FAIL` with the fix; exit 1
when one fails.

- cluster: the pre-flight (context, server, version);
- values: what the chart renders from them (its schema's verdict);
- storage: the chart's own claim is tried for real: a 1 MiB claim of the same
  class and access modes must bind, and a pod running as the chart's user must
  write to it (both are deleted after); an existing claim must exist and be
  writable; on kind every node must mount the host folder at /shared;
- data: whether the dataset is on the volume already (the chief waits for it);
- GPUs: the nodes offer `nvidia.com/gpu` for the workers, the RuntimeClass the
  workers name exists, and on kind one is named;
- images: on kind, loaded into the nodes of this context's cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cluster.errors import user_errors
from cluster.kube import kind, release
from cluster.kube.options import DEFAULT_NAMESPACE, DEFAULT_RELEASE, ChartDir, Context, Namespace, Release, SetValues, ValuesFiles
from cluster.kube.preflight import Preflight, preflight
from cluster.kube.status import pending_claim_line
from cluster.kube.tools import run_tool

__all__ = ["Row", "verify"]

PROBE = "tunectl-verify"


@dataclass(frozen=True)
class Row:
    check: str
    status: str  # ok | warning | FAIL
    detail: str
    fix: str = ""


def _find(objects: list[dict[str, Any]], kind_: str, component: str) -> dict[str, Any] | None:
    for obj in objects:
        if obj.get("kind") == kind_ and obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component:
            return obj
    return None


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def _probe_manifest(claim: dict[str, Any] | None, claim_name: str, owner: tuple[int, int, int], data: str, image: str) -> str:
    """A claim like the chart's (unless one exists) and a pod, as the chart's user, that writes to it."""
    uid, gid, fs_group = owner
    docs: list[dict[str, Any]] = []
    if claim is not None:
        docs.append({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim_name, "labels": {"app.kubernetes.io/name": PROBE}},
            "spec": {**{k: v for k, v in claim["spec"].items() if k != "resources"}, "resources": {"requests": {"storage": "1Mi"}}},
        })  # fmt: skip
    script = (
        'set -e; cd /probe; mkdir -p runs; f="runs/.tunectl-verify-$$"; touch "$f"; rm "$f"; '
        'if [ -d "$DATA" ]; then echo "data: yes"; else echo "data: no"; fi'
    )
    docs.append({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": PROBE, "labels": {"app.kubernetes.io/name": PROBE}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": fs_group,
                                "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "command": ["sh", "-c", script], "env": [{"name": "DATA", "value": data}],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "shared", "mountPath": "/probe"}],
            }],
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": claim_name}}],
        },
    })  # fmt: skip
    return yaml.safe_dump_all(docs, sort_keys=False)


def _probe_storage(pf: Preflight, claim: dict[str, Any] | None, claim_name: str, owner: tuple[int, int, int], data: str,
                   image: str, timeout_s: float) -> list[Row]:  # fmt: skip
    ns = ["--namespace", pf.namespace, *pf.kube_args()]
    run_tool("kubectl", "apply", "-f", "-", *ns, input_text=_probe_manifest(claim, claim_name, owner, data, image))
    rows: list[Row] = []
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if claim is not None:
                pvc = pf.cluster.claim(claim_name)
                if pvc is not None and pvc.status and pvc.status.phase == "Pending":
                    warnings = pf.cluster.warnings_for("PersistentVolumeClaim", claim_name)
                    if warnings:
                        return [Row("storage", "FAIL", pending_claim_line(pvc, warnings), "storage.storageClassName")]
            pods = pf.cluster.pods_by(f"app.kubernetes.io/name={PROBE}")
            phase = pods[0].status.phase if pods and pods[0].status else None
            if phase in ("Succeeded", "Failed"):
                out = pf.cluster.log_tail(PROBE, 5)
                if phase == "Failed":
                    return [Row("storage", "FAIL", f"the probe pod (uid {owner[0]}) could not write to the volume: {' '.join(out.split())[:200]}",
                                "storage.fixOwnership=true")]
                what = f"claim {claim_name} bound" + (" (a probe of the chart's class and modes)" if claim is not None else "")
                rows.append(Row("storage", "ok", f"{what}; uid {owner[0]} writes to it"))
                if claim is None:
                    here = "data: yes" in out
                    rows.append(Row("data", "ok" if here else "warning", f"{data} {'is' if here else 'is not'} on the volume",
                                    "" if here else f"the chief waits for it: `tunectl data push DIR --name {Path(data).name}`"))
                return rows
            if time.monotonic() >= deadline:
                return [Row("storage", "FAIL", f"the probe did not finish within {timeout_s:g} s (claim or pod Pending)",
                            "`kubectl describe pvc,pod -l app.kubernetes.io/name=tunectl-verify`")]
            time.sleep(2.0)
    finally:
        run_tool("kubectl", "delete", "pod,pvc", "--selector", f"app.kubernetes.io/name={PROBE}", *ns, "--wait=false", check=False)


def _gpu_rows(pf: Preflight, worker: dict[str, Any], kind_cluster: str | None) -> list[Row]:
    spec = _pod_spec(worker)
    gpus = int(spec["containers"][0].get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if not gpus:
        return [Row("GPUs", "ok", "workers use no GPU")]
    wanted = gpus * int(worker["spec"].get("completions", 1))
    offered = sum(int((n.status.allocatable or {}).get("nvidia.com/gpu", "0")) for n in pf.cluster.nodes())
    rows = []
    if offered == 0:
        rows.append(Row("GPUs", "FAIL", "no node offers nvidia.com/gpu", "install the NVIDIA device plugin or GPU operator"))
    elif offered < wanted:
        rows.append(Row("GPUs", "warning", f"{offered} GPUs for {wanted} wanted: some workers wait for one"))
    else:
        rows.append(Row("GPUs", "ok", f"{offered} GPUs offered, {wanted} wanted"))
    runtime = spec.get("runtimeClassName")
    classes = {rc.metadata.name for rc in pf.cluster.runtime_classes()}
    if runtime and runtime not in classes:
        rows.append(Row("runtime class", "FAIL", f"RuntimeClass {runtime!r} does not exist (classes: {', '.join(sorted(classes)) or 'none'})",
                        "create it (nvkind and the GPU operator make `nvidia`) or fix worker.runtimeClassName"))
    elif not runtime and (kind_cluster or "nvidia" in classes):
        where = "on kind the NVIDIA runtime is not containerd's default" if kind_cluster else "RuntimeClass nvidia exists here"
        rows.append(Row("runtime class", "FAIL" if kind_cluster else "warning", f"workers name no RuntimeClass; {where}",
                        "--set worker.runtimeClassName=nvidia"))
    else:
        rows.append(Row("runtime class", "ok", runtime or "the nodes' default runtime"))
    return rows


def _rows(pf: Preflight, objects: list[dict[str, Any]], kind_cluster: str | None, probe: bool, timeout_s: float, image: str) -> list[Row]:
    rows = [Row("cluster", "ok", f"context {pf.context} at {pf.server}, Kubernetes {pf.version}"), Row("values", "ok", "the chart renders them")]
    chief, worker = _find(objects, "Job", "chief"), _find(objects, "Job", "worker")
    assert chief is not None and worker is not None
    spec = _pod_spec(chief)
    shared = next(v for v in spec["volumes"] if v["name"] == "shared")
    context = spec.get("securityContext", {})
    owner = (context.get("runAsUser", 1000), context.get("runAsGroup", 1000), context.get("fsGroup", 1000))
    search = yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["search.yaml"]) or {}
    data = str(search.get("data", "data/toonvision"))
    if "hostPath" in shared:
        if kind_cluster is None:
            rows.append(Row("storage", "warning", f"a node folder ({shared['hostPath']['path']}): each node has its own unless it is shared"))
        else:
            folder = kind.shared_folder(kind_cluster)
            here = (folder / data).is_dir()
            rows.append(Row("storage", "ok", f"every node of kind cluster {kind_cluster!r} mounts {folder} at /shared"))
            rows.append(Row("data", "ok" if here else "warning", f"{folder / data} {'exists' if here else 'does not exist yet'}",
                            "" if here else f"`tunectl data push DIR --name {Path(data).name}`"))
    else:
        claim_name = shared["persistentVolumeClaim"]["claimName"]
        made = next((o for o in objects if o["kind"] == "PersistentVolumeClaim"), None)
        if made is not None:
            names = {sc.metadata.name for sc in pf.cluster.storage_classes()}
            wanted = made["spec"].get("storageClassName")
            if wanted not in names:
                rows.append(Row("storage", "FAIL", f"storage class {wanted!r} does not exist (classes: {', '.join(sorted(names)) or 'none'})",
                                "storage.storageClassName"))
            elif probe:
                rows += _probe_storage(pf, made, f"{PROBE}-claim", owner, data, image, timeout_s)
        elif pf.cluster.claim(claim_name) is None:
            rows.append(Row("storage", "FAIL", f"claim {claim_name!r} (storage.existingClaim) does not exist in {pf.namespace!r}", "create it first"))
        elif probe:
            rows += _probe_storage(pf, None, claim_name, owner, data, image, timeout_s)
    rows += _gpu_rows(pf, worker, kind_cluster)
    if kind_cluster is not None:
        from cluster.kube.deploy import _images

        missing = kind.missing_images(kind_cluster, _images(objects))
        rows.append(Row("images", "FAIL" if missing else "ok",
                        f"not in kind cluster {kind_cluster!r}: {', '.join(missing)}" if missing else f"loaded into kind cluster {kind_cluster!r}",
                        f"`tunectl images --cluster {kind_cluster}`" if missing else ""))  # fmt: skip
    return rows


def verify(
    values: ValuesFiles = None,
    set_: SetValues = None,
    release_name: Release = DEFAULT_RELEASE,
    namespace: Namespace = DEFAULT_NAMESPACE,
    chart: ChartDir = None,
    probe: Annotated[bool, typer.Option("--probe/--no-probe", help="Try the storage with a 1 MiB claim and a pod.")] = True,
    timeout: Annotated[int, typer.Option("--timeout", metavar="SECONDS", help="How long the storage probe may take.")] = 120,
    helper_image: Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help="Image of the probe pod (needs sh).")] = "busybox:1.36",
    context: Context = None,
) -> None:
    """Check that this cluster can run the search with these values (storage, data, GPUs, images), before a deploy."""
    from rich.table import Table

    from cluster.console import make_console

    with user_errors():
        pf = preflight(release_name, namespace, context, need_release=False)
        kind_cluster = kind.cluster_of_context(pf.context)
        chart_dir = chart or release.default_chart()
        layered = list(values or [])
        if kind_cluster is not None and release.kind_values(chart_dir).is_file():
            layered.insert(0, release.kind_values(chart_dir))
        objects = release.render(pf.release_name, chart_dir, namespace, layered, list(set_ or []))
        rows = _rows(pf, objects, kind_cluster, probe, timeout, helper_image)
    table = Table(title=f"tunectl verify ({pf.context})", title_justify="left")
    for column in ("check", "status", "found", "fix"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.check, row.status, row.detail, row.fix)
    make_console().print(table)
    failed = [row.check for row in rows if row.status == "FAIL"]
    if failed:
        typer.echo(f"error: this cluster is not ready: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    typer.echo("ready for `tunectl deploy`" + (" (see the warnings)" if any(r.status == "warning" for r in rows) else "") + ".")

