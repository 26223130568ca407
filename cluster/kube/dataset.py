"""`tunectl data push`: put an image folder on the shared volume at `data/<name>`.

On kind the volume is a host folder, so a plain copy does it. On a real
cluster it is a PVC: a short-lived helper pod mounts it and `kubectl cp`
streams the folder in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from cluster.errors import LauncherError
from cluster.kube.release import selector
from cluster.kube.tools import run_tool

__all__ = ["HELPER_POD", "copy_to_host_folder", "copy_via_pod", "find_pvc", "helper_overrides"]

HELPER_POD = "tunectl-data-push"


def _check_source(source: Path) -> None:
    if not source.is_dir():
        raise LauncherError(f"{source} is not a folder; a dataset is a folder of <class>/*.png|jpg")


def copy_to_host_folder(source: Path, shared_dir: Path, name: str) -> Path:
    """Copy `source` to `<shared_dir>/data/<name>`, merging over what is there."""
    _check_source(source)
    target = Path(shared_dir) / "data" / name
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def find_pvc(release: str, namespace: str) -> str:
    """The release's shared PVC, found by its labels rather than the chart's naming."""
    found = run_tool(
        "kubectl", "get", "pvc", "--namespace", namespace, "--selector", selector(release),
        "--output", "jsonpath={.items[*].metadata.name}",
    ).stdout.split()  # fmt: skip
    if len(found) != 1:
        what = "no PVC" if not found else f"{len(found)} PVCs ({', '.join(found)})"
        raise LauncherError(
            f"{what} for release {release!r} in namespace {namespace!r}; deploy first, or pass --pvc"
        )
    return found[0]


def helper_overrides(pvc: str, image: str) -> str:
    """The helper pod's spec: `image` sleeping, with the PVC mounted at /shared."""
    spec = {
        "apiVersion": "v1",
        "spec": {
            "containers": [
                {
                    "name": HELPER_POD,
                    "image": image,
                    "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                }
            ],
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": pvc}}],
        },
    }
    return json.dumps(spec, separators=(",", ":"))


def copy_via_pod(source: Path, name: str, pvc: str, namespace: str, image: str, timeout_s: int = 120) -> str:
    """Mount `pvc` in a helper pod, `kubectl cp` the folder to /shared/data/<name>, delete the pod."""
    _check_source(source)
    ns = ["--namespace", namespace]
    target = f"/shared/data/{name}"
    run_tool(
        "kubectl", "run", HELPER_POD, *ns, f"--image={image}", "--restart=Never",
        f"--overrides={helper_overrides(pvc, image)}",
    )  # fmt: skip
    try:
        run_tool("kubectl", "wait", "--for=condition=Ready", f"pod/{HELPER_POD}", *ns, f"--timeout={timeout_s}s")
        # kubectl cp untars into the target's parent, which must exist; the folder's
        # contents land in the target whether or not it exists already.
        run_tool("kubectl", "exec", HELPER_POD, *ns, "--", "mkdir", "-p", "/shared/data")
        run_tool("kubectl", "cp", *ns, str(source), f"{HELPER_POD}:{target}", stream=True)
    finally:
        run_tool("kubectl", "delete", "pod", HELPER_POD, *ns, "--wait=false", check=False)
    typer.echo(f"copied {source} to {target} on PVC {pvc!r}")
    return target
