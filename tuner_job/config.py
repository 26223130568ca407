"""The search config (`search.yaml`): one schema for local runs and the chart.

Unknown keys and wrong types are errors that name the key. The same model
validates `values.search` in the Helm chart (its JSON schema is generated from
`SearchConfig.model_json_schema()`), so both places agree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tuner_job.errors import ConfigError

__all__ = [
    "SearchConfig",
    "RangeOverride",
    "ChoiceOverride",
    "FixedOverride",
    "TUNERS",
    "Stage",
    "parse_stages",
    "stage_run",
    "load_config",
    "parse_config",
    "dump_config",
    "hypermodel_file",
    "resolve_hypermodel_path",
]

TUNERS = ("random", "hyperband", "bayesian", "grid", "asha")
_RUN_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RangeOverride(_Strict):
    """Narrow an `Int` or `Float` hyperparameter: `{min: 8, max: 12}` (step and sampling kept unless given)."""

    # int | float: a number keeps its YAML type (an Int's `min: 3` is written back as 3, not 3.0).
    min: int | float
    max: int | float
    step: int | float | None = None
    sampling: Literal["linear", "log", "reverse_log"] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> RangeOverride:
        if self.min > self.max:
            raise ValueError(f"min must be <= max, but got min={self.min} max={self.max}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, but got step={self.step}")
        return self


class ChoiceOverride(_Strict):
    """Keep only some values of a `Choice` (or the listed values of an `Int`)."""

    values: list[int | float | str | bool] = Field(min_length=1)


class FixedOverride(_Strict):
    """Fix a hyperparameter to one value."""

    value: int | float | str | bool


SpaceOverride = RangeOverride | ChoiceOverride | FixedOverride


@dataclass(frozen=True)
class Stage:
    """One stage of a staged search: a tuner and its trial budget."""

    tuner: str
    max_trials: int


def stage_run(run: str, index: int) -> str:
    """The run name of stage `index` (1-based) of a staged search."""
    return f"{run}-s{index}"


# KerasTuner's grid search walks its own linked order from its first trial:
# given seeded trials, it has no trial to walk from and proposes nothing.
_GRID_NO_WARM_START = "KerasTuner's grid search proposes nothing once seeded with earlier trials"


def parse_stages(text: str) -> list[Stage]:
    """`random:60,bayesian:40` -> two stages; at least two, each `tuner:trials`."""
    stages = []
    for part in (p.strip() for p in text.split(",")):
        tuner, sep, count = part.partition(":")
        tuner = tuner.strip()
        if not sep or tuner not in TUNERS or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(
                f"{part!r} is not tuner:trials (tuner one of {', '.join(TUNERS)}, trials >= 1), e.g. random:60,bayesian:40"
            )
        stages.append(Stage(tuner, int(count)))
    if len(stages) < 2:
        raise ValueError(f"a staged search needs at least two stages, but got {text!r}")
    if any(stage.tuner == "grid" for stage in stages[1:]):
        raise ValueError(f"grid can only be the first stage ({_GRID_NO_WARM_START}), but got {text!r}")
    return stages


class SearchConfig(_Strict):
    """One search. Every key is optional but `run`; defaults follow the article."""

    run: str = Field("toonvision", description="Name of the run: its folder under runs/.")
    data: str = Field("data/toonvision", description="Image folder <class>/*.png|jpg, relative to the shared volume.")
    image_size: tuple[int, int] = Field((600, 200), description="Height, width the images are resized to.")
    validation_split: float = Field(0.2, gt=0.0, lt=1.0)
    hypermodel: str = Field(
        "toonvision",
        description='Built-in name, "package.module:function" or "path/file.py:function" '
        "(a relative path is resolved against the folder of the config file).",
    )
    space: dict[str, SpaceOverride] = Field(default_factory=dict, description="Per-hyperparameter overrides that narrow the space.")
    tuner: Literal["random", "hyperband", "bayesian", "grid", "asha"] = "random"
    objective: str = "val_loss"
    objective_direction: Literal["min", "max"] | None = Field(None, description="Needed only when it cannot be inferred from the name.")
    max_trials: int = Field(100, ge=1, description="Trials to run (asha: new configurations; its promotions do not count).")
    executions_per_trial: int = Field(1, ge=1)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    seed: int = 42
    early_stopping_patience: int | None = Field(None, ge=1)
    hyperband_factor: int = Field(3, ge=2, description="Reduction factor of hyperband and asha: the top 1/factor of a rung goes on.")
    asha_min_epochs: int = Field(1, ge=1, description="asha: epochs of the lowest rung, at least (the top rung trains `epochs`).")
    asha_max_total_epochs: int | None = Field(
        None, ge=1, description="asha: epochs over all trials at most, as well as max_trials configurations (default: no epoch budget)."
    )
    bayesian_initial_points: int | None = Field(
        None, ge=1, description="Random trials before the Gaussian process leads (default: 3 per hyperparameter)."
    )
    bayesian_liar: Literal["believer", "worst", "mean", "best", "off"] = Field(
        "believer",
        description="bayesian: the provisional score running trials get until they end, so parallel workers spread out "
        "(believer: the model's prediction; worst/mean/best: a constant from the results so far); off: KerasTuner's own oracle.",
    )
    max_consecutive_failed_trials: int = Field(3, ge=1)
    max_retries_per_trial: int = Field(0, ge=0)
    lease_seconds: float = Field(120.0, gt=0, description="A trial whose worker is silent this long goes to another worker.")
    chief_lease_seconds: float = Field(
        30.0, gt=0, description="The chief's lease on its run, renewed 5 times per lease: a second chief waits this long for it to go."
    )
    chief_wait_seconds: float = Field(600.0, gt=0, description="How long a worker waits for an absent chief before it gives up.")
    data_wait_seconds: float = Field(
        1800.0, ge=0, description="How long the chief waits for a missing data folder (pushed after the deploy) before it exits 2."
    )
    warm_start: str | None = Field(None, description="Name of an earlier run whose trials inside this space seed the oracle.")
    stages: str | None = Field(
        None,
        description="A staged search, e.g. 'random:60,bayesian:40': runs <run>-s1, <run>-s2, each narrowed around the best of the one before.",
    )
    stage_top: int = Field(5, ge=1, description="A staged search narrows each stage's space around the previous stage's top trials.")

    @field_validator("run")
    @classmethod
    def _run_name(cls, value: str) -> str:
        if not _RUN_NAME.match(value):
            raise ValueError(f"must be lowercase letters, digits, '.', '_' or '-' (at most 63), but got {value!r}")
        return value

    @model_validator(mode="after")
    def _grid_is_not_warm_started(self) -> SearchConfig:
        if self.warm_start and self.tuner == "grid":
            raise ValueError(f"warm_start: {_GRID_NO_WARM_START}; use tuner random, bayesian or hyperband for a warm-started run")
        return self

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: str | None) -> str | None:
        if value is not None:
            parse_stages(value)
        return value

    @field_validator("asha_min_epochs")
    @classmethod
    def _asha_min_epochs(cls, value: int, info: ValidationInfo) -> int:
        epochs = info.data.get("epochs")
        if epochs is not None and value > epochs:
            raise ValueError(f"must be <= epochs ({epochs}), but got {value}")
        return value

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError(f"each side must be >= 8 pixels, but got {list(value)}")
        return value

    @field_validator("data")
    @classmethod
    def _relative(cls, value: str) -> str:
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError(f"must be a path inside the shared volume, but got {value!r}")
        return value


def _describe(error: dict[str, Any]) -> str:
    # Union members show up in `loc` as "function-after[...]" or a model name.
    parts = [str(p) for p in error["loc"] if "[" not in str(p) and not str(p).endswith("Override")]
    where = ".".join(parts) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, (str, int, float, bool)) and error["type"] not in ("missing", "value_error"):
        return f"{where}: {message} (got {given!r})"
    return f"{where}: {message}"


def parse_config(data: Any, source: str = "search.yaml") -> SearchConfig:
    """Validate a mapping; raise `ConfigError` with one line naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys, but got {type(data).__name__}")
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A bad override matches none of the three override shapes; name the
        # first reason, not all three.
        raise ConfigError(f"{source}: {_describe(errors[0])}") from None


