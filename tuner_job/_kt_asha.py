"""`AshaOracle`: `AsyncSuccessiveHalving` as a KerasTuner 1.4.8 oracle.

Lives in a `_kt*` module because it subclasses `keras_tuner.Oracle` and uses
its sampler (`_random_values`) and value hashes. The decision itself is
`tuner_job.asha.AsyncSuccessiveHalving`.

A trial is one rung of one configuration, as in KerasTuner's Hyperband: its
values carry `tuner/rung`, `tuner/epochs` (the cumulative epoch it trains to),
`tuner/initial_epoch` and, for a promotion, `tuner/trial_id` (the parent whose
checkpoint it continues; `TrialRunner` loads it). Those values are all the
algorithm's state needs: a chief that restarts, with or without `oracle.json`,
rebuilds the rungs from the trials (`rebuild`), so a restart mid-rung loses
nothing. Trials without `tuner/rung` (a warm start's seeded trials) are
observations outside the rungs: they count for the best trial and are never
sampled again, but are not promoted (their weights belong to another run).
"""

from __future__ import annotations

from typing import Any

import keras_tuner
from keras_tuner.src.engine import trial as _trial

from tuner_job.asha import AsyncSuccessiveHalving, Job
from tuner_job.objective import Objective

__all__ = ["AshaOracle", "RESERVED_PREFIX"]

#: Values under this prefix are the algorithm's bookkeeping, not hyperparameters.
RESERVED_PREFIX = "tuner/"
_RUNNING, _IDLE, _STOPPED = _trial.TrialStatus.RUNNING, _trial.TrialStatus.IDLE, _trial.TrialStatus.STOPPED


class AshaOracle(keras_tuner.Oracle):
    """Asynchronous successive halving (Li et al., MLSys 2020) for KerasTuner.

    Args:
        objective, seed, hyperparameters, tune_new_entries, allow_new_entries,
            max_retries_per_trial, max_consecutive_failed_trials: as `keras_tuner.Oracle`.
        max_epochs: epochs of the top rung (the search's `epochs`).
        min_epochs: the lowest rung trains at least this many epochs.
        factor: the reduction factor (top 1/factor of a rung is promoted).
        max_configs: new configurations at most (the search's `max_trials`);
            promotions do not count. None: only `max_total_epochs` bounds it.
        max_total_epochs: epochs handed out at most, over all trials; None: unbounded.

    `max_trials` is None: the budget is the algorithm's (`budget_spent`).
    """

    def __init__(
        self,
        *,
        objective: Any,
        max_epochs: int,
        min_epochs: int = 1,
        factor: int = 3,
        max_configs: int | None = None,
        max_total_epochs: int | None = None,
        **common: Any,
    ):
        super().__init__(objective=objective, max_trials=None, **common)
        self.shape = {"min_epochs": min_epochs, "max_epochs": max_epochs, "factor": factor}
        self.max_configs = max_configs
        self.max_total_epochs = max_total_epochs
        self.algorithm = self._fresh_algorithm()

    def _fresh_algorithm(self) -> AsyncSuccessiveHalving:
        return AsyncSuccessiveHalving(
            **self.shape,
            max_configs=self.max_configs,
            max_total_epochs=self.max_total_epochs,
            objective=Objective(self.objective.name, self.objective.direction),
        )

    # ----- KerasTuner hooks --------------------------------------------------

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        job = self.algorithm.next_job()
        values = None if job is None else self._values_for(job)
        if job is None or values is None:
            # Running trials may make a promotion due when they end.
            return {"status": _IDLE if self.ongoing_trials else _STOPPED, "values": None}
        self.algorithm.started(trial_id, job)
        return {"status": _RUNNING, "values": values}

    def _values_for(self, job: Job) -> dict[str, Any] | None:
        if job.parent is None:
            values = self._random_values()  # None: the space is exhausted
            if values is None:
                return None
        else:
            values = {k: v for k, v in self.trials[job.parent].hyperparameters.values.items() if not k.startswith(RESERVED_PREFIX)}
            values["tuner/trial_id"] = job.parent
        values.update({"tuner/rung": job.rung, "tuner/epochs": job.epochs, "tuner/initial_epoch": job.initial_epoch})
        return values

    def end_trial(self, trial: Any) -> None:
        super().end_trial(trial)
        ended = self.trials[trial.trial_id]
        if ended.status == _trial.TrialStatus.COMPLETED:
            self.algorithm.ended(ended.trial_id, ended.score)
        elif ended.status == _trial.TrialStatus.FAILED:
            self.algorithm.ended(ended.trial_id, None)
        # INVALID goes back to the retry queue: the same job runs again.

    def _compute_values_hash(self, values: dict[str, Any]) -> str:
        # A configuration is the same whatever rung it is at: a new sample must
        # differ from every configuration started, promoted or not.
        return super()._compute_values_hash({k: v for k, v in values.items() if not k.startswith(RESERVED_PREFIX)})

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["asha"] = dict(self.shape)  # the rungs come from the trials (`rebuild`)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        # The rung layout the trials were made with wins over a changed config
        # (as KerasTuner's Hyperband does); the budgets come from the config,
        # so a restart with a bigger budget extends the search.
        self.shape = dict(state.get("asha", self.shape))
        self.rebuild()

    # ----- ours ---------------------------------------------------------------

    def rebuild(self) -> None:
        """Derive the algorithm's state from `self.trials` (after a restart)."""
        self.algorithm = self._fresh_algorithm()
        order = {t: i for i, t in enumerate(self.start_order)}
        for trial_id in sorted(self.trials, key=lambda t: (order.get(t, len(order)), t)):
            trial = self.trials[trial_id]
            values = trial.hyperparameters.values
            if "tuner/rung" not in values:
                continue
            parent = values.get("tuner/trial_id")
            job = Job(int(values["tuner/rung"]), int(values["tuner/epochs"]), int(values.get("tuner/initial_epoch", 0)), parent)
            self.algorithm.started(trial_id, job)
            if trial.status == _trial.TrialStatus.COMPLETED:
                self.algorithm.ended(trial_id, trial.score)
            elif trial.status == _trial.TrialStatus.FAILED:
                self.algorithm.ended(trial_id, None)

    def budget_spent(self) -> bool:
        """No new trial can be made now (a running one's end may change that)."""
        return self.algorithm.budget_spent()
