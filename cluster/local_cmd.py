"""`tunectl local`: the command, the checks it runs before any process starts, the summary after.

`cluster.local.LocalSearch` runs the processes; `tunectl study` shares the
checks and the summary.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cluster.console import make_console
from cluster.errors import BadInputError, LauncherError, user_errors
from cluster.local import LocalSearch
from cluster.local_tensorboard import KeepTensorBoard
from tuner_job.config import SearchConfig, dump_config
from tuner_job.contract import ENV_SHARED_DIR, TENSORBOARD_PORT
from tuner_job.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_SEARCH_FAILED
from tuner_job.layout import RunPaths, read_json
from tuner_job.progress import counted, state_line

__all__ = ["check_inputs", "summarize", "local"]


def _require_free_port(port: int, who: str = "the oracle", option: str = "--port") -> None:
    """A port the search binds must be free: its process would only fail after starting (the chief: after TensorFlow)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            problem = f"port {port} is in use: {who} cannot bind 127.0.0.1:{port}"
            raise BadInputError(f"{problem}; stop what holds it, or choose another {option}") from None


def check_inputs(
    config: SearchConfig, shared_dir: Path, *, fresh: bool = False, port: int | None = None, tensorboard_port: int | None = None
) -> str:
    """Fail fast, before any process starts, on what the chief would reject; return what was checked.

    The folder, the data layout and the ports are checked here; the rest
    (objective, hypermodel, space, a changed config on resume, the metrics the
    model logs) by `python -m tuner_job --check` in a subprocess, so that
    TensorFlow never loads into the launcher.

    Raises:
        BadInputError: the first mistake, in its one line (exit 2).
        LauncherError: the check itself crashed (its last line).
    """
    from tuner_job.data import list_image_folder
    from tuner_job.errors import DataError

    if not shared_dir.is_dir():
        raise BadInputError(
            f"shared directory not found: {shared_dir} (create it with its data/<dataset>/<class>/ images; "
            f"`tunectl data synth --out {shared_dir}/data/toonvision` makes a small one)"
        )
    try:
        list_image_folder(shared_dir / config.data)
    except DataError as exc:
        raise BadInputError(str(exc)) from None
    if port:
        _require_free_port(port)
    if tensorboard_port:
        _require_free_port(tensorboard_port, "TensorBoard", "--tensorboard-port (0 starts none)")
    with tempfile.TemporaryDirectory(prefix="tunectl-check-") as tmp:
        config_file = Path(tmp) / "search.yaml"
        config_file.write_text(dump_config(config))
        argv = [sys.executable, "-m", "tuner_job", "--check", "--config", str(config_file), "--shared-dir", str(shared_dir)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        done = subprocess.run([*argv, *(["--fresh"] if fresh else [])], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if done.returncode == EXIT_BAD_INPUT and errors:
        raise BadInputError(errors[-1])
    if done.returncode != EXIT_OK:
        raise LauncherError(f"checking the search crashed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    return next((line for line in reversed(lines) if line.startswith("checked:")), "checked")


def summarize(paths: RunPaths, console: Console, tensorboard_port: int | None) -> None:
    from cluster.runs import print_leaderboard

    print_leaderboard(paths, 10, console)
    if (paths.best / "model.keras").is_file():
        console.print(f"best model: {paths.best / 'model.keras'} (hyperparameters in {paths.best / 'hyperparameters.yaml'})", markup=False)
    console.print(f"results: {paths.results_json}, {paths.leaderboard_csv}", markup=False)
    console.print(f"TensorBoard logs: {paths.logs}" + (f"  (view: tensorboard --logdir {paths.runs_dir})" if tensorboard_port else ""))


def say_stopped(runs: list[RunPaths], console: Console) -> None:
    """One line for a run its chief recorded as stopped (a signal, before the verdict): how to resume it."""
    for paths in runs:
        status = read_json(paths.status) or {}
        if status.get("state") == "stopped":
            console.print(f"run {paths.run} {state_line(status)}", markup=False, highlight=False)


def local_command_impl(
    config: SearchConfig, shared_dir: Path, workers: int, fresh: bool, tensorboard_port: int | None, max_restarts: int, port: int | None,
    keep_tensorboard: bool = False,
) -> int:
    console = make_console()
    console.print(f"checking run {config.run}: config, data, hypermodel, space, objective (one training step on blank images)")
    console.print(check_inputs(config, shared_dir, fresh=fresh, port=port, tensorboard_port=tensorboard_port), highlight=False, markup=False)
    search = LocalSearch(
        config, shared_dir, workers, fresh=fresh, port=port, tensorboard_port=tensorboard_port, max_restarts=max_restarts, console=console,
        keep_tensorboard=keep_tensorboard,
    )
    sizes = f"{counted(config.max_trials, 'trial')}, {counted(workers, 'worker')}"
    console.print(f"search [bold]{config.run}[/bold]: {config.tuner}, {sizes}, oracle on 127.0.0.1:{search.port}")
    code = search.run()

    def report() -> int:
        if code in (EXIT_OK, EXIT_SEARCH_FAILED):
            for paths in search.runs:
                if paths.tuner.is_dir():
                    summarize(paths, console, tensorboard_port)
        else:
            say_stopped(search.runs, console)
        return code

    from cluster.local_tensorboard import report_then_serve

    return report_then_serve(search, report)


def local(
    config: Annotated[
        Path | None, typer.Option(metavar="FILE", help="search.yaml; default: ./search.yaml if present, else the built-in defaults.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, metavar="N", help="Number of worker processes.")] = 2,
    shared_dir: Annotated[Path, typer.Option(metavar="DIR", help="The shared folder: data/ and runs/.", envvar=ENV_SHARED_DIR)] = Path("shared"),
    run: Annotated[str | None, typer.Option(metavar="NAME", help="Override the run name.")] = None,
    max_trials: Annotated[int | None, typer.Option(metavar="N", help="Override max_trials.")] = None,
    epochs: Annotated[int | None, typer.Option(metavar="N", help="Override epochs.")] = None,
    tuner: Annotated[str | None, typer.Option(metavar="NAME", help="Override the tuner: random, hyperband, bayesian, grid, asha.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete this run's folder first (otherwise an existing run resumes).")] = False,
    tensorboard_port: Annotated[
        int, typer.Option(metavar="PORT", envvar="TUNECTL_TENSORBOARD_PORT", help="TensorBoard's port; 0 starts none.")
    ] = TENSORBOARD_PORT,
    keep_tensorboard: KeepTensorBoard = None,
    max_restarts: Annotated[
        int,
        typer.Option(min=0, metavar="N", help="Restarts per process before giving up, like a Job's backoffLimit (stops from outside not counted)."),
    ] = 3,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="The oracle's port (default: a free one).")] = None,
) -> None:
    """Run a search on this machine: the chief, N workers and TensorBoard as processes."""
    from cluster.init_cmd import defaults_note
    from cluster.local_tensorboard import keep_tensorboard_wanted
    from tuner_job.config import load_config, parse_config

    with user_errors():
        if config is None and Path("search.yaml").is_file():
            config = Path("search.yaml")
            typer.echo("config: ./search.yaml", err=True)
        overrides = {"run": run, "max_trials": max_trials, "epochs": epochs, "tuner": tuner}
        if config is not None:
            search = load_config(config, overrides)
        else:
            search = parse_config({k: v for k, v in overrides.items() if v is not None}, "command line")
            typer.echo(f"note: {defaults_note(search)}", err=True)
        keep = keep_tensorboard_wanted(keep_tensorboard, tensorboard_port)
        code = local_command_impl(search, shared_dir, workers, fresh, tensorboard_port or None, max_restarts, port, keep)
    raise typer.Exit(code)
