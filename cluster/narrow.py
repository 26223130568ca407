"""`tunectl narrow`: shrink a finished run's search space around its best trials.

The article's staged search: a wide random search first, then "tighten my
search space, and then launch a more efficient Hyperband or
BayesianOptimization search". This module reads the run's trials straight from
KerasTuner's `trial_*/trial.json` (no TensorFlow: `tunectl` must stay fast),
narrows every hyperparameter to what the top trials used, and writes the next
stage's `search.yaml` with `warm_start` pointing at the old run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cluster.errors import LauncherError, user_errors
from tuner_job.config import (
    TUNERS,
    ChoiceOverride,
    FixedOverride,
    RangeOverride,
    SearchConfig,
    dump_config,
    load_config,
    parse_config,
)
from tuner_job.layout import RunPaths, atomic_write_text, read_json

__all__ = [
    "Hyperparameter",
    "NarrowRow",
    "NarrowResult",
    "read_trials",
    "space_from_trials",
    "apply_overrides",
    "select_top",
    "narrow_space",
    "objective_direction",
    "narrow_run",
    "narrow_command",
]

_EPS = 1e-9  # grid arithmetic tolerance: KerasTuner writes 3 * 0.1 as 0.30000000000000004


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter's searchable set, as KerasTuner defined it or as an override narrowed it.

    `kind` is "int", "float", "choice", "boolean" or "fixed". `conditions` are
    `(parent, values)` pairs that must all hold for it to be active.
    """

    name: str
    kind: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"
    values: tuple[Any, ...] = ()
    conditions: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def is_range(self) -> bool:
        return self.kind in ("int", "float")

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"= {_show(self.values[0])}"
        if self.kind in ("choice", "boolean"):
            return "{" + ", ".join(_show(v) for v in self.values) + "}"
        text = f"{_show(self.min)} .. {_show(self.max)}"
        if self.step is not None:
            text += f" step {_show(self.step)}"
        if self.sampling != "linear":
            text += f" {self.sampling}"
        return text

    def is_active(self, values: dict[str, Any]) -> bool:
        """KerasTuner's `Parent` condition: the parent's value is one of the listed ones."""
        return all(parent in values and _member(values[parent], allowed) for parent, allowed in self.conditions)

    def contains(self, value: Any) -> bool:
        if self.is_range:
            tolerance = _EPS * max(1.0, abs(self.min), abs(self.max))  # type: ignore[arg-type]
            return self.min - tolerance <= value <= self.max + tolerance  # type: ignore[operator]
        if isinstance(value, float):  # a grid value may have been tidied: 0.30000000000000004 -> 0.3
            return any(isinstance(v, float) and math.isclose(v, value, rel_tol=_EPS) for v in self.values)
        return _member(value, self.values)


@dataclass(frozen=True)
class NarrowRow:
    """One line of the before/after table."""

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


# --- reading KerasTuner's trial.json -------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _key(value: Any) -> tuple[bool, Any]:
    # True == 1 in Python; a Choice of [0, 1, True] must not merge them.
    return (isinstance(value, bool), value)


def _member(value: Any, allowed: tuple[Any, ...] | list[Any]) -> bool:
    return _key(value) in {_key(v) for v in allowed}


def _tidy(value: float) -> float:
    """Drop binary noise from grid arithmetic: 0.30000000000000004 -> 0.3."""
    return float(f"{value:.12g}")


def read_trials(paths: RunPaths) -> list[dict[str, Any]]:
    """Every readable `trial.json` of the run, in trial order (ids compared as numbers when they are)."""
    trials = [t for f in paths.tuner.glob("trial_*/trial.json") if (t := read_json(f)) and "trial_id" in t]
    return sorted(trials, key=lambda t: _trial_order(str(t["trial_id"])))


def _trial_order(trial_id: str) -> tuple[int, int, str]:
    return (0, int(trial_id), trial_id) if trial_id.isdigit() else (1, 0, trial_id)


