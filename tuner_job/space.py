"""`space` overrides: narrow any hypermodel's search space from `search.yaml`.

The overrides are declared before the hypermodel runs (KerasTuner's
`hyperparameters=` with `tune_new_entries=True`): the named hyperparameters
take the narrowed definition, the rest are tuned as the hypermodel declares
them. An override that names no hyperparameter, or widens a range, is an error.
"""

from __future__ import annotations

from typing import Any

from tuner_job import _kt
from tuner_job.config import ChoiceOverride, FixedOverride, RangeOverride
from tuner_job.errors import ConfigError

__all__ = ["apply_space"]

_EPS = 1e-9


def _narrow_one(name: str, base: Any, override: Any) -> Any:
    config = base.get_config()
    kind = type(base).__name__
    where = f"space.{name}"
    model = _kt.describe_hp(base)  # its values as plain data: `contains` is the one "inside the space" rule
    assert model is not None
    if isinstance(override, FixedOverride):
        value = override.value
        if not model.contains(value):
            if kind == "Boolean":
                raise ConfigError(f"{where}: value must be true or false, but got {value!r}")
            raise ConfigError(f"{where}: value {value!r} is outside the hypermodel's {_describe(base)}")
        if kind in ("Int", "Float"):
            value = int(value) if kind == "Int" else float(value)
        return _kt.hp_class("Fixed")(name, value, conditions=base.conditions)
    if isinstance(override, ChoiceOverride):
        if kind not in ("Int", "Float", "Choice", "Boolean"):
            raise ConfigError(f"{where}: a list of values does not apply to a {kind} hyperparameter")
        bad = [v for v in override.values if not model.contains(v)]
        if bad:
            raise ConfigError(f"{where}: values {bad} widen the hypermodel's space ({_describe(base)})")
        values = [int(v) if kind == "Int" else v for v in override.values]
        if len(values) == 1:
            return _kt.hp_class("Fixed")(name, values[0], conditions=base.conditions)
        return _kt.hp_class("Choice")(name, values, conditions=base.conditions)
    assert isinstance(override, RangeOverride)
    if kind not in ("Int", "Float"):
        raise ConfigError(f"{where}: min/max apply to Int and Float hyperparameters, but {name} is a {kind}")
    if override.min < config["min_value"] - _EPS or override.max > config["max_value"] + _EPS:
        raise ConfigError(
            f"{where}: [{override.min:g}, {override.max:g}] widens the hypermodel's range [{config['min_value']}, {config['max_value']}]"
        )
    new = dict(config)
    new["min_value"], new["max_value"] = override.min, override.max
    if override.step is not None:
        new["step"] = override.step
    if override.sampling is not None:
        new["sampling"] = override.sampling
    if kind == "Int":
        new["min_value"], new["max_value"] = int(round(new["min_value"])), int(round(new["max_value"]))
        new["step"] = None if new.get("step") is None else max(1, int(round(new["step"])))
    new["default"] = None
    return type(base).from_config(new)


def _describe(base: Any) -> str:
    config = base.get_config()
    if "values" in config:
        return f"choices {config['values']}"
    if "min_value" in config:
        return f"range [{config['min_value']}, {config['max_value']}]"
    return type(base).__name__


def _with_parents(names: set[str], by_name: dict[str, Any]) -> set[str]:
    """`names` and every hyperparameter their conditions name, up the chain (`arch` -> `depth` -> `units_2`)."""
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in needed or name not in by_name:
            continue
        needed.add(name)
        todo += [parent for parent, _ in _kt.describe_hp(by_name[name]).conditions]  # type: ignore[union-attr]
    return needed


def apply_space(discovered: Any, overrides: dict[str, Any]) -> Any | None:
    """HyperParameters declaring the narrowed definitions, or None when there are none.

    A conditional hyperparameter keeps its conditions, and its parents are
    declared before it, as the hypermodel declares them (narrowed where they
    have an override themselves): KerasTuner gives a hyperparameter a value
    only where the parents its conditions name exist, so a child declared
    alone would have none when its branch is built (a `KeyError` in the chief).
    """
    if not overrides:
        return None
    by_name = {hp.name: hp for hp in discovered.space}
    for name in overrides:
        if name not in by_name:
            known = ", ".join(sorted(n for n in by_name if not n.startswith("tuner/")))
            raise ConfigError(f"space.{name}: the hypermodel has no hyperparameter named {name!r} (it has: {known})")
    needed = _with_parents(set(overrides), by_name)
    hps = _kt.HyperParameters()
    for hp in discovered.space:  # the hypermodel's order: parents first
        if hp.name in overrides:
            hps.merge([_narrow_one(hp.name, hp, overrides[hp.name])])
        elif hp.name in needed:
            hps.merge([hp])
    return hps
