"""The local kind cluster: its config, creation and deletion, and loading images into it."""

from __future__ import annotations

import json
import re
import tempfile
from enum import Enum
from pathlib import Path

import typer
import yaml

from cluster import __version__
from cluster.errors import BadInputError, LauncherError
from cluster.kube.tools import find_tool, run_tool
from tuner_job.contract import SHARED_MOUNT

__all__ = [
    "DEFAULT_CLUSTER",
    "DEFAULT_TAG",
    "IMAGES",
    "SHARED_MOUNT",
    "TF_FLAVOURS",
    "TfFlavour",
    "build_and_load_images",
    "cluster_exists",
    "cluster_of_context",
    "create_cluster",
    "default_image_cluster",
    "delete_cluster",
    "kind_config_template",
    "load_image",
    "missing_images",
    "published_address",
    "render_kind_config",
    "shared_folder",
]

DEFAULT_CLUSTER = "tuner"
DEFAULT_TAG = __version__
# image repository -> Dockerfile; the build context is the repository root.
IMAGES = {
    "keras-tuner-cluster/tuner": "images/tuner/Dockerfile",
    "keras-tuner-cluster/tensorboard": "images/tensorboard/Dockerfile",
}
# The images whose Dockerfile takes TF_FLAVOUR (every one takes PYTHON_IMAGE).
TF_FLAVOURED = {"keras-tuner-cluster/tuner"}


class TfFlavour(str, Enum):
    """The tuner image's TensorFlow: the project's `gpu` or `cpu` extra."""

    gpu = "gpu"
    cpu = "cpu"


TF_FLAVOURS = tuple(flavour.value for flavour in TfFlavour)
_KIND_DIR = Path(__file__).resolve().parent.parent / "kind"


def kind_config_template(gpu: bool = False) -> Path:
    return _KIND_DIR / ("cluster-gpu.yaml" if gpu else "cluster.yaml")


