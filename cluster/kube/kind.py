"""The local kind cluster: its config, creation and deletion, and loading images into it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
import yaml

from cluster import __version__
from cluster.errors import LauncherError
from cluster.kube.tools import run_tool

__all__ = [
    "DEFAULT_CLUSTER",
    "DEFAULT_TAG",
    "IMAGES",
    "SHARED_MOUNT",
    "build_and_load_images",
    "cluster_exists",
    "create_cluster",
    "delete_cluster",
    "kind_config_template",
    "render_kind_config",
]

DEFAULT_CLUSTER = "tuner"
DEFAULT_TAG = __version__
SHARED_MOUNT = "/shared"
# image repository -> Dockerfile; the build context is the repository root.
IMAGES = {
    "keras-tuner-cluster/tuner": "images/tuner/Dockerfile",
    "keras-tuner-cluster/tensorboard": "images/tensorboard/Dockerfile",
}
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
        raise LauncherError(f"cannot read the kind config {source}: {reason}") from None
    if not isinstance(config, dict) or config.get("kind") != "Cluster":
        raise LauncherError(f"{source} is not a kind config (kind: Cluster)")
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


def build_and_load_images(tag: str, cluster: str | None, context: Path) -> list[str]:
    """`docker build` both images from `context`, then `kind load` each into `cluster` (if given)."""
    if cluster is not None and not cluster_exists(cluster):
        raise LauncherError(f"no kind cluster named {cluster!r}; run `tunectl up` first")
    built = []
    for repository, dockerfile in IMAGES.items():
        image = f"{repository}:{tag}"
        if not (context / dockerfile).is_file():
            raise LauncherError(f"{dockerfile} not found under {context}; run from the repository root")
        run_tool("docker", "build", "-t", image, "-f", str(context / dockerfile), str(context), stream=True)
        built.append(image)
    for image in built if cluster is not None else []:
        run_tool("kind", "load", "docker-image", image, "--name", cluster, stream=True)
    return built
