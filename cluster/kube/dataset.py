"""`tunectl data push`: put an image folder on the shared volume at `data/<name>`.

The folder is checked first, with the chief's own rule (`tuner_job.data.
list_image_folder`): an empty folder, or one level too high (`demo/data`
instead of `demo/data/toonvision`), is refused (exit 2) with what was found.
Only the class folders' images are copied: `.cache/` and other files stay.

The dataset appears whole: it is copied under a hidden name and renamed, so
a chief waiting for it (`data_wait_seconds`) never reads half of it.

On kind the volume is the host folder that every node mounts at /shared: a
plain copy does it. On a real cluster it is a PVC: a short-lived helper pod
mounts it, as the chart's user and group, makes `data/` and `runs/`
group-writable, and a tar of the folder is streamed into it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

import typer

from cluster.errors import BadInputError, LauncherError
from cluster.kube.tools import run_tool, run_tool_with_stdin
from tuner_job.contract import SHARED_MOUNT
from tuner_job.data import IMAGE_SUFFIXES, list_image_folder
from tuner_job.errors import DataError

__all__ = ["HELPER_POD", "Owner", "check_layout", "copy_to_host_folder", "copy_via_pod", "helper_overrides", "release_volume"]

HELPER_POD = "tunectl-data-push"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
Owner = tuple[int, int, int]  # runAsUser, runAsGroup, fsGroup
DEFAULT_OWNER: Owner = (1000, 1000, 1000)


def _describe(folder: Path) -> str:
    """What a folder holds, in a few words: `1 folder (toonvision/) and 0 images`."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    folders = sorted(p.name for p in entries if p.is_dir())
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not entries:
        return "nothing" + (" but hidden files" if any(folder.iterdir()) else "")
    shown = ", ".join(f"{name}/" for name in folders[:4]) + (", ..." if len(folders) > 4 else "")
    what = f"{len(folders)} folder{'s' if len(folders) != 1 else ''}" + (f" ({shown})" if folders else "")
    return f"{what} and {len(images)} image{'s' if len(images) != 1 else ''}"


def check_layout(source: Path) -> dict[str, list[Path]]:
    """The images of each class of `source` (`<class>/**/*.png|jpg|...`), as the chief will read them.

    Raises BadInputError (exit 2) naming the folder, what it holds, and the
    sub-folder that is a dataset when `source` is one level too high.
    """
    if not source.is_dir():
        raise BadInputError(f"{source} is not a folder; a dataset is a folder of <class>/*.png|jpg")
    try:
        return list_image_folder(source)
    except DataError as exc:
        nested = []
        for child in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                classes = list_image_folder(child)
            except DataError:
                continue
            nested.append(f"{child} ({len(classes)} classes, {sum(map(len, classes.values()))} images)")
        hint = f"; did you mean {nested[0]}?" if nested else ""
        raise BadInputError(
            f"{source} is not a dataset of <class>/*.png|jpg with 2 classes or more: it holds {_describe(source)} "
            f"({exc}){hint}"
        ) from None


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadInputError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it becomes data/<name>)")
    return name


def _relative(files: dict[str, list[Path]]) -> list[tuple[Path, str]]:
    """Each image with its path inside the dataset (`<class>/...`): images in a class's
    subfolders keep them, so two with one name in different subfolders both arrive."""
    root = Path(os.path.commonpath([str(p) for images in files.values() for p in images]))  # 2 classes or more: the dataset
    return [(image, image.relative_to(root).as_posix()) for images in files.values() for image in images]