def hypermodel_file(spec: str) -> tuple[str, str] | None:
    """(file, name) of a `path/file.py:name` hypermodel spec; None for a built-in name or `package.module:name`."""
    target, sep, name = spec.rpartition(":")
    return (target, name) if sep and target.endswith(".py") else None


def resolve_hypermodel_path(config: SearchConfig, base_dir: Path) -> SearchConfig:
    """The config with a relative `path/file.py:name` hypermodel made absolute against `base_dir`.

    As docker-compose and Helm resolve their files: against the folder of the
    config file that names the path, not the current directory, so the chief,
    the workers and `tunectl` (each with its own working directory) load the
    same file, and the run's copy (`runs/<run>/search.yaml`) holds the
    absolute path. `~` is expanded; an absolute path is kept as written.
    """
    found = hypermodel_file(config.hypermodel)
    if found is None:
        return config
    target, name = found
    path = Path(os.path.expanduser(target))
    if not path.is_absolute():
        path = Path(os.path.abspath(base_dir / path))
    resolved = f"{path}:{name}"
    return config if resolved == config.hypermodel else config.model_copy(update={"hypermodel": resolved})


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read `search.yaml`, apply command-line overrides, and validate.

    A relative `hypermodel: path/file.py:name` is resolved against the folder
    of `path` (`resolve_hypermodel_path`).

    Raises:
        ConfigError: the file is missing, a folder, not YAML, or not a valid search (one line naming the key).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; name the search.yaml in it")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}  # an empty file, or only comments: the defaults, and the command line's overrides still apply
    if isinstance(data, dict) and overrides:
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return resolve_hypermodel_path(parse_config(data, str(path)), path.parent)


def dump_config(config: SearchConfig) -> str:
    """The config as YAML, with only what differs from the defaults plus `run`."""
    data = config.model_dump(mode="json", exclude_defaults=True)
    data = {"run": config.run, **data}
    return yaml.safe_dump(data, sort_keys=False)
