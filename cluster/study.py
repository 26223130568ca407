"""`tunectl study`: the article's staged search as one command, run on this machine.

A thin command: it writes the `stages:` search (`study_config`) and runs it
with `tunectl local`'s processes, so the stages are exactly those of a chart
deployment with `search.stages` (`tuner_job.stages`, one implementation).
Stage 1 searches the whole space (random search by default); the chief then
narrows the space around its best trials and runs stage 2 (Bayesian by
default) warm-started with the stage-1 trials that fall inside it, and so on.
Stages are runs `<run>-s1`, `<run>-s2`, ... under `<shared>/runs`, so one
TensorBoard (`--logdir <shared>/runs`) shows them side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cluster.errors import BadInputError, user_errors
from cluster.local_tensorboard import KeepTensorBoard, keep_tensorboard_wanted
from tuner_job.config import SearchConfig, dump_config, parse_config, parse_stages, stage_run
from tuner_job.contract import ENV_SHARED_DIR, TENSORBOARD_PORT
from tuner_job.errors import EXIT_OK
from tuner_job.layout import RunPaths, atomic_write_text
from tuner_job.trials import read_status

__all__ = ["study_config", "run_study", "study_command"]


def study_config(base: SearchConfig, stages: str, *, top: int | None = None, epochs: int | None = None) -> SearchConfig:
    """The `stages:` search a study runs: `base` with `stages`, `stage_top` and `epochs` set.

    Raises:
        BadInputError: `stages` is not `tuner:trials,...` with at least two stages,
            or `base` sets `warm_start` (each stage sets its own).
    """
    try:
        parse_stages(stages)
    except ValueError as exc:
        raise BadInputError(f"--stages: {exc}") from None
    if base.warm_start:
        raise BadInputError("warm_start: a study sets it for each stage itself; remove it from the config")
    data: dict[str, Any] = base.model_dump(mode="json", exclude_defaults=True)
    data.update(run=base.run, stages=stages)
    if top is not None:
        data["stage_top"] = top
    if epochs is not None:
        data["epochs"] = epochs
    return parse_config(data, "study")


def run_study(
    config: SearchConfig,
    shared_dir: Path,
    *,
    workers: int = 2,
    tensorboard_port: int | None = TENSORBOARD_PORT,
    fresh: bool = False,
    plot: Path | None = None,
    max_restarts: int = 3,
    console: Console | None = None,
    keep_tensorboard: bool = False,
) -> int:
    """Run the staged search `config` (`study_config`) locally; 0 only when every stage completed.

    `keep_tensorboard`: leave TensorBoard up after the search until Ctrl-C (`cluster.local_tensorboard`).
    """
    from cluster.console import make_console
    from cluster.local import LocalSearch
    from cluster.local_cmd import check_inputs
    from cluster.local_tensorboard import report_then_serve

    assert config.stages is not None
    shared_dir = shared_dir.resolve()
    console = console or make_console()
    console.print(f"checking study {config.run}: config, data, hypermodel, space, objective (one training step on blank images)")
    console.print(check_inputs(config, shared_dir, fresh=fresh, tensorboard_port=tensorboard_port), highlight=False, markup=False)
    search = LocalSearch(config, shared_dir, workers, fresh=fresh, tensorboard_port=tensorboard_port, max_restarts=max_restarts, console=console,
                         keep_tensorboard=keep_tensorboard)  # fmt: skip
    console.rule(f"study {config.run}: stages {config.stages}, narrowed around the top {config.stage_top} trials of each stage")
    code = search.run()
    return report_then_serve(search, lambda: _report(config, search, code, shared_dir, tensorboard_port, plot))


def _report(config: SearchConfig, search: Any, code: int, shared_dir: Path, tensorboard_port: int | None, plot: Path | None) -> int:
    """Each stage's leaderboard, the study's table and plot; the study's exit code."""
    from cluster.local_cmd import summarize

    console = search.console
    done = [paths for paths in search.runs if paths.tuner.is_dir()]
    for paths in done:
        summarize(paths, console, tensorboard_port)
    completed = [paths for paths in search.runs if read_status(paths).get("state") == "completed"]
    if code != EXIT_OK or len(completed) < len(search.runs):
        console.print(f"[red]study {config.run}: {len(completed)} of {len(search.runs)} stages completed (exit code {code})[/red]")
        return code or 1
    _print_summary(config.run, done, console)
    if plot is not None:
        from cluster.plot import plot_runs
        from tuner_job.trials import read_objective

        console.print(f"plot written to {plot_runs(done, plot, read_objective(done[0]))}")
    console.print(f"TensorBoard: tensorboard --logdir {shared_dir / 'runs'} shows every stage")
    return EXIT_OK


