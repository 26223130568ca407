"""`tunectl narrow`: shrink a run's search space around its best trials and write the next stage's config.

A thin command over `tuner_job.narrowing` (the rules, shared with a `stages:`
search): it checks its flags, writes the narrowed `search.yaml` and prints the
before/after table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.errors import BadInputError, user_errors
from tuner_job.config import TUNERS, SearchConfig, dump_config
from tuner_job.contract import ENV_SHARED_DIR
from tuner_job.layout import atomic_write_text
from tuner_job.narrowing import DEFAULT_TOP, NarrowResult, check_selection, next_stage_config

__all__ = ["narrow_run", "narrowing_table", "narrow_command"]


def narrow_run(
    shared_dir: Path,
    run: str,
    *,
    top_k: int | None = None,
    quantile: float | None = None,
    out: Path = Path("search-narrowed.yaml"),
    new_run: str | None = None,
    tuner: str = "bayesian",
    max_trials: int | None = None,
) -> tuple[NarrowResult, SearchConfig]:
    """Narrow run `run`'s space (`narrowing.next_stage_config`) and write the next stage's config to `out`.

    Raises:
        NarrowingError: a bad `--top`/`--quantile` (named so), or see `next_stage_config`; nothing is written.
        ConfigError: see `next_stage_config`.
    """
    check_selection(top_k, quantile, names=("--top", "--quantile"))
    result, config = next_stage_config(
        shared_dir, run, new_run=new_run or f"{run}-narrow", tuner=tuner, max_trials=max_trials, top_k=top_k, quantile=quantile
    )
    atomic_write_text(Path(out), dump_config(config))
    return result, config


def narrowing_table(result: NarrowResult, title: str):  # noqa: ANN201 (rich.table.Table, imported late)
    """The before/after table of a narrowing."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("hyperparameter", no_wrap=True)
    table.add_column("before", no_wrap=True)
    table.add_column("after", no_wrap=True)
    table.add_column("trials", justify="right", no_wrap=True)
    table.add_column("note", ratio=1)
    for row in result.rows:
        after = row.after if row.after != row.before else "[dim]unchanged[/dim]"
        table.add_row(row.name, row.before, after, str(row.backed), row.note)
    return table


def narrow_command(
    run: Annotated[str, typer.Option("--run", metavar="NAME", help="The finished (or running) run to narrow around.")],
    shared_dir: Annotated[
        Path, typer.Option("--shared-dir", metavar="DIR", envvar=ENV_SHARED_DIR, help="The shared volume (holds runs/).")
    ] = Path("shared"),
    top: Annotated[int | None, typer.Option("--top", metavar="K", help="Narrow around the K best trials (default 5).")] = None,
    quantile: Annotated[
        float | None, typer.Option("--quantile", metavar="FRACTION", help="Narrow around the best fraction of trials, e.g. 0.2.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where to write the new search.yaml.")] = Path("search-narrowed.yaml"),
    new_run: Annotated[str | None, typer.Option("--new-run", metavar="NAME", help="Name of the next run (default <run>-narrow).")] = None,
    tuner: Annotated[str, typer.Option("--tuner", metavar="NAME", help=f"Tuner of the next stage: {' | '.join(TUNERS)}.")] = "bayesian",
    max_trials: Annotated[int | None, typer.Option("--max-trials", metavar="N", help="Trials of the next stage (default: as before).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Shrink a run's search space around its best trials and write the next stage's search.yaml."""
    from cluster.console import make_console

    with user_errors():
        if out.exists() and not force:
            raise BadInputError(f"{out} exists; pass --force to overwrite it")
        result, config = narrow_run(
            shared_dir, run, top_k=top, quantile=quantile, out=out, new_run=new_run, tuner=tuner, max_trials=max_trials
        )
        console = make_console()
        wanted = top if top is not None else (None if quantile is not None else DEFAULT_TOP)
        if wanted is not None and len(result.top_ids) < wanted:
            flag = f"--top {top}" if top is not None else f"the default --top {DEFAULT_TOP}"
            typer.echo(f"warning: {flag}, but run {run!r} has only {result.completed} completed trials: "
                       f"narrowing around all {len(result.top_ids)} of them", err=True)  # fmt: skip
        console.print(narrowing_table(result, f"{run}: top {len(result.top_ids)} of {result.completed} completed trials ({result.direction})"))
        console.print(f"wrote {out}: run {config.run!r}, tuner {config.tuner}, warm start from {run!r}")
        console.print(f"next: tunectl local --config {out} --shared-dir {shared_dir}", soft_wrap=True)