def copy_to_host_folder(files: dict[str, list[Path]], shared_dir: Path, name: str) -> Path:
    """Copy the images to `<shared_dir>/data/<name>`: whole by a rename, or merged into one that exists."""
    data = Path(shared_dir) / "data"
    target = data / _check_name(name)
    staging = data / f".{name}.tunectl-{os.getpid()}"
    data.mkdir(parents=True, exist_ok=True)
    try:
        for image, inside in _relative(files):
            (staging / inside).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, staging / inside)
        if target.exists():
            shutil.copytree(staging, target, dirs_exist_ok=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def release_volume(cluster: Any, release: str) -> tuple[str, Owner]:
    """The claim of the release's shared volume and the user, group and fsGroup its pods run as.

    Read from the chief Job's pod template, so a claim the chart made and one it
    was given (storage.existingClaim) are found alike. Raises LauncherError
    when the release mounts no claim (a host folder: push on that node instead).
    """
    chiefs = [job for job in cluster.jobs(release) if (job.metadata.labels or {}).get("app.kubernetes.io/component") == "chief"]
    if not chiefs:
        raise LauncherError(f"release {release!r} has no chief Job to read its volume from; pass --pvc")
    spec = chiefs[0].spec.template.spec
    claims = [v.persistent_volume_claim.claim_name for v in spec.volumes or [] if v.name == "shared" and v.persistent_volume_claim]
    if not claims:
        raise LauncherError(
            f"release {release!r} mounts a node folder, not a PVC: copy the dataset into that folder "
            "(on kind: `tunectl data push DIR` finds it), or pass --pvc"
        )
    context = spec.security_context
    owner = DEFAULT_OWNER
    if context is not None:
        owner = (context.run_as_user or 1000, context.run_as_group or 1000, context.fs_group or context.run_as_group or 1000)
    return claims[0], owner


def helper_overrides(pvc: str, image: str, owner: Owner = DEFAULT_OWNER) -> str:
    """The helper pod's spec: `image` sleeping as the chart's user, with the PVC mounted at /shared."""
    uid, gid, fs_group = owner
    spec = {
        "apiVersion": "v1",
        "spec": {
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": fs_group,
                "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": HELPER_POD,
                    "image": image,
                    "command": ["sleep", "3600"],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "shared", "mountPath": SHARED_MOUNT}],
                }
            ],
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": pvc}}],
        },
    }  # fmt: skip
    return json.dumps(spec, separators=(",", ":"))


# Run in the helper pod as the chart's user: data/ and runs/ exist and are
# group-writable (setgid, so what is made inside keeps the group).
_PREPARE = (
    'umask 002; mkdir -p /shared/data /shared/runs 2>/dev/null; chmod g+rwxs /shared/data /shared/runs 2>/dev/null; '
    'for d in /shared /shared/data /shared/runs; do test -d "$d" && test -w "$d" || { echo "not writable: $d"; exit 13; }; done; '
    'mkdir -p "/shared/data/.$1.partial"'
)
_PUBLISH = (
    'cd /shared/data && if [ -e "$1" ]; then cp -a ".$1.partial/." "$1/" && rm -rf ".$1.partial" && echo merged; '
    'else mv ".$1.partial" "$1" && echo new; fi'
)


def _write_tar(files: dict[str, list[Path]]) -> Any:
    def write(stdin: BinaryIO) -> None:
        with tarfile.open(fileobj=stdin, mode="w|") as archive:
            for image, inside in _relative(files):
                info = archive.gettarinfo(str(image), arcname=inside)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o664
                with open(image, "rb") as handle:
                    archive.addfile(info, handle)

    return write


def copy_via_pod(
    files: dict[str, list[Path]], name: str, pvc: str, namespace: str, image: str,
    owner: Owner = DEFAULT_OWNER, kube_args: list[str] | None = None, timeout_s: int = 120,
) -> str:  # fmt: skip
    """Mount `pvc` in a helper pod, stream the images to /shared/data/<name>, delete the pod."""
    _check_name(name)
    ns = ["--namespace", namespace, *(kube_args or [])]
    target = f"{SHARED_MOUNT}/data/{name}"
    run_tool(
        "kubectl", "run", HELPER_POD, *ns, f"--image={image}", "--restart=Never",
        f"--overrides={helper_overrides(pvc, image, owner)}",
    )  # fmt: skip
    try:
        run_tool("kubectl", "wait", "--for=condition=Ready", f"pod/{HELPER_POD}", *ns, f"--timeout={timeout_s}s")
        prepared = run_tool("kubectl", "exec", HELPER_POD, *ns, "--", "sh", "-c", _PREPARE, "sh", name, check=False)
        if not prepared.ok:
            where = (prepared.stdout.strip() or prepared.stderr.strip() or "the volume").splitlines()[-1]
            raise BadInputError(
                f"PVC {pvc!r} is not writable by uid {owner[0]} gid {owner[2]}, the chart's user ({where}): "
                "its root belongs to another user and the kubelet did not apply fsGroup; deploy with "
                "`--set storage.fixOwnership=true` (an init container gives it to that user), then push again"
            )
        run_tool_with_stdin(
            "kubectl", "exec", "-i", HELPER_POD, *ns, "--", "tar", "xf", "-", "-C", f"{SHARED_MOUNT}/data/.{name}.partial",
            write=_write_tar(files),
        )  # fmt: skip
        how = run_tool("kubectl", "exec", HELPER_POD, *ns, "--", "sh", "-c", _PUBLISH, "sh", name).stdout.strip()
    finally:
        run_tool("kubectl", "delete", "pod", HELPER_POD, *ns, "--wait=false", check=False)
    count = sum(map(len, files.values()))
    typer.echo(f"copied {count} images in {len(files)} classes to {target} on PVC {pvc!r}" + (" (merged)" if how == "merged" else ""))
    return target
