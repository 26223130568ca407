"""The options the Kubernetes verbs share, each with its environment variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.kube import kind, release
from tuner_job.contract import ENV_SHARED_DIR, SHARED_MOUNT

__all__ = [
    "ChartDir", "ClusterName", "Context", "LocalShared", "Namespace", "Release", "SetValues", "SharedDir", "ValuesFiles",
    "DEFAULT_NAMESPACE", "DEFAULT_RELEASE",
]  # fmt: skip

DEFAULT_RELEASE = release.DEFAULT_RELEASE
DEFAULT_NAMESPACE = release.DEFAULT_NAMESPACE
DEFAULT_CLUSTER = kind.DEFAULT_CLUSTER

ClusterName = Annotated[
    str, typer.Option("--name", "--cluster", metavar="NAME", envvar="TUNECTL_CLUSTER", help="Name of the kind cluster.")
]
SharedDir = Annotated[
    Path,
    typer.Option(
        "--shared-dir",
        metavar="DIR",
        envvar=ENV_SHARED_DIR,
        help=f"Host folder that kind mounts at {SHARED_MOUNT} on every node (the shared volume).",
    ),
]
Release = Annotated[
    str, typer.Option("--release", "-r", metavar="NAME", envvar="TUNECTL_RELEASE", help="Helm release name.")
]
Namespace = Annotated[
    str, typer.Option("--namespace", "-n", metavar="NAME", envvar="TUNECTL_NAMESPACE", help="Kubernetes namespace.")
]
Context = Annotated[
    str | None,
    typer.Option(
        "--context", metavar="NAME", envvar="TUNECTL_CONTEXT", help="kubeconfig context (default: the current one)."
    ),
]
LocalShared = Annotated[
    Path | None,
    typer.Option(
        "--shared-dir",
        metavar="DIR",
        envvar=ENV_SHARED_DIR,
        help="The shared volume as a folder here (default: on kind, the folder the nodes mount; elsewhere the cluster's volume).",
    ),
]
ValuesFiles = Annotated[
    list[Path] | None, typer.Option("--values", "-f", metavar="FILE", help="Helm values file (repeatable).")
]
SetValues = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Helm value override (repeatable).")
]
ChartDir = Annotated[Path | None, typer.Option("--chart", metavar="DIR", help="Chart folder.")]
