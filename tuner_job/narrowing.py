"""Narrow a run's search space around its best trials: the article's staged search.

"Tighten my search space, and then launch a more efficient Hyperband or
BayesianOptimization search": every hyperparameter is narrowed to what the
top trials used (a range to their span, snapped outward to the old grid; a
choice to the values they took; one value left: fixed), and the next stage's
config gets those as `space` overrides, with `warm_start` pointing at the old
run. `tunectl narrow` and a `stages:` search both call `next_stage_config`.
Pure Python; errors are `NarrowingError` (exit 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuner_job.config import ChoiceOverride, FixedOverride, RangeOverride, SearchConfig, load_config, parse_config
from tuner_job.errors import NarrowingError
from tuner_job.layout import RunPaths
from tuner_job.objective import Objective
from tuner_job.space_model import EPS, Hyperparameter, apply_overrides, point_key, same_value, space_from_trials
from tuner_job.trials import read_objective, read_trials, trial_score

__all__ = ["DEFAULT_TOP", "NarrowRow", "NarrowResult", "check_selection", "select_top", "narrow_space", "next_stage_config"]

DEFAULT_TOP = 5


@dataclass(frozen=True)
class NarrowRow:
    """One line of the before/after table: `backed` is how many top trials used the hyperparameter."""

    name: str
    before: str
    after: str
    backed: int
    note: str = ""


@dataclass
class NarrowResult:
    """The narrowed space: overrides for the next stage's `space`, and the table behind them."""

    overrides: dict[str, RangeOverride | ChoiceOverride | FixedOverride]
    narrowed: dict[str, Hyperparameter]
    rows: list[NarrowRow]
    top_ids: list[str]
    completed: int
    direction: str
    notes: list[str] = field(default_factory=list)


def _tidy(value: float) -> float:
    """Drop binary noise from grid arithmetic: 0.30000000000000004 -> 0.3."""
    return float(f"{value:.12g}")


def check_selection(top_k: int | None, quantile: float | None, names: tuple[str, str] = ("top_k", "quantile")) -> None:
    """Raise `NarrowingError` unless at most one of `top_k` (>= 1) and `quantile` (in (0, 1]) is given.

    `names` are what the caller calls them in its messages (`tunectl narrow`: its flags).
    """
    top_name, quantile_name = names
    if top_k is not None and quantile is not None:
        raise NarrowingError(f"{top_name} and {quantile_name} cannot be used together; give one of them")
    if top_k is not None and top_k < 1:
        raise NarrowingError(f"{top_name} must be at least 1, but got {top_k}")
    if quantile is not None and not 0.0 < quantile <= 1.0:
        raise NarrowingError(f"{quantile_name} must be in (0, 1], but got {quantile}")


