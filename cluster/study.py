"""`tunectl study`: the article's staged search as one command.

Stage 1 searches the whole space (random search by default); the space is then
narrowed around its best trials (`cluster.narrow`), and stage 2 searches the
narrowed space (Bayesian by default), warm-started with the stage-1 trials that
fall inside it, so the new stage fits its model on them and never pays for a
point twice. Stages are runs `<run>-s1`, `<run>-s2`, ... under `<shared>/runs`,
so one TensorBoard (`--logdir <shared>/runs`) shows them side by side.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from cluster.errors import LauncherError, user_errors
from tuner_job.config import SearchConfig, Stage, parse_config, stage_run
from tuner_job.config import parse_stages as _parse_stages
from tuner_job.errors import EXIT_OK
from tuner_job.layout import RunPaths, read_json

__all__ = ["Stage", "parse_stages", "stage_config", "run_study", "study_command"]


def parse_stages(text: str) -> list[Stage]:
    """`random:60,bayesian:40` -> two stages (see `tuner_job.config.parse_stages`)."""
    try:
        return _parse_stages(text)
    except ValueError as exc:
        raise LauncherError(f"--stages: {exc}") from None


def stage_name(run: str, index: int) -> str:
    return stage_run(run, index)


def stage_config(base: SearchConfig, run: str, stage: Stage, epochs: int | None, warm_start: str | None = None) -> SearchConfig:
    data = base.model_dump(mode="json")
    data.update(run=run, tuner=stage.tuner, max_trials=stage.max_trials, warm_start=warm_start)
    if epochs is not None:
        data["epochs"] = epochs
    return parse_config(data, "study")


def _narrowing_table(result, source: str, console: Console) -> None:  # noqa: ANN001 (cluster.narrow.NarrowResult)
    table = Table(title=f"{source}: space narrowed around the top {len(result.top_ids)} of {result.completed} completed trials", title_justify="left")
    for column in ("hyperparameter", "before", "after", "trials", "note"):
        table.add_column(column, justify="right" if column == "trials" else "left")
    for row in result.rows:
        table.add_row(row.name, row.before, row.after if row.after != row.before else "[dim]unchanged[/dim]", str(row.backed), row.note)
    console.print(table)


def _completed(paths: RunPaths) -> bool:
    return (read_json(paths.status) or {}).get("state") == "completed"


def run_study(
    base: SearchConfig,
    shared_dir: Path,
    stages: list[Stage],
    *,
    workers: int = 2,
    top: int | None = None,
    epochs: int | None = None,
    tensorboard_port: int | None = 6006,
    fresh: bool = False,
    plot: Path | None = None,
    max_restarts: int = 3,
    console: Console | None = None,
) -> int:
    """Run the stages one after another; 0 only when every stage completed."""
    from cluster.local import LocalSearch, check_inputs, summarize
    from cluster.narrow import narrow_run

    shared_dir = shared_dir.resolve()
    console = console or (Console() if Console().is_terminal else Console(width=200))
    check_inputs(base, shared_dir)
    config = stage_config(base, stage_name(base.run, 1), stages[0], epochs)
    done: list[RunPaths] = []
    for index, stage in enumerate(stages, start=1):
        if index > 1:
            previous = done[-1]
            with tempfile.TemporaryDirectory(prefix="tunectl-study-") as tmp:
                result, narrowed = narrow_run(
                    shared_dir, previous.run, top_k=top, out=Path(tmp) / "search.yaml",
                    new_run=stage_name(base.run, index), tuner=stage.tuner, max_trials=stage.max_trials,
                )
            _narrowing_table(result, previous.run, console)
            config = narrowed  # warm_start: the previous stage
        search = LocalSearch(config, shared_dir, workers, fresh=fresh, tensorboard_port=tensorboard_port,
                             max_restarts=max_restarts, console=console)
        console.rule(f"study {base.run}: stage {index} of {len(stages)}: run {config.run}, {config.tuner}, {config.max_trials} trials"
                     + (f", warm start from {config.warm_start}" if config.warm_start else ""))
        code = search.run()
        if search.paths.tuner.is_dir():
            summarize(search.paths, console, tensorboard_port)
        if code != EXIT_OK or not _completed(search.paths):
            console.print(f"[red]study {base.run}: stage {index} ({config.run}) did not complete (exit code {code}); later stages not run[/red]")
            return code or 1
        done.append(search.paths)

    _print_summary(base.run, done, console)
    if plot is not None:
        from cluster.plot import plot_runs
        from cluster.runs import run_objective

        objective, direction = run_objective(done[0])
        console.print(f"plot written to {plot_runs(done, plot, objective, direction)}")
    console.print(f"TensorBoard: tensorboard --logdir {shared_dir / 'runs'} shows every stage")
    return EXIT_OK


def _print_summary(run: str, done: list[RunPaths], console: Console) -> None:
    from tuner_job.config import load_config

    table = Table(title=f"study {run}", title_justify="left")
    for column in ("stage", "run", "tuner", "trained", "seeded", "best", "best trial"):
        table.add_column(column)
    for index, paths in enumerate(done, start=1):
        trials = (read_json(paths.results_json) or {}).get("trials") or []
        seeded = sum(1 for t in trials if str(t.get("worker") or "").startswith("warm-start:"))
        best = next((t for t in trials if t.get("status") == "COMPLETED" and t.get("score") is not None), None)  # ranked
        table.add_row(
            str(index), paths.run, load_config(paths.config).tuner, str(len(trials) - seeded), str(seeded),
            "-" if best is None else f"{best['score']:.4f}", "-" if best is None else str(best["trial_id"]),
        )
    console.print(table)


def study_command(
    config: Annotated[Optional[Path], typer.Option(help="search.yaml of the study; default: ./search.yaml if present, else the built-in defaults.")] = None,
    stages: Annotated[str, typer.Option(help="tuner:trials per stage, in order.")] = "random:60,bayesian:40",
    workers: Annotated[int, typer.Option(min=1, help="Number of worker processes.")] = 2,
    shared_dir: Annotated[Path, typer.Option(help="The shared folder: data/ and runs/.", envvar="TUNER_SHARED_DIR")] = Path("shared"),
    run: Annotated[Optional[str], typer.Option(help="Name of the study: stages are runs <run>-s1, <run>-s2, ...")] = None,
    top: Annotated[Optional[int], typer.Option(min=1, help="Narrow each stage's space around its K best trials (default 5).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override epochs.")] = None,
    tensorboard_port: Annotated[int, typer.Option(help="TensorBoard's port while a stage runs; 0 starts none.")] = 6006,
    fresh: Annotated[bool, typer.Option(help="Delete the stages' run folders first (otherwise existing stages resume).")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Draw every stage's trials to this PNG at the end.")] = None,
    max_restarts: Annotated[int, typer.Option(min=0, help="Restarts per process before giving up.")] = 3,
) -> None:
    """Staged search: a wide first stage, then narrowed, warm-started stages (random -> Bayesian by default)."""
    from tuner_job.config import load_config

    with user_errors():
        plan = parse_stages(stages)
        if config is None and Path("search.yaml").is_file():
            config = Path("search.yaml")
        overrides = {"run": run}
        base = load_config(config, overrides) if config is not None else parse_config({k: v for k, v in overrides.items() if v}, "command line")
        if base.warm_start:
            raise LauncherError("warm_start: a study sets it for each stage itself; remove it from the config")
        code = run_study(base, shared_dir, plan, workers=workers, top=top, epochs=epochs,
                         tensorboard_port=tensorboard_port or None, fresh=fresh, plot=plot, max_restarts=max_restarts)
    raise typer.Exit(code)