def _print_summary(run: str, done: list[RunPaths], console: Console) -> None:
    from tuner_job.config import load_config
    from tuner_job.layout import read_json
    from tuner_job.trials import trial_score

    table = Table(title=f"study {run}", title_justify="left")
    for column in ("stage", "run", "tuner", "trained", "seeded", "best", "best trial"):
        table.add_column(column)
    for index, paths in enumerate(done, start=1):
        trials = (read_json(paths.results_json) or {}).get("trials") or []
        seeded = sum(1 for t in trials if str(t.get("worker") or "").startswith("warm-start:"))
        best = next((t for t in trials if trial_score(t) is not None), None)  # results.json is ranked
        table.add_row(
            str(index), paths.run, load_config(paths.config).tuner, str(len(trials) - seeded), str(seeded),
            "-" if best is None else f"{best['score']:.4f}", "-" if best is None else str(best["trial_id"]),
        )  # fmt: skip
    console.print(table)


def study_command(
    config: Annotated[
        Path | None, typer.Option(metavar="FILE", help="search.yaml of the study; default: ./search.yaml if present, else the built-in defaults.")
    ] = None,
    stages: Annotated[str, typer.Option(metavar="TUNER:N,...", help="tuner:trials per stage, in order.")] = "random:60,bayesian:40",
    workers: Annotated[int, typer.Option(min=1, metavar="N", help="Number of worker processes.")] = 2,
    shared_dir: Annotated[Path, typer.Option(metavar="DIR", help="The shared folder: data/ and runs/.", envvar=ENV_SHARED_DIR)] = Path("shared"),
    run: Annotated[str | None, typer.Option(metavar="NAME", help="Name of the study: stages are runs <run>-s1, <run>-s2, ...")] = None,
    top: Annotated[int | None, typer.Option(min=1, metavar="K", help="Narrow each stage's space around its K best trials (default 5).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, metavar="N", help="Override epochs.")] = None,
    tensorboard_port: Annotated[
        int, typer.Option(metavar="PORT", envvar="TUNECTL_TENSORBOARD_PORT", help="TensorBoard's port while the study runs; 0 starts none.")
    ] = TENSORBOARD_PORT,
    keep_tensorboard: KeepTensorBoard = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the stages' run folders first (otherwise existing stages resume).")] = False,
    plot: Annotated[Path | None, typer.Option(metavar="FILE", help="Draw every stage's trials to this PNG at the end.")] = None,
    max_restarts: Annotated[int, typer.Option(min=0, metavar="N", help="Restarts per process before giving up.")] = 3,
    write_config: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Only write the staged search.yaml here (for `tunectl local` or the chart's search:), do not run it."),
    ] = None,
) -> None:
    """Staged search: a wide first stage, then narrowed, warm-started stages (random -> Bayesian by default)."""
    from tuner_job.config import load_config

    with user_errors():
        if config is None and Path("search.yaml").is_file():
            config = Path("search.yaml")
        overrides = {"run": run}
        base = load_config(config, overrides) if config is not None else parse_config({k: v for k, v in overrides.items() if v}, "command line")
        staged = study_config(base, stages, top=top, epochs=epochs)
        if write_config is not None:
            atomic_write_text(write_config, dump_config(staged))
            runs = ", ".join(stage_run(staged.run, i) for i in range(1, len(parse_stages(stages)) + 1))
            typer.echo(f"wrote {write_config}: a staged search of runs {runs}")
            raise typer.Exit(EXIT_OK)
        code = run_study(staged, shared_dir, workers=workers, tensorboard_port=tensorboard_port or None, fresh=fresh,
                         plot=plot, max_restarts=max_restarts,
                         keep_tensorboard=keep_tensorboard_wanted(keep_tensorboard, tensorboard_port))  # fmt: skip
    raise typer.Exit(code)
