"""`tunectl`: run a search on this machine, or on Kubernetes.

Commands are thin: typed options handed to a function that does the work.
Subcommand groups are nouns in their own modules, attached here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cluster import __version__
from cluster.cli_style import TunectlGroup

app = typer.Typer(
    name="tunectl",
    cls=TunectlGroup,  # kubectl/helm-style help, one-line usage errors (cluster.cli_style)
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Distributed KerasTuner search: one chief, N workers, one TensorBoard.",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunectl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """Distributed KerasTuner search: one chief, N workers, one TensorBoard."""


# --- command registration: one line per module (cluster.kube after cluster.data: push joins its group) ---
from cluster.data import data_app as _data_app; app.add_typer(_data_app, name="data")  # noqa: E402,E702,I001
from cluster.local_cmd import local as _local; app.command("local")(_local)  # noqa: E402,E702,I001
from cluster.results_cmd import results as _results; app.command("results")(_results)  # noqa: E402,E702,I001
from cluster.kube import register as _register_kube; _register_kube(app)  # noqa: E402,E702,I001
from cluster.narrow import narrow_command as _narrow; app.command("narrow")(_narrow)  # noqa: E402,E702,I001
from cluster.study import study_command as _study; app.command("study")(_study)  # noqa: E402,E702,I001
from cluster.init_cmd import init_command as _init; app.command("init")(_init)  # noqa: E402,E702,I001
