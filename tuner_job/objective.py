"""The objective a search optimises, which way, and what "better" means.

Every consumer asks this module: the chief (the oracle's objective, the best
trial so far), the worker (the best epoch, `ModelCheckpoint` and
`EarlyStopping` modes), the results and every `tunectl` view. The direction is
KerasTuner's own (its metric-direction inference, reached through `_kt`),
overridden by the config's `objective_direction`; a direction the chief already
recorded (status.json, a trial's metric) is taken as it is, so reading a run
needs no TensorFlow.

Importing this module is cheap: Keras is imported only when a direction must
be inferred from a name.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tuner_job.errors import ConfigError

__all__ = ["DIRECTIONS", "Objective", "ObjectiveNotLoggedError", "finite", "infer_direction", "resolve_objective"]

DIRECTIONS = ("min", "max")


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool, not NaN or infinite), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class ObjectiveNotLoggedError(ConfigError):
    """The model does not log the objective at all: the config names a metric it does not have (bad input, exit 2)."""


def not_logged(name: str, logged: Iterable[str]) -> ObjectiveNotLoggedError:
    """The one line for objective `name` missing from the metrics `logged`, with the closest one offered (difflib)."""
    names = sorted(set(logged))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return ObjectiveNotLoggedError(
        f"objective: the model does not log {name!r} (it logs {', '.join(names) or 'nothing'}); {hint}set objective: in search.yaml to one of them"
    )


@dataclass(frozen=True)
class Objective:
    """A metric and its direction: "min" (lower is better) or "max" (higher is better).

    `direction` is also the `mode` of Keras' `ModelCheckpoint` and `EarlyStopping`.

    Raises:
        ConfigError: `direction` is neither "min" nor "max".
    """

    name: str
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"objective_direction must be 'min' or 'max', but got {self.direction!r}")

    @property
    def maximize(self) -> bool:
        return self.direction == "max"

    def better(self, score: Any, than: Any) -> bool:
        """Whether `score` is strictly better than `than`; any finite score beats None (nothing yet).

        A score that is not a finite number is never better.
        """
        score, than = finite(score), finite(than)
        if score is None:
            return False
        if than is None:
            return True
        return score > than if self.maximize else score < than

    def sort_key(self, score: float) -> float:
        """Key that sorts finite scores best first (ties keep their order: `sorted` is stable)."""
        return -score if self.maximize else score

    def best(self, scores: Iterable[Any]) -> float | None:
        """The best finite score of `scores`, or None when there is none."""
        best: float | None = None
        for score in scores:
            if self.better(score, best):
                best = finite(score)
        return best

    def best_epoch(self, history: Mapping[Any, Mapping[str, Any]]) -> tuple[int, dict[str, float]]:
        """The epoch with the best finite value of this objective, and its logs.

        Args:
            history: epoch (an int, or its str in a JSON file) -> that epoch's
                logs (metric name -> value), as Keras' `fit` reports them.

        Returns:
            `(epoch, logs)`; on a tie the earliest epoch, as `ModelCheckpoint(save_best_only=True)` keeps it.

        Raises:
            ObjectiveNotLoggedError: no epoch logged this objective at all (the config is wrong).
            ValueError: it was logged, but never as a finite number (the trial diverged).
        """
        self.require_logged(name for logs in history.values() for name in logs)
        chosen: tuple[int, dict[str, float]] | None = None
        for epoch, logs in sorted(((int(e), dict(v)) for e, v in history.items()), key=lambda item: item[0]):
            if self.better(logs.get(self.name), None if chosen is None else chosen[1][self.name]):
                chosen = (epoch, logs)
        if chosen is None:
            values = [logs[self.name] for logs in history.values() if self.name in logs]
            raise ValueError(f"objective {self.name!r} was never a finite number: {values}")
        return chosen

    def require_logged(self, logged: Iterable[str]) -> None:
        """Raise `ObjectiveNotLoggedError` (did you mean ...?) unless this objective is among the metric names `logged`."""
        names = set(logged)
        if self.name not in names:
            raise not_logged(self.name, names)

    def describe(self) -> str:
        """`val_loss (lower is better)`."""
        return f"{self.name} ({'higher' if self.maximize else 'lower'} is better)"


def infer_direction(name: str) -> str | None:
    """KerasTuner's own direction for a metric name ("min", "max"), or None when it cannot tell.

    Imports Keras (through `_kt`): seconds, the first time.
    """
    from tuner_job import _kt

    return _kt.infer_metric_direction(name)


def resolve_objective(name: str, direction: str | None = None, *, recorded: str | None = None) -> Objective:
    """The objective `name` with its direction, decided once for every consumer.

    Args:
        name: the metric, as Keras logs it (`val_loss`, `val_precision`, ...).
        direction: the config's `objective_direction` ("min" or "max"): wins when given.
        recorded: a direction the chief already recorded for this run (status.json,
            results.json, a trial's metric); used when `direction` is None.

    Returns:
        The `Objective`; otherwise KerasTuner's inference from the name decides.

    Raises:
        ConfigError: no direction is given or recorded and KerasTuner cannot
            infer one (a custom metric): the message names `objective_direction`.
    """
    chosen = direction or (recorded if recorded in DIRECTIONS else None) or infer_direction(name)
    if chosen is None:
        raise ConfigError(
            f"objective: KerasTuner cannot tell whether {name!r} should be minimised or maximised; "
            "set objective_direction: min or max in search.yaml"
        )
    return Objective(name, chosen)
