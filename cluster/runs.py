"""Finding runs on the shared volume and showing them: the leaderboard table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cluster.console import make_console
from cluster.errors import BadInputError
from tuner_job.layout import RunPaths
from tuner_job.objective import Objective
from tuner_job.progress import state_line
from tuner_job.results import TrialRecord, collect_trials, has_rungs, promotion_note, rank
from tuner_job.trials import ENDED, read_objective, read_status

__all__ = ["find_run", "leaderboard_table", "load_ranked", "print_leaderboard"]


def find_run(shared_dir: Path, run: str | None) -> RunPaths:
    """The named run, or the most recent one when no name is given."""
    runs_dir = shared_dir / "runs"
    if run:
        paths = RunPaths(shared_dir, run)
        if not paths.root.is_dir():
            known = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
            raise BadInputError(f"run {run!r} not found under {runs_dir} (runs: {', '.join(known) or 'none'})")
        return paths
    candidates = sorted((p for p in runs_dir.glob("*/tuner") if p.is_dir()), key=lambda p: p.stat().st_mtime) if runs_dir.is_dir() else []
    if not candidates:
        raise BadInputError(f"no runs under {runs_dir}: start one with `tunectl local`")
    return RunPaths(shared_dir, candidates[-1].parent.name)


def load_ranked(paths: RunPaths) -> tuple[list[TrialRecord], Objective]:
    """The run's trials ranked best first, and its objective (as its chief decided it: `trials.read_objective`)."""
    objective = read_objective(paths)
    return rank(collect_trials(paths), objective), objective


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def leaderboard_table(records: list[TrialRecord], objective: str, title: str, top: int = 10, stopped: bool = False) -> Table:
    """The leaderboard as a rich table; asha's and hyperband's trials with their rung, epochs and the trial each was promoted from.

    `stopped`: the search was stopped by a signal, so a trial still RUNNING in
    its files is shown as INTERRUPTED (the next start resumes it).
    """
    table = Table(title=title, title_justify="left")
    rungs = has_rungs(records)
    columns = (("#", "right"), ("trial", "right"), ("status", "left"), (objective, "right"), ("worker", "left"), ("secs", "right"))
    columns += (("rung", "right"), ("epochs", "right")) if rungs else ()
    for column, justify in (*columns, ("hyperparameters / error", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for i, r in enumerate(records[:top], start=1):
        hps = escape(" ".join(f"{k}={_fmt(v)}" for k, v in sorted(r.hyperparameters.items()) if not k.startswith("tuner/")))
        if r.promoted_from:
            hps = f"[dim]{promotion_note(r)}:[/dim] {hps}"
        detail = hps if r.status == "COMPLETED" or not r.error else f"[red]{escape(r.error)}[/red]"
        table.add_row(
            str(i) if r.status == "COMPLETED" else "-",
            r.trial_id,
            "INTERRUPTED" if stopped and r.status == "RUNNING" else r.status,
            "-" if r.score is None else f"{r.score:.4f}",
            r.worker or "-",
            "-" if r.seconds is None else f"{r.seconds:.1f}",
            *(("-" if r.rung is None else str(r.rung), "-" if r.epochs is None else str(r.epochs)) if rungs else ()),
            detail,
        )
    return table


def print_leaderboard(paths: RunPaths, top: int = 10, console: Console | None = None) -> list[TrialRecord]:
    """Print the run's leaderboard (its `top` best trials) with its state; return every trial, ranked."""
    console = console or make_console()
    records, objective = load_ranked(paths)
    status = read_status(paths)
    state = status.get("state", "unknown")
    done = sum(1 for r in records if r.status in ENDED)
    shown = f"top {min(top, len(records))}"
    if has_rungs(records):  # max_trials counts new configurations; a promotion is a trial of its own
        configurations = sum(1 for r in records if r.status in ENDED and not r.promoted_from)
        counts = f"{configurations}/{status.get('max_trials', '?')} configurations done, {done} trials with promotions"
    else:
        counts = f"{done}/{status.get('max_trials', '?')} trials done"
    title = f"run {paths.run}: {state}, {counts} ({shown})"
    console.print(leaderboard_table(records, objective.name, title, top, stopped=state == "stopped"))
    if status.get("message") and state == "failed":
        console.print(f"[red]search failed:[/red] {status['message']}")
    elif state == "stopped":
        console.print(f"[yellow]search {state_line(status)}[/yellow]")
    return records
