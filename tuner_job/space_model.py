"""A search space as plain data: what each hyperparameter can take, and when it is active.

KerasTuner writes a trial's space into `trial.json` (`hyperparameters.space`,
one `{"class_name", "config"}` entry per hyperparameter); `_kt.space_of` turns
a live `HyperParameters` into the same model. Pure Python: the launcher reads
runs with it, and the one rule for "is this value inside the space" lives
here (`Hyperparameter.contains`), for the warm start, `space` overrides and
narrowing alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tuner_job.config import ChoiceOverride, FixedOverride, RangeOverride

__all__ = ["Hyperparameter", "same_value", "point_key", "parse_space", "space_from_trials", "apply_overrides", "values_inside", "show"]

EPS = 1e-9  # grid arithmetic tolerance: KerasTuner writes 3 * 0.1 as 0.30000000000000004


def show(value: Any) -> str:
    """A value as a table shows it (6 significant digits for a float)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def same_value(a: Any, b: Any) -> bool:
    """Whether two hyperparameter values are the same point.

    A bool equals only a bool (True == 1 in Python, but a Choice of [0, 1, True]
    must not merge them); numbers compare within a relative 1e-9 (grid noise).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= EPS * max(1.0, abs(float(a)), abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b


def point_key(values: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, Any]], ...]:
    """A trial's point as a hashable key: two trials are the same point when their keys are equal.

    `same_value`'s rule in a form a set can hold: the hyperparameters' values
    without Hyperband's `tuner/...` bookkeeping, numbers to 10 significant
    digits (grid noise: 0.30000000000000004 is 0.3, and 4 is 4.0), a bool
    never equal to a number.
    """
    items = []
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if isinstance(value, bool):
            key: tuple[str, Any] = ("bool", value)
        elif isinstance(value, (int, float)):
            key = ("number", float(f"{float(value):.10g}"))
        else:
            key = (type(value).__name__, value)
        items.append((name, key))
    return tuple(sorted(items))


def _member(value: Any, allowed: Iterable[Any]) -> bool:
    return any(same_value(value, v) for v in allowed)


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter's searchable set.

    `kind` is "int", "float", "choice", "boolean" or "fixed". A range has
    `min`, `max`, `step` (None: continuous) and `sampling` ("linear", "log",
    "reverse_log"); the others list their `values`. `conditions` are
    `(parent, values)` pairs (KerasTuner's `Parent`) that must all hold for it to be active.
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
        """`4 .. 16 step 4`, `{3, 5}` or `= 2`."""
        if self.kind == "fixed":
            return f"= {show(self.values[0])}"
        if self.kind in ("choice", "boolean"):
            return "{" + ", ".join(show(v) for v in self.values) + "}"
        text = f"{show(self.min)} .. {show(self.max)}"
        if self.step is not None:
            text += f" step {show(self.step)}"
        if self.sampling != "linear":
            text += f" {self.sampling}"
        return text

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """Whether every condition holds: each parent has a value and it is one of the listed ones."""
        return all(parent in values and _member(values[parent], allowed) for parent, allowed in self.conditions)

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this hyperparameter can take.

        A range: a number (not a bool) within [min, max] up to grid noise, and
        a whole number for an int; the grid step is not enforced (a trial from a
        run with another step is still inside). Otherwise: one of `values`.
        """
        if self.is_range:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            if self.kind == "int" and float(value) != int(value):
                return False
            low, high = float(self.min), float(self.max)  # type: ignore[arg-type]
            tolerance = EPS * max(1.0, abs(low), abs(high))
            return low - tolerance <= float(value) <= high + tolerance
        return _member(value, self.values)

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> Hyperparameter | None:
        """One `{"class_name": "Int", "config": {...}}` entry of KerasTuner's space.

        Returns None for `tuner/...` bookkeeping entries and for a class this
        model does not know.
        """
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
            return cls(name, kind, min=config["min_value"], max=config["max_value"], step=config.get("step"),
                       sampling=config.get("sampling") or "linear", conditions=conditions)
        if kind == "choice":
            return cls(name, "choice", values=tuple(config.get("values") or ()), conditions=conditions)
        if kind == "boolean":
            return cls(name, "boolean", values=(True, False), conditions=conditions)
        if kind == "fixed":
            return cls(name, "fixed", values=(config.get("value"),), conditions=conditions)
        return None


def parse_space(entries: Iterable[Mapping[str, Any]]) -> dict[str, Hyperparameter]:
    """KerasTuner's space entries (`HyperParameters.get_config()["space"]`) as the model, by name."""
    space: dict[str, Hyperparameter] = {}
    for entry in entries:
        hp = Hyperparameter.from_config(entry)
        if hp is not None:
            space[hp.name] = hp
    return space


def space_from_trials(trials: Iterable[Mapping[str, Any]]) -> dict[str, Hyperparameter]:
    """The union of the trials' spaces (`trial.json` documents).

    The oracle's space grows as conditional branches get built; a later
    trial's definition of a name wins.
    """
    space: dict[str, Hyperparameter] = {}
    for trial in trials:
        space.update(parse_space((trial.get("hyperparameters") or {}).get("space") or ()))
    return space


def apply_overrides(space: Mapping[str, Hyperparameter], overrides: Mapping[str, Any]) -> dict[str, Hyperparameter]:
    """The space a run searched: the hypermodel's definitions cut down by its config's `space` overrides."""
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
                name, kind, min=low, max=high,
                step=override.step if override.step is not None else (base.step if base else None),
                sampling=override.sampling or (base.sampling if base else "linear"),
                conditions=conditions,
            )  # fmt: skip
    return out


def values_inside(space: Mapping[str, Hyperparameter], values: Mapping[str, Any]) -> dict[str, Any] | None:
    """`values` restricted to `space`, or None when one of them falls outside it.

    This is the warm start's rule: a hyperparameter counts only where its
    conditions hold (in `values`), and there it must have a value inside its
    set; `tuner/...` entries are not part of a space.
    """
    kept: dict[str, Any] = {}
    for name, hp in space.items():
        if not hp.is_active(values):
            continue
        if name not in values or not hp.contains(values[name]):
            return None
        kept[name] = values[name]
    return kept