def _parse_definition(entry: dict[str, Any]) -> Hyperparameter | None:
    kind = str(entry.get("class_name", "")).lower()
    config = entry.get("config") or {}
    name = config.get("name")
    if not name or str(name).startswith("tuner/"):
        return None
    conditions = tuple(
        (c["config"]["name"], tuple(c["config"].get("values") or ()))
        for c in config.get("conditions") or ()
        if c.get("class_name") == "Parent" and "name" in c.get("config", {})
    )
    if kind in ("int", "float"):
        step = config.get("step")
        return Hyperparameter(
            name=name,
            kind=kind,
            min=config["min_value"],
            max=config["max_value"],
            step=step,
            sampling=config.get("sampling") or "linear",
            conditions=conditions,
        )
    if kind == "choice":
        return Hyperparameter(name=name, kind="choice", values=tuple(config.get("values") or ()), conditions=conditions)
    if kind == "boolean":
        return Hyperparameter(name=name, kind="boolean", values=(True, False), conditions=conditions)
    if kind == "fixed":
        return Hyperparameter(name=name, kind="fixed", values=(config.get("value"),), conditions=conditions)
    return None  # a hyperparameter type this KerasTuner version does not have


def space_from_trials(trials: list[dict[str, Any]]) -> dict[str, Hyperparameter]:
    """The union of the trials' hyperparameter definitions (the oracle's space grows as
    conditional branches get built; a later trial's definition wins)."""
    space: dict[str, Hyperparameter] = {}
    for trial in trials:
        for entry in (trial.get("hyperparameters") or {}).get("space") or ():
            definition = _parse_definition(entry)
            if definition is not None:
                space[definition.name] = definition
    return space


def apply_overrides(space: dict[str, Hyperparameter], overrides: dict[str, Any]) -> dict[str, Hyperparameter]:
    """The space the old run actually searched: its definitions cut down by its config's `space`."""
    out = dict(space)
    for name, override in overrides.items():
        base = space.get(name)
        conditions = base.conditions if base else ()
        if isinstance(override, FixedOverride):
            out[name] = Hyperparameter(name, "fixed", values=(override.value,), conditions=conditions)
        elif isinstance(override, ChoiceOverride):
            kind = "boolean" if base is not None and base.kind == "boolean" else "choice"
            allowed = override.values
            if base is not None and base.kind in ("choice", "boolean"):
                allowed = [v for v in base.values if _member(v, override.values)] or allowed
            out[name] = Hyperparameter(name, kind, values=tuple(allowed), conditions=conditions)
        elif isinstance(override, RangeOverride):
            if base is not None and base.is_range:
                low, high = max(base.min, override.min), min(base.max, override.max)  # type: ignore[type-var]
                kind = base.kind
            else:
                low, high, kind = override.min, override.max, "float"
            if kind == "int":
                low, high = int(math.ceil(low)), int(math.floor(high))
            out[name] = Hyperparameter(
                name,
                kind,
                min=low,
                max=high,
                step=override.step if override.step is not None else (base.step if base else None),
                sampling=override.sampling or (base.sampling if base else "linear"),
                conditions=conditions,
            )
    return out


# --- narrowing -----------------------------------------------------------------------------------


def _score(trial: dict[str, Any]) -> float | None:
    score = trial.get("score")
    if trial.get("status") != "COMPLETED" or isinstance(score, bool) or not isinstance(score, (int, float)):
        return None
    return None if math.isnan(score) or math.isinf(score) else float(score)


