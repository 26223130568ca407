"""`tunectl results`: the leaderboard of a finished or running search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.errors import user_errors
from tuner_job.contract import ENV_SHARED_DIR

__all__ = ["results"]


def results(
    shared_dir: Annotated[Path, typer.Option(metavar="DIR", help="The shared volume (local folder).", envvar=ENV_SHARED_DIR)] = Path("shared"),
    run: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Run name; repeat for two stages side by side in --plot. Default: the latest run."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, metavar="N", help="How many trials to show.")] = 10,
    plot: Annotated[Path | None, typer.Option(metavar="FILE", help="Also draw the objective per trial and per hyperparameter to this PNG.")] = None,
) -> None:
    """Print the leaderboard of a finished or running search."""
    from cluster.runs import find_run, print_leaderboard
    from tuner_job.trials import read_objective

    with user_errors():
        runs = [find_run(shared_dir, name) for name in (run or [None])]
        for paths in runs:
            print_leaderboard(paths, top)
        if plot is not None:
            from cluster.plot import plot_runs

            out = plot_runs(runs, plot, read_objective(runs[0]))
            typer.echo(f"plot written to {out}")
