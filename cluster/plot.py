"""`tunectl results --plot FILE.png`: one picture of a run, or of the stages of a study.

Top panel: the objective of every trial in order (the x axis is labelled with
trial ids), the best so far, failed trials marked; stages follow one another on
the x axis, each in its own colour. A trial seeded from an earlier run (warm
start) is drawn once: in its own run when that run is plotted too, else hollow.
Below: one panel per hyperparameter, value against objective, the best trial
starred.
Reads only the shared volume (no TensorFlow); matplotlib is imported when a plot
is asked for, so `tunectl` stays fast without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.errors import BadInputError, LauncherError
from tuner_job.layout import WARM_PREFIX, WARM_START_LABEL, RunPaths, atomic_output
from tuner_job.objective import Objective
from tuner_job.space_model import Hyperparameter, space_from_trials
from tuner_job.trials import best_step_metrics, read_trials, trial_score

__all__ = ["plot_runs", "PANEL_COLUMNS"]

PANEL_COLUMNS = 3  # hyperparameter panels per row
_FAILED = ("FAILED", "INVALID")


@dataclass
class _Point:
    run: str
    trial_id: str
    x: int  # position across all stages, from 1
    status: str
    score: float | None
    values: dict[str, Any]
    seeded_from: str | None = None  # the run a warm-started trial came from


def _score(trial: dict[str, Any], objective: str) -> float | None:
    """The objective at a COMPLETED trial's best step (its score when that step was not recorded)."""
    if trial_score(trial) is None:
        return None
    return best_step_metrics(trial).get(objective, trial_score(trial))


def _load(runs: list[RunPaths], objective: str) -> tuple[list[_Point], dict[str, Hyperparameter], list[dict[str, Hyperparameter]]]:
    points: list[_Point] = []
    merged: dict[str, Hyperparameter] = {}
    spaces = []
    plotted = {paths.run for paths in runs}
    for paths in runs:
        trials = list(read_trials(paths).trials.values())
        space = space_from_trials(trials)
        spaces.append(space)
        for name, hp in space.items():
            merged.setdefault(name, hp)
        for trial in trials:
            seeded_from = _seeded_from(trial)
            if seeded_from in plotted:
                continue  # drawn where it was trained
            values = {k: v for k, v in ((trial.get("hyperparameters") or {}).get("values") or {}).items() if not k.startswith("tuner/")}
            point = _Point(paths.run, str(trial["trial_id"]), len(points) + 1, str(trial.get("status")), _score(trial, objective), values)
            point.seeded_from = seeded_from
            points.append(point)
    return points, merged, spaces


def _seeded_from(trial: dict[str, Any]) -> str | None:
    """The run a warm-started trial was seeded from (its id `w<id>`, its message `warm-start:<run>`), else None."""
    message = str(trial.get("message") or "")
    if str(trial.get("trial_id", "")).startswith(WARM_PREFIX) and message.startswith(WARM_START_LABEL):
        return message.removeprefix(WARM_START_LABEL)
    return None


def _panels(points: list[_Point], merged: dict[str, Hyperparameter]) -> list[str]:
    """Hyperparameters worth a panel: searched (not fixed) and with a value in some trial."""
    seen = {name for p in points for name in p.values}
    return [name for name, hp in merged.items() if hp.kind != "fixed" and name in seen]