def select_top(
    trials: list[dict[str, Any]], *, top_k: int | None = None, quantile: float | None = None, direction: str = "min"
) -> tuple[list[dict[str, Any]], int]:
    """The best completed trials (and how many completed): `top_k` of them (default 5) or the best `quantile`."""
    if top_k is not None and quantile is not None:
        raise LauncherError("--top and --quantile cannot be used together; give one of them.")
    if top_k is not None and top_k < 1:
        raise LauncherError(f"--top must be at least 1, but got {top_k}.")
    if quantile is not None and not 0.0 < quantile <= 1.0:
        raise LauncherError(f"--quantile must be in (0, 1], but got {quantile}.")
    if direction not in ("min", "max"):
        raise LauncherError(f"direction must be 'min' or 'max', but got {direction!r}.")
    scored = [t for t in trials if _score(t) is not None]
    if not scored:
        raise LauncherError(f"no COMPLETED trial with a score among {len(trials)} trial(s): nothing to narrow around.")
    sign = 1.0 if direction == "min" else -1.0
    ranked = sorted(scored, key=lambda t: sign * _score(t))  # type: ignore[operator]  # stable: ties keep trial order
    if quantile is not None:
        count = max(1, math.ceil(quantile * len(ranked) - _EPS))
    else:
        count = min(top_k if top_k is not None else 5, len(ranked))
    return ranked[:count], len(ranked)


def _snap(old: Hyperparameter, low: float, high: float) -> tuple[float, float]:
    """[low, high] widened outward to the old range's grid, and never outside the old range."""
    lo_bound, hi_bound, step = old.min, old.max, old.step
    if step is not None and step > 0 and old.sampling == "linear":
        new_low = lo_bound + math.floor((low - lo_bound) / step + _EPS) * step  # type: ignore[operator]
        new_high = lo_bound + math.ceil((high - lo_bound) / step - _EPS) * step  # type: ignore[operator]
    elif step is not None and step > 1 and old.sampling == "log":
        # KerasTuner multiplies by `step` between values when sampling="log": min * step**k.
        new_low = lo_bound * step ** math.floor(math.log(low / lo_bound, step) + _EPS)  # type: ignore[operator]
        new_high = lo_bound * step ** math.ceil(math.log(high / lo_bound, step) - _EPS)  # type: ignore[operator]
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


