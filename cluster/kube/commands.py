"""The Kubernetes commands of `tunectl`: up, images, deploy, scale, status, logs,
tensorboard, undeploy, verify, verify-run, down, doctor, and `data push`.

The kind and tool verbs live here; the verbs that act on a release in a
cluster are in `release_commands` (each starts with the pre-flight), `verify`
in `verify`, `verify-run` in `verify_run`. `register(app)` attaches them all
to the root app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.errors import user_errors
from cluster.kube import kind, release_commands, verify_run
from cluster.kube.options import ClusterName, SharedDir
from cluster.kube.verify import verify

__all__ = ["register"]

_REPO_ROOT = Path(__file__).resolve().parents[2]


def up(
    name: ClusterName = kind.DEFAULT_CLUSTER,
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE", exists=True, dir_okay=False, help="A kind config to use instead of the bundled one."),
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="GPU workers, the nvkind way (see docs/kubernetes.md).")] = False,
    shared_dir: SharedDir = Path("shared"),
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the kind config (e.g. for `nvkind cluster create`) and stop.")
    ] = False,
) -> None:
    """Create a local kind cluster (1 control-plane, 2 workers) with the shared host folder."""
    with user_errors():
        if print_config:
            typer.echo(kind.render_kind_config(shared_dir, gpu=gpu, template=config), nl=False)
            return
        kind.create_cluster(name, shared_dir, gpu=gpu, template=config)


def down(name: ClusterName = kind.DEFAULT_CLUSTER) -> None:
    """Delete the kind cluster (the shared host folder stays)."""
    with user_errors():
        kind.delete_cluster(name)


def images(
    tag: Annotated[
        str, typer.Option("--tag", "-t", metavar="TAG", envvar="TUNECTL_TAG", help="Tag of both images.")
    ] = kind.DEFAULT_TAG,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="NAME",
            envvar="TUNECTL_CLUSTER",
            help="kind cluster to load them into (default: the current context's, if it is one; else build only).",
        ),
    ] = None,
    no_load: Annotated[bool, typer.Option("--no-load", help="Only build; do not load into kind.")] = False,
    context: Annotated[
        Path | None, typer.Option("--context-dir", metavar="DIR", help="Build context (default: the repository root).")
    ] = None,
    tf_flavour: Annotated[
        kind.TfFlavour,
        typer.Option(
            "--tf-flavour",
            envvar="TUNECTL_TF_FLAVOUR",
            help="TensorFlow in the tuner image: gpu (CUDA wheels; also runs on CPU nodes) or cpu (smaller).",
        ),
    ] = kind.TfFlavour.gpu,
    base_image: Annotated[
        str | None,
        typer.Option(
            "--base-image",
            metavar="IMAGE",
            envvar="TUNECTL_BASE_IMAGE",
            help="Base of both images (PYTHON_IMAGE build argument; default: the Dockerfiles' python:3.11 slim).",
        ),
    ] = None,
    network: Annotated[
        str | None,
        typer.Option("--network", metavar="NAME", envvar="TUNECTL_BUILD_NETWORK", help="`docker build --network`, e.g. host."),
    ] = None,
) -> None:
    """Build the tuner and TensorBoard images and load them into the kind cluster."""
    with user_errors():
        root = context or (_REPO_ROOT if (_REPO_ROOT / "images").is_dir() else Path.cwd())
        target = None if no_load else (cluster or kind.default_image_cluster())
        built = kind.build_and_load_images(
            tag, target, root, tf_flavour=tf_flavour.value, base_image=base_image, network=network
        )
        typer.echo("images: " + ", ".join(built) + (f" (loaded into kind cluster {target!r})" if target else ""))
        if target is None and not no_load:
            typer.echo(
                "the current kubeconfig context is not a kind cluster: built only. Push them to a registry your "
                "nodes pull from and set image.repository (docs/kubernetes.md), or pass --cluster NAME for kind."
            )


def doctor() -> None:
    """Check docker (its engine and image store), kind, kubectl, helm, and the optional NVIDIA pieces."""
    from cluster.console import make_console
    from cluster.kube.doctor import print_report, run_checks

    checks = run_checks()
    print_report(checks, make_console())
    missing = [c.tool for c in checks if c.required and not c.ok]
    if missing:
        typer.echo(f"error: missing or not working: {', '.join(missing)}", err=True)
        raise typer.Exit(1)
    if any(not c.ok for c in checks):
        typer.echo("Kubernetes tools are ready; the GPU pieces are missing (CPU-only clusters work).")
    else:
        typer.echo("everything is ready.")


def _data_group(app: typer.Typer) -> typer.Typer:
    """The root app's `data` group (cluster/data.py's, registered before us), or a new one."""
    for group in app.registered_groups:
        names = {getattr(group.name, "value", group.name), getattr(group.typer_instance.info.name, "value", None)}
        if "data" in names:
            return group.typer_instance
    data_app = typer.Typer(name="data", no_args_is_help=True, help="Datasets on the shared volume.")
    app.add_typer(data_app, name="data")
    return data_app


def register(app: typer.Typer) -> None:
    """Attach the Kubernetes commands to `app`, and `push` to its `data` group."""
    rc = release_commands
    for command in (up, images, rc.deploy, rc.scale, rc.status, rc.logs, rc.tensorboard, rc.undeploy, verify, down, doctor):
        app.command(rich_help_panel="Kubernetes")(command)
    _data_group(app).command("push")(rc.push)
    verify_run.register(app)