def _best(points: list[_Point], objective: Objective) -> _Point | None:
    """The first point with the best score (`Objective.better`), or None."""
    best = None
    for point in points:
        if objective.better(point.score, None if best is None else best.score):
            best = point
    return best


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_runs(runs: list[RunPaths], out: Path, goal: Objective) -> Path:
    """Draw `runs` (one run, or the stages of a study in order) into the PNG `out`; return its path.

    Args:
        runs: the runs, drawn one after another.
        out: the PNG to write (atomically).
        goal: the objective drawn, and what "best" means (`trials.read_objective`).

    The PNG carries its layout in its text metadata (`Runs`, `Panels`,
    `Hyperparameters`, `Trials` drawn as `run/id`, the x axis' `Ticks`), so
    a caller or a test can check what was drawn.

    Raises:
        BadInputError: no run, or no completed trial in `runs` (exit 2): nothing to draw.
        LauncherError: matplotlib missing.
    """
    if not runs:
        raise BadInputError("nothing to plot: no run given.")
    objective, direction = goal.name, goal.direction
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError:
        raise LauncherError("plotting needs matplotlib: pip install 'keras-tuner-cluster[plot]'") from None

    points, merged, spaces = _load(runs, objective)
    if not any(p.score is not None for p in points):
        names = ", ".join(r.run for r in runs)
        found = f"{len(points)} trials, none completed" if points else "no trials yet"
        raise BadInputError(f"nothing to plot: run {names} has no completed trial ({found})")
    names = _panels(points, merged)
    columns = max(1, min(PANEL_COLUMNS, len(names)))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(5.0 * max(columns, 2), 4.2 + 3.4 * rows), layout="constrained")
    grid = figure.add_gridspec(1 + rows, columns, height_ratios=[1.25] + [1.0] * rows)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    colour = {paths.run: colours[i] for i, paths in enumerate(runs)}
    best = _best(points, goal)
    scores = [p.score for p in points if p.score is not None]
    log_scores = bool(scores) and min(scores) > 0 and max(scores) / min(scores) > 50

    # --- the objective per trial, stage after stage ---
    top = figure.add_subplot(grid[0, :])
    handles = []
    for paths in runs:
        mine = [p for p in points if p.run == paths.run]
        done = [p for p in mine if p.score is not None and p.seeded_from is None]
        top.scatter([p.x for p in done], [p.score for p in done], s=22, color=colour[paths.run], zorder=3)
        seeded = [p for p in mine if p.score is not None and p.seeded_from is not None]
        if seeded:  # trained in a run not plotted here: hollow
            top.scatter([p.x for p in seeded], [p.score for p in seeded], s=22, facecolors="none", edgecolors=colour[paths.run], zorder=3)
        failed = [p for p in mine if p.status in _FAILED]
        # Failed trials have no score: a cross on the axis floor, in the stage's colour.
        top.scatter([p.x for p in failed], [0.03] * len(failed), marker="x", s=40, color=colour[paths.run],
                    transform=top.get_xaxis_transform(), zorder=3, clip_on=False)
        label = f"{paths.run}: {len(done)} completed" + (f", {len(failed)} failed" if failed else "")
        label += f", {len(seeded)} seeded from {seeded[0].seeded_from} (hollow)" if seeded else ""
        handles.append(Line2D([], [], marker="o", linestyle="", color=colour[paths.run], label=label))
        if len(runs) > 1 and mine:
            if mine[0].x > 1:
                top.axvline(mine[0].x - 0.5, color="0.6", linestyle=":", linewidth=1)
            top.text(mine[0].x - 0.3, 0.97, paths.run, transform=top.get_xaxis_transform(), va="top", fontsize=8,
                     color=colour[paths.run], fontweight="bold")
    running, xs, ys = None, [], []
    for p in points:
        if goal.better(p.score, running):
            running = p.score
        if running is not None:
            xs.append(p.x)
            ys.append(running)
    top.step(xs, ys, where="post", color="0.15", linewidth=1.4, zorder=2)
    handles.append(Line2D([], [], color="0.15", label="best so far"))
    for paths in runs[1:]:  # the shading in the hyperparameter panels
        handles.append(Patch(color=colour[paths.run], alpha=0.15, label=f"{paths.run}: narrowed range (below)"))
    if any(p.status in _FAILED for p in points):
        handles.append(Line2D([], [], marker="x", linestyle="", color="0.3", label="failed (no score)"))
    if best is not None:
        top.scatter([best.x], [best.score], marker="*", s=260, color="gold", edgecolor="black", zorder=4)
        where = f"{best.run} " if len(runs) > 1 else ""
        # Into the plot: away from the floor (min) or ceiling (max), and leftwards in the right half.
        left = best.x > len(points) / 2
        top.annotate(f"best: {where}trial {best.trial_id}\n{objective} = {best.score:.4g}", (best.x, best.score),
                     xytext=(-14 if left else 14, 28 if direction == "min" else -28), textcoords="offset points",
                     ha="right" if left else "left", va="bottom" if direction == "min" else "top", fontsize=9,
                     arrowprops={"arrowstyle": "-", "color": "0.4"}, bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
        handles.append(Line2D([], [], marker="*", linestyle="", markersize=12, color="gold", markeredgecolor="black", label="best trial"))
    if log_scores:
        top.set_yscale("log")
    if any(p.status in _FAILED for p in points):
        low, high = top.get_ylim()  # room below the lowest point for the failed trials' crosses
        top.set_ylim(low / (high / low) ** 0.08 if log_scores else low - 0.08 * (high - low), high)
    top.set_xlim(0.5, len(points) + 0.5)
    _trial_id_ticks(top, points)
    top.set_xlabel("trial id" + (" (stages one after another)" if len(runs) > 1 else ""))
    top.set_ylabel(objective)
    top.set_title(f"{objective} per trial ({'lower' if direction == 'min' else 'higher'} is better)")
    top.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
    top.grid(alpha=0.3)

    # --- one panel per hyperparameter ---
    first = None
    for index, name in enumerate(names):
        axes = figure.add_subplot(grid[1 + index // columns, index % columns], sharey=first)
        first = first or axes
        _hyperparameter_panel(axes, name, merged[name], runs, spaces, points, best, colour)
        if index % columns == 0:
            axes.set_ylabel(objective)
        if log_scores:
            axes.set_yscale("log")

    metadata = {
        "Title": f"{objective}: {', '.join(r.run for r in runs)}",
        "Software": "tunectl results --plot",
        "Runs": str(len(runs)),
        "Panels": str(1 + len(names)),
        "Hyperparameters": ",".join(names),
        "Trials": ",".join(f"{p.run}/{p.trial_id}" for p in points),
        "Ticks": ",".join(_tick_labels(top)),
    }
    return _save(figure, Path(out), metadata)


def _trial_id_ticks(axes: Any, points: list[_Point]) -> None:
    """Whole-number positions only, each labelled with the trial id drawn there."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ids = {p.x: p.trial_id for p in points}
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(12, max(1, len(points)))))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: ids.get(round(x), "") if abs(x - round(x)) < 1e-6 else ""))


def _tick_labels(axes: Any) -> list[str]:
    """The x tick labels as they will be drawn (locator and formatter, without rendering)."""
    axis = axes.xaxis
    low, high = axes.get_xlim()
    locs = [x for x in axis.get_major_locator()() if low <= x <= high]
    return [axis.get_major_formatter()(x, i) for i, x in enumerate(locs)]


def _hyperparameter_panel(axes, name, hp, runs, spaces, points, best, colour) -> None:  # noqa: ANN001
    from matplotlib.ticker import MaxNLocator

    mine = [p for p in points if p.score is not None and name in p.values]
    categorical = hp.kind in ("choice", "boolean") or any(isinstance(p.values[name], (str, bool)) for p in mine)
    if categorical:
        order = list(hp.values) + [v for p in mine for v in [p.values[name]] if v not in hp.values]
        labels = list(dict.fromkeys(_short(v) for v in order))
        position = {label: i for i, label in enumerate(labels)}

        def place(p: _Point) -> float:
            # Stages side by side within a category, so they do not hide each other.
            shift = (runs.index(next(r for r in runs if r.run == p.run)) - (len(runs) - 1) / 2) * 0.18
            return position[_short(p.values[name])] + shift

        axes.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0)
        axes.set_xlim(-0.6, len(labels) - 0.4)
    else:

        def place(p: _Point) -> float:
            return p.values[name]

        if hp.sampling == "log":
            axes.set_xscale("log")
        elif hp.kind == "int":
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.margins(x=0.08)  # room for the best trial's label at either end
        first = spaces[0].get(name)
        for paths, space in zip(runs[1:], spaces[1:], strict=True):  # shade the range a later stage narrowed to
            own = space.get(name)
            if own is not None and own.is_range and (first is None or (own.min, own.max) != (first.min, first.max)):
                axes.axvspan(own.min, own.max, color=colour[paths.run], alpha=0.1, linewidth=0,
                             label=f"{paths.run} range")
    for paths in runs:
        stage = [p for p in mine if p.run == paths.run]
        axes.scatter([place(p) for p in stage], [p.score for p in stage], s=18, alpha=0.8, color=colour[paths.run])
    if best is not None and name in best.values:
        axes.scatter([place(best)], [best.score], marker="*", s=220, color="gold", edgecolor="black", zorder=4)
        axes.annotate(f"best = {_short(best.values[name])}", (place(best), best.score), xytext=(8, 8),
                      textcoords="offset points", fontsize=8, bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9})
    title = name + (" (log)" if hp.sampling == "log" and not categorical else "")
    if hp.conditions:
        title += "  [if " + ", ".join(f"{parent} in {list(values)}" for parent, values in hp.conditions) + "]"
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)


def _save(figure: Any, out: Path, metadata: dict[str, str]) -> Path:
    """Write the PNG next to its final name, then rename: a reader never sees half a file."""
    with atomic_output(out) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata=metadata)
    return out