def _narrow_one(old: Hyperparameter, seen: list[Any]) -> tuple[Hyperparameter, str]:
    if old.is_range:
        numbers = [v for v in seen if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            return old, "no numeric values among the top trials: unchanged"
        if len({_key(v) for v in numbers}) == 1:
            value = numbers[0] if old.kind == "int" or old.step is None else _tidy(float(numbers[0]))
            return Hyperparameter(old.name, "fixed", values=(value,), conditions=old.conditions), "constant: fixed"
        low, high = _snap(old, min(numbers), max(numbers))
        if old.kind == "int":
            low, high = int(round(low)), int(round(high))
        if low == high:
            return Hyperparameter(old.name, "fixed", values=(low,), conditions=old.conditions), "one value left: fixed"
        return replace(old, min=low, max=high), ""
    kept = tuple(v for v in old.values if _member(v, seen))
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
    return RangeOverride(
        min=hp.min,  # type: ignore[arg-type]
        max=hp.max,  # type: ignore[arg-type]
        step=None if same_step else hp.step,
        sampling=None if same_sampling else hp.sampling,  # type: ignore[arg-type]
    )


def narrow_space(
    trials: list[dict[str, Any]],
    space: dict[str, Hyperparameter],
    *,
    top_k: int | None = None,
    quantile: float | None = None,
    direction: str = "min",
    definitions: dict[str, Hyperparameter] | None = None,
    old_overrides: dict[str, Any] | None = None,
) -> NarrowResult:
    """Narrow `space` (what the old run searched) to what its best trials used.

    `trials` are parsed `trial.json` documents. `definitions` are the
    hypermodel's own definitions (default: `space`); a hyperparameter gets an
    override when its narrowed set differs from its definition or when
    `old_overrides` already had one, so nothing the old run pinned is lost.
    """
    definitions = space if definitions is None else definitions
    old_overrides = old_overrides or {}
    top, completed = select_top(trials, top_k=top_k, quantile=quantile, direction=direction)
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
    return NarrowResult(
        overrides=overrides,
        narrowed=narrowed,
        rows=rows,
        top_ids=[str(t["trial_id"]) for t in top],
        completed=completed,
        direction=direction,
    )


def objective_direction(config: SearchConfig, trials: list[dict[str, Any]]) -> str:
    """The config's `objective_direction`, else what KerasTuner recorded, else from the name."""
    if config.objective_direction:
        return config.objective_direction
    for trial in trials:
        metric = ((trial.get("metrics") or {}).get("metrics") or {}).get(config.objective) or {}
        if metric.get("direction") in ("min", "max"):
            return metric["direction"]
    name = config.objective.lower()
    return "max" if any(word in name for word in ("acc", "auc", "precision", "recall", "f1")) else "min"


# --- the command ---------------------------------------------------------------------------------


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
    """Narrow run `run`'s space and write the next stage's config to `out`."""
    paths = RunPaths(Path(shared_dir), run)
    if not paths.config.is_file():
        raise LauncherError(f"run {run!r} not found: no {paths.config}")
    old = load_config(paths.config)
    trials = read_trials(paths)
    if not trials:
        raise LauncherError(f"run {run!r} has no trials yet: no {paths.tuner}/trial_*/trial.json")
    definitions = space_from_trials(trials)
    result = narrow_space(
        trials,
        apply_overrides(definitions, dict(old.space)),
        top_k=top_k,
        quantile=quantile,
        direction=objective_direction(old, trials),
        definitions=definitions,
        old_overrides=dict(old.space),
    )
    data = old.model_dump(mode="json", exclude_defaults=True)
    data.update(
        run=new_run or f"{run}-narrow",
        space={name: o.model_dump(mode="json", exclude_none=True) for name, o in result.overrides.items()},
        warm_start=run,
        tuner=tuner,
    )
    if max_trials is not None:
        data["max_trials"] = max_trials
    if tuner == "bayesian" and "bayesian_initial_points" not in data:
        # The warm-started trials are the observations: no need for KerasTuner's
        # default of 3 random points per hyperparameter before the GP leads.
        data["bayesian_initial_points"] = 2
    config = parse_config(data, str(out))
    atomic_write_text(Path(out), dump_config(config))
    return result, config


def _print_table(result: NarrowResult, run: str, config: SearchConfig, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run}: top {len(result.top_ids)} of {result.completed} completed trials ({result.direction})")
    table.add_column("hyperparameter", no_wrap=True)
    table.add_column("before", no_wrap=True)
    table.add_column("after", no_wrap=True)
    table.add_column("trials", justify="right", no_wrap=True)
    table.add_column("note", ratio=1)
    for row in result.rows:
        after = row.after if row.after != row.before else "[dim]unchanged[/dim]"
        table.add_row(row.name, row.before, after, str(row.backed), row.note)
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(f"wrote {out}: run {config.run!r}, tuner {config.tuner}, warm start from {run!r}")


def narrow_command(
    run: Annotated[str, typer.Option("--run", help="The finished (or running) run to narrow around.")],
    shared_dir: Annotated[
        Path, typer.Option("--shared-dir", envvar="TUNER_SHARED_DIR", help="The shared volume (holds runs/).")
    ] = Path("shared"),
    top: Annotated[Optional[int], typer.Option("--top", help="Narrow around the K best trials (default 5).")] = None,
    quantile: Annotated[
        Optional[float], typer.Option("--quantile", help="Narrow around the best fraction of trials, e.g. 0.2.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the new search.yaml.")] = Path("search-narrowed.yaml"),
    new_run: Annotated[Optional[str], typer.Option("--new-run", help="Name of the next run (default <run>-narrow).")] = None,
    tuner: Annotated[str, typer.Option("--tuner", help=f"Tuner of the next stage: {' | '.join(TUNERS)}.")] = "bayesian",
    max_trials: Annotated[Optional[int], typer.Option("--max-trials", help="Trials of the next stage (default: as before).")] = None,
) -> None:
    """Shrink a run's search space around its best trials and write the next stage's search.yaml."""
    with user_errors():
        result, config = narrow_run(
            shared_dir, run, top_k=top, quantile=quantile, out=out, new_run=new_run, tuner=tuner, max_trials=max_trials
        )
        _print_table(result, run, config, out)