def select_top(
    trials: list[dict[str, Any]], objective: Objective, *, top_k: int | None = None, quantile: float | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The best completed trials, and how many completed.

    Args:
        trials: `trial.json` documents, in trial order.
        objective: what "best" means (`Objective.sort_key`); ties keep trial order.
        top_k: how many (default `DEFAULT_TOP`), at most the completed ones. A configuration counts
            once, at its best score (a promotion repeats its parent's).
        quantile: or the best fraction in (0, 1], at least one trial.

    Raises:
        NarrowingError: both or a bad `top_k`/`quantile`; no completed trial with a finite score.
    """
    check_selection(top_k, quantile)
    scored = _scored(trials)
    ranked = _best_per_point(sorted(scored, key=lambda t: objective.sort_key(trial_score(t))))  # type: ignore[arg-type]
    if quantile is not None:
        count = max(1, math.ceil(quantile * len(ranked) - EPS))
    else:
        count = min(top_k if top_k is not None else DEFAULT_TOP, len(ranked))
    return ranked[:count], len(scored)


def _best_per_point(ranked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each configuration once, at its best: a Hyperband or asha promotion trains its parent's point again."""
    seen: set[Any] = set()
    kept = []
    for trial in ranked:
        key = point_key((trial.get("hyperparameters") or {}).get("values") or {})
        if key not in seen:
            seen.add(key)
            kept.append(trial)
    return kept


def _scored(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials with a score to rank; raises `NarrowingError` when there is none."""
    scored = [t for t in trials if trial_score(t) is not None]
    if not scored:
        raise NarrowingError(f"no COMPLETED trial with a score among {len(trials)} trial(s): nothing to narrow around")
    return scored


def _snap(old: Hyperparameter, low: float, high: float) -> tuple[float, float]:
    """[low, high] widened outward to the old range's grid, and never outside the old range."""
    lo_bound, hi_bound, step = old.min, old.max, old.step
    if step is not None and step > 0 and old.sampling == "linear":
        new_low = lo_bound + math.floor((low - lo_bound) / step + EPS) * step  # type: ignore[operator]
        new_high = lo_bound + math.ceil((high - lo_bound) / step - EPS) * step  # type: ignore[operator]
    elif step is not None and step > 1 and old.sampling == "log":
        # KerasTuner multiplies by `step` between values when sampling="log": min * step**k.
        new_low = lo_bound * step ** math.floor(math.log(low / lo_bound, step) + EPS)  # type: ignore[operator]
        new_high = lo_bound * step ** math.ceil(math.log(high / lo_bound, step) - EPS)  # type: ignore[operator]
    elif step is not None and step > 1 and old.sampling == "reverse_log":
        # Values are max + min - min * step**k: snap the mirror image on the log grid.
        mirror = lo_bound + hi_bound  # type: ignore[operator]
        far, near = _snap(replace(old, sampling="log"), mirror - high, mirror - low)
        new_low, new_high = mirror - near, mirror - far
    else:
        # Continuous (or log without step): exactly the observed span, nothing to snap to.
        return max(low, lo_bound), min(high, hi_bound)  # type: ignore[type-var]
    new_low, new_high = _tidy(new_low), _tidy(new_high)
    return max(new_low, lo_bound), min(new_high, hi_bound)  # type: ignore[type-var]


def _distinct(values: list[Any]) -> list[Any]:
    kept: list[Any] = []
    for value in values:
        if not any(same_value(value, k) for k in kept):
            kept.append(value)
    return kept


def _narrow_one(old: Hyperparameter, seen: list[Any]) -> tuple[Hyperparameter, str]:
    if old.is_range:
        numbers = [v for v in seen if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            return old, "no numeric values among the top trials: unchanged"
        if len(_distinct(numbers)) == 1:
            value = numbers[0] if old.kind == "int" or old.step is None else _tidy(float(numbers[0]))
            return Hyperparameter(old.name, "fixed", values=(value,), conditions=old.conditions), "constant: fixed"
        low, high = _snap(old, min(numbers), max(numbers))
        if old.kind == "int":
            low, high = int(round(low)), int(round(high))
        if low == high:
            return Hyperparameter(old.name, "fixed", values=(low,), conditions=old.conditions), "one value left: fixed"
        return replace(old, min=low, max=high), ""
    kept = tuple(v for v in old.values if any(same_value(v, s) for s in seen))
    if not kept:
        return old, "top trials used values outside the old space: unchanged"
    if len(kept) == 1:
        return Hyperparameter(old.name, "fixed", values=kept, conditions=old.conditions), "constant: fixed"
    return replace(old, values=kept), ""


def _as_override(hp: Hyperparameter, definition: Hyperparameter | None) -> RangeOverride | ChoiceOverride | FixedOverride:
    if hp.kind == "fixed":
        return FixedOverride(value=hp.values[0])
    if hp.kind in ("choice", "boolean"):
        return ChoiceOverride(values=list(hp.values))
    same_step = definition is not None and definition.is_range and definition.step == hp.step
    same_sampling = definition is not None and definition.is_range and definition.sampling == hp.sampling
    whole = int if hp.kind == "int" else float  # an Int's bounds are written `min: 3`, not `min: 3.0`
    return RangeOverride(
        min=whole(hp.min),  # type: ignore[arg-type]
        max=whole(hp.max),  # type: ignore[arg-type]
        step=None if same_step or hp.step is None else whole(hp.step),
        sampling=None if same_sampling else hp.sampling,  # type: ignore[arg-type]
    )


def narrow_space(
    trials: list[dict[str, Any]],
    space: dict[str, Hyperparameter],
    objective: Objective,
    *,
    top_k: int | None = None,
    quantile: float | None = None,
    definitions: dict[str, Hyperparameter] | None = None,
    old_overrides: dict[str, Any] | None = None,
) -> NarrowResult:
    """Narrow `space` (what the old run searched) to what its best trials used.

    Args:
        trials: parsed `trial.json` documents.
        space: the old run's space (`apply_overrides` of its definitions and overrides).
        objective: what "best" means.
        top_k, quantile: which trials count as best (`select_top`).
        definitions: the hypermodel's own definitions (default: `space`); a
            hyperparameter gets an override when its narrowed set differs from
            its definition or when `old_overrides` already had one, so nothing
            the old run pinned is lost.
        old_overrides: the old run's `space` overrides.

    A conditional hyperparameter is narrowed over the top trials where it was
    active, and keeps its conditions. The result is never wider than `space`
    and contains every value the top trials used.

    Raises:
        NarrowingError: see `select_top`.
    """
    definitions = space if definitions is None else definitions
    old_overrides = old_overrides or {}
    top, completed = select_top(trials, objective, top_k=top_k, quantile=quantile)
    top_values = [(t.get("hyperparameters") or {}).get("values") or {} for t in top]
    narrowed: dict[str, Hyperparameter] = {}
    rows: list[NarrowRow] = []
    for name, old in space.items():
        seen = [values[name] for values in top_values if name in values and old.is_active(values)]
        if old.kind == "fixed":
            new, note = old, "fixed before"
        elif not seen:
            new = old
            note = "inactive in all top trials: unchanged" if old.conditions else "absent from the top trials: unchanged"
        else:
            new, note = _narrow_one(old, seen)
            if old.conditions:
                note = "; ".join(filter(None, [f"conditional: active in {len(seen)} of {len(top)}", note]))
        narrowed[name] = new
        rows.append(NarrowRow(name, old.describe(), new.describe(), len(seen), note))
    if any(hp.kind != "fixed" for hp in space.values()) and all(hp.kind == "fixed" for hp in narrowed.values()):
        raise NarrowingError(
            f"the top {len(top)} of {completed} completed trial(s) are one configuration: narrowed around it, the space has "
            "nothing left to search; use more top trials (a larger top_k or quantile)"
        )
    overrides: dict[str, Any] = {}
    for name, hp in narrowed.items():
        definition = definitions.get(name)
        if name in old_overrides or definition is None or hp != definition:
            if hp.kind == "fixed" and definition is not None and definition.kind == "fixed" and name not in old_overrides:
                continue  # the hypermodel fixes it already
            overrides[name] = _as_override(hp, definition)
    for name, override in old_overrides.items():
        if name not in narrowed:  # pinned by the old run but never seen in a trial: keep it
            overrides[name] = override
            rows.append(NarrowRow(name, "(override)", "(kept)", 0, "not in any trial: kept as it was"))
    return NarrowResult(overrides, narrowed, rows, [str(t["trial_id"]) for t in top], completed, objective.direction)


def next_stage_config(
    shared_dir: Path,
    run: str,
    *,
    new_run: str,
    tuner: str = "bayesian",
    max_trials: int | None = None,
    top_k: int | None = None,
    quantile: float | None = None,
) -> tuple[NarrowResult, SearchConfig]:
    """The next stage of run `run`: its space narrowed around `run`'s best trials, warm-started from it.

    Args:
        shared_dir: the shared volume (holds `runs/<run>`).
        run: the finished (or running) run to narrow around.
        new_run: the next stage's run name.
        tuner: the next stage's tuner.
        max_trials: the next stage's budget (default: the old one).
        top_k, quantile: which trials count as best (`select_top`).

    Returns:
        The narrowing (for a table) and the validated config; the caller writes it.

    Raises:
        NarrowingError: the run or its trials are missing, or nothing completed.
        ConfigError: the old run's config, or the new one, is invalid.
    """
    paths = RunPaths(Path(shared_dir), run)
    if not paths.config.is_file():
        raise NarrowingError(f"run {run!r} not found: no {paths.config}")
    old = load_config(paths.config)
    found = read_trials(paths).trials
    if not found:
        raise NarrowingError(f"run {run!r} has no trials yet: no {paths.tuner}/trial_*/trial.json")
    trials = list(found.values())
    _scored(trials)  # nothing to rank: say so before the objective's direction is looked for
    definitions = space_from_trials(trials)
    result = narrow_space(
        trials,
        apply_overrides(definitions, dict(old.space)),
        read_objective(paths, found),
        top_k=top_k,
        quantile=quantile,
        definitions=definitions,
        old_overrides=dict(old.space),
    )
    data = old.model_dump(mode="json", exclude_defaults=True)
    data.update(
        run=new_run,
        space={name: o.model_dump(mode="json", exclude_none=True) for name, o in result.overrides.items()},
        warm_start=run,
        tuner=tuner,
    )
    data.pop("stages", None)
    if max_trials is not None:
        data["max_trials"] = max_trials
    if tuner == "bayesian" and "bayesian_initial_points" not in data:
        # The warm-started trials are the observations: no need for KerasTuner's
        # default of 3 random points per hyperparameter before the GP leads.
        data["bayesian_initial_points"] = 2
    return result, parse_config(data, f"the next stage of run {run!r}")