def render_kind_config(shared_dir: Path, gpu: bool = False, template: Path | None = None) -> str:
    """The kind config with every node's `/shared` mount pointing at `shared_dir` (absolute)."""
    source = template or kind_config_template(gpu)
    try:
        config = yaml.safe_load(Path(source).read_text())
    except (OSError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise BadInputError(f"cannot read the kind config {source}: {reason}") from None
    if not isinstance(config, dict) or config.get("kind") != "Cluster":
        raise BadInputError(f"{source} is not a kind config (kind: Cluster)")
    host = str(Path(shared_dir).expanduser().resolve())
    for node in config.get("nodes", []):
        for mount in node.get("extraMounts", []):
            if mount.get("containerPath") == SHARED_MOUNT:
                mount["hostPath"] = host
    return yaml.safe_dump(config, sort_keys=False)


def cluster_exists(name: str) -> bool:
    listed = run_tool("kind", "get", "clusters").stdout
    return name in {line.strip() for line in listed.splitlines()}


def create_cluster(name: str, shared_dir: Path, gpu: bool = False, template: Path | None = None) -> bool:
    """Create the cluster unless one of that name exists; True when it was created."""
    shared = Path(shared_dir).expanduser().resolve()
    rendered = render_kind_config(shared, gpu=gpu, template=template)
    if cluster_exists(name):
        typer.echo(f"kind cluster {name!r} already exists; leaving it as it is.")
        return False
    # Made here, so docker does not create it as root when it binds the mount.
    shared.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tunectl-kind-") as tmp:
        config = Path(tmp) / "kind-config.yaml"
        config.write_text(rendered)
        run_tool("kind", "create", "cluster", "--name", name, "--config", str(config), stream=True)
    typer.echo(f"kind cluster {name!r} is up; {shared} is /shared on every node.")
    return True


def delete_cluster(name: str) -> None:
    if not cluster_exists(name):
        typer.echo(f"no kind cluster named {name!r}; nothing to delete.")
        return
    run_tool("kind", "delete", "cluster", "--name", name, stream=True)


def build_and_load_images(
    tag: str,
    cluster: str | None,
    context: Path,
    *,
    tf_flavour: str = "gpu",
    base_image: str | None = None,
    network: str | None = None,
) -> list[str]:
    """`docker build` both images from `context`, then `kind load` each into `cluster` (if given).

    `tf_flavour` (gpu | cpu) is the tuner image's TF_FLAVOUR build argument;
    `base_image`, when given, both images' PYTHON_IMAGE (default: the
    Dockerfiles' python:3.11 slim image); `network` is `docker build --network`
    (`host` where the build's own network cannot resolve names). Raises
    LauncherError for an unknown flavour, a missing Dockerfile or cluster, or a
    failed build.
    """
    if tf_flavour not in TF_FLAVOURS:
        raise LauncherError(f"tf_flavour must be one of {', '.join(TF_FLAVOURS)}, but got {tf_flavour!r}")
    if cluster is not None and not cluster_exists(cluster):
        raise BadInputError(f"no kind cluster named {cluster!r}; run `tunectl up` first")
    built = []
    for repository, dockerfile in IMAGES.items():
        image = f"{repository}:{tag}"
        if not (context / dockerfile).is_file():
            raise LauncherError(f"{dockerfile} not found under {context}; run from the repository root")
        options = ["--build-arg", f"TF_FLAVOUR={tf_flavour}"] if repository in TF_FLAVOURED else []
        options += ["--build-arg", f"PYTHON_IMAGE={base_image}"] if base_image else []
        options += ["--network", network] if network else []
        run_tool("docker", "build", "-t", image, *options, "-f", str(context / dockerfile), str(context), stream=True)
        built.append(image)
    for image in built if cluster is not None else []:
        load_image(image, cluster)
    return built


# kind's `ctr images import --all-platforms` asks for every platform of the
# index that Docker's containerd image store saves, but only the local
# platform's blobs are in it (kubernetes-sigs/kind#3795, #3845).
_MISSING_DIGEST = re.compile(r"content digest \S+:? not found")


def load_image(image: str, cluster: str) -> None:
    """`kind load docker-image`; on the containerd store's digest error, a one-platform archive instead."""
    result = run_tool("kind", "load", "docker-image", image, "--name", cluster, stream=True, check=False)
    if result.ok:
        return
    if not _MISSING_DIGEST.search(result.stderr):
        last = next((line.strip() for line in reversed(result.stderr.splitlines()) if line.strip()), f"exit {result.returncode}")
        raise LauncherError(f"kind load failed: {last}")
    platform = run_tool("docker", "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}").stdout.strip() or "linux/amd64"
    typer.echo(
        f"kind load docker-image cannot read {image} from Docker's containerd image store; "
        f"loading a {platform} image archive instead",
        err=True,
    )
    with tempfile.TemporaryDirectory(prefix="tunectl-image-") as tmp:
        archive = str(Path(tmp) / "image.tar")
        run_tool("docker", "image", "save", "--platform", platform, "--output", archive, image, stream=True)
        run_tool("kind", "load", "image-archive", archive, "--name", cluster, stream=True)


def cluster_of_context(context: str) -> str | None:
    """The kind cluster behind a kubeconfig context: `kind-<name>` where `kind get clusters` lists <name>.

    None for any other context, and where kind is not installed (nothing kind-specific can be checked then).
    """
    if not context.startswith("kind-") or find_tool("kind") is None:
        return None
    name = context.removeprefix("kind-")
    return name if cluster_exists(name) else None


def default_image_cluster() -> str | None:
    """Where `tunectl images` loads by default: the kind cluster of the current context, the one
    `tunectl deploy` will deploy to; None when that context is not a kind cluster (build only)."""
    if find_tool("kubectl") is None:
        return None
    current = run_tool("kubectl", "config", "current-context", check=False).stdout.strip()
    return cluster_of_context(current) if current else None


def published_address(cluster: str, node_port: int) -> str | None:
    """Where this host reaches NodePort `node_port` of kind cluster `cluster`, e.g. `127.0.0.1:6006`.

    Read from the control-plane container's port mappings (`docker port`;
    `tunectl up` maps TensorBoard's NodePort there); None where it maps none.
    """
    result = run_tool("docker", "port", f"{cluster}-control-plane", f"{node_port}/tcp", check=False)
    if not result.ok:
        return None
    for line in result.stdout.split():
        host, _, port = line.rpartition(":")
        if port.isdigit() and host:
            host = host.strip("[]")
            return f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    return None


def _nodes(cluster: str) -> list[str]:
    return run_tool("kind", "get", "nodes", "--name", cluster).stdout.split()


def shared_folder(cluster: str) -> Path:
    """The host folder that every node of `cluster` mounts at /shared (`tunectl up` sets it up).

    Raises LauncherError naming the nodes without the mount, or when the nodes mount different folders.
    """
    nodes = _nodes(cluster)
    if not nodes:
        raise LauncherError(f"kind cluster {cluster!r} has no nodes; recreate it: `tunectl down --name {cluster} && tunectl up --name {cluster}`")
    inspect = run_tool(
        "docker", "inspect", "--format", "{{.Name}}|{{range .Mounts}}{{.Destination}}={{.Source}};{{end}}", *nodes
    ).stdout  # fmt: skip
    sources: dict[str, str | None] = {}
    for line in inspect.splitlines():
        name, _, mounts = line.strip().partition("|")
        if not name:
            continue
        found = dict(m.split("=", 1) for m in mounts.split(";") if "=" in m)
        sources[name.lstrip("/")] = found.get(SHARED_MOUNT)
    missing = [node for node in nodes if not sources.get(node)]
    if missing:
        raise LauncherError(
            f"kind cluster {cluster!r} has no {SHARED_MOUNT} mount on {', '.join(missing)} (it was not made by `tunectl up`), "
            f"so the pods would each get an empty folder of their node; recreate it: "
            f"`tunectl down --name {cluster} && tunectl up --name {cluster}`"
        )
    folders = sorted({s for s in sources.values() if s})
    if len(folders) > 1:
        raise LauncherError(f"the nodes of kind cluster {cluster!r} mount different folders at {SHARED_MOUNT}: {', '.join(folders)}")
    return Path(folders[0])


def _normalized(image: str) -> str:
    """An image reference as containerd names it: docker.io/library/busybox:latest."""
    name, tag = image, "latest"
    if ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"
    return f"{name}:{tag}"


def missing_images(cluster: str, images: list[str]) -> dict[str, list[str]]:
    """{image: nodes of `cluster` that lack it}, for images only `tunectl images` can provide (ours)."""
    ours = [image for image in images if image.split(":", 1)[0] in IMAGES]
    if not ours:
        return {}
    missing: dict[str, list[str]] = {}
    for node in _nodes(cluster):
        listed = run_tool("docker", "exec", node, "crictl", "images", "-o", "json", check=False)
        try:
            present = {tag for entry in json.loads(listed.stdout or "{}").get("images", []) for tag in entry.get("repoTags") or []}
        except (json.JSONDecodeError, AttributeError):
            present = set()
        for image in ours:
            if _normalized(image) not in present:
                missing.setdefault(image, []).append(node)
    return missing
