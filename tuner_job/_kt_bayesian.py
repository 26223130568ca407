"""`ParallelBayesianOracle`: `LiarGP` as a KerasTuner 1.4.8 oracle.

A `_kt*` module: it subclasses `BayesianOptimizationOracle` and reads its
space helpers (`_nonfixed_space`, `_vector_to_values`, `_random_values`) and
each hyperparameter's step. The decision is `tuner_job.liar`.

Stock KerasTuner 1.4.8 already puts running trials into its fit, but with the
score the *previous* fit predicts for them plus one standard deviation: before
the first fit that is the prior (0 + 1, in the objective's own units: a
pessimistic lie for a loss near 0.5, an optimistic one for a loss near 100),
and the proposal is never checked against the running points, so L-BFGS-B
runs that end on the same corner of the cube hand out the same configuration
twice. Here the lie is a score seen so far, and a proposal is at least one
step away from every trial started.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras_tuner.src.engine import hyperparameters as _hp
from keras_tuner.src.engine import trial as _trial
from keras_tuner.src.tuners.bayesian import BayesianOptimizationOracle

from tuner_job.liar import LiarGP
from tuner_job.objective import Objective

__all__ = ["ParallelBayesianOracle", "space_steps", "unit_point", "CONTINUOUS_STEP"]

#: One step of a Float without `step`: 1% of its range (in the sampling's scale).
CONTINUOUS_STEP = 0.01


def _step(hp: Any) -> float:
    if isinstance(hp, _hp.Boolean):
        return 0.5
    if isinstance(hp, _hp.Choice):
        return 1.0 / len(hp.values)
    if isinstance(hp, (_hp.Int, _hp.Float)) and hp.step is not None:
        return 1.0 / hp._get_n_values()
    if isinstance(hp, _hp.Int):
        return 1.0 / (hp.max_value - hp.min_value + 1)
    return CONTINUOUS_STEP


def space_steps(hyperparameters: Any) -> np.ndarray:
    """One step of each tunable hyperparameter in the unit cube, in the order of the space."""
    return np.array([_step(hp) for hp in hyperparameters.space if not isinstance(hp, _hp.Fixed)], dtype=float)


def _unit(hp: Any, value: Any) -> float:
    """`hp.value_to_prob(value)`, robust to float steps.

    KerasTuner 1.4.8 finds a stepped value's index with `//`: (0.3 - 0.0) //
    0.05 is 5.0, so 0.3 and 0.25 land on the same point. Rounding does not.
    """
    if isinstance(hp, (_hp.Int, _hp.Float)) and hp.step is not None and hp.sampling == "linear":
        count = hp._get_n_values()
        index = min(count - 1, max(0, round((value - hp.min_value) / hp.step)))
        return (index + 0.5) / count
    return float(hp.value_to_prob(value))


def unit_point(hyperparameters: Any, values: dict[str, Any]) -> np.ndarray:
    """A configuration as a point of the unit cube, one coordinate per tunable hyperparameter.

    An inactive or missing value counts as the default, as KerasTuner's
    Bayesian oracle vectorises a trial.
    """
    scratch = _hp.HyperParameters()
    scratch.values = values
    return np.array([
        _unit(hp, values[hp.name] if hp.name in values and scratch.is_active(hp) else hp.default)
        for hp in hyperparameters.space
        if not isinstance(hp, _hp.Fixed)
    ], dtype=float)


class ParallelBayesianOracle(BayesianOptimizationOracle):
    """KerasTuner's Bayesian optimisation, parallel-aware (see `LiarGP`).

    Args:
        lie: the running trials' provisional score: "believer", "worst", "mean" or "best".
        The rest as `keras_tuner.oracles.BayesianOptimizationOracle`.

    With one worker no trial is running when one is proposed, so it decides as
    the stock oracle would, except that it never proposes a tried point again.
    """

    def __init__(self, *, lie: str = "believer", **kwargs: Any):
        super().__init__(**kwargs)
        self.lie = lie
        self.proposer = LiarGP(lie=lie, alpha=self.alpha, beta=self.beta, seed=self.seed)  # type: ignore[arg-type]

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        completed = [t for t in self.trials.values() if t.status == _trial.TrialStatus.COMPLETED]
        initial = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)
        if len(completed) < initial:
            return self._random_populate_space()
        running = list(self.ongoing_trials.values())
        failed = [t for t in self.trials.values() if t.status in (_trial.TrialStatus.FAILED, _trial.TrialStatus.INVALID)]
        objective = Objective(self.objective.name, self.objective.direction)
        space = self.hyperparameters

        def points(trials: list[Any]) -> np.ndarray:
            return np.array([unit_point(space, t.hyperparameters.values) for t in trials])

        vector = self.proposer.propose(
            points(completed),
            np.array([objective.sort_key(t.score) for t in completed], dtype=float),  # lower is better
            points(running),
            space_steps(space),
            snap=lambda x: unit_point(space, self._vector_to_values(x)),
            avoid_x=points(failed),
        )
        if vector is None:
            return self._random_populate_space()
        return {"status": _trial.TrialStatus.RUNNING, "values": self._vector_to_values(vector)}

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["lie"] = self.lie
        return state
