"""Asynchronous successive halving: the decision, without KerasTuner or a server.

`_kt_asha.AshaOracle` puts it behind our chief; the benchmark's simulation
drives the same oracle in-process. TensorFlow-free.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from tuner_job.objective import Objective

__all__ = ["AsyncSuccessiveHalving", "Job", "rung_epochs"]


@dataclass(frozen=True)
class Job:
    """What a worker trains next.

    `rung`: the rung this job fills (0 = a new configuration). `epochs`: the
    cumulative epoch the job trains to. `initial_epoch`: where it starts (the
    parent's rung epochs; 0 for a new configuration). `parent`: the trial id
    whose weights it continues, or None.
    """

    rung: int
    epochs: int
    initial_epoch: int = 0
    parent: str | None = None

    @property
    def cost(self) -> int:
        """Epochs this job trains."""
        return self.epochs - self.initial_epoch


def rung_epochs(min_epochs: int, max_epochs: int, factor: int) -> list[int]:
    """The cumulative epochs of each rung, lowest first.

    K = floor(log_factor(max_epochs / min_epochs)); rung k trains to
    round(max_epochs / factor**(K - k)), so the top rung is `max_epochs` and the
    lowest is at least `min_epochs`. Raises ValueError on a bad argument.
    """
    if not 1 <= min_epochs <= max_epochs:
        raise ValueError(f"need 1 <= min_epochs <= max_epochs, but got {min_epochs=} {max_epochs=}.")
    if factor < 2:
        raise ValueError(f"factor must be >= 2, but got {factor=}.")
    top = int(math.floor(math.log(max_epochs / min_epochs) / math.log(factor) + 1e-9))
    epochs: list[int] = []
    for k in range(top + 1):
        value = max(min_epochs, round(max_epochs / factor ** (top - k)))
        if not epochs or value > epochs[-1]:
            epochs.append(value)
    return epochs


class AsyncSuccessiveHalving:
    """ASHA: Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020.

    Successive halving without synchronisation: a trial that finishes rung k
    is promoted to rung k + 1 as soon as it ranks in the top 1/`factor` of the
    results recorded at rung k so far, and a free worker that has no
    promotion due starts a new configuration at rung 0. No worker waits for a
    rung to fill (the paper's Algorithm 2, early-stopping rate s = 0; promotions
    are looked for from the top rung down, the best candidate first).

    Budget: `max_configs` new configurations and/or `max_total_epochs` epochs
    handed out (each job costs `epochs - initial_epoch`); either may be None.
    A job is handed out only if it fits what is left of both.

    State, all plain: `rungs[k]` maps the trials that completed rung k to their
    scores; `promoted[k]` holds the trials promoted out of rung k; `running`
    maps a trial in progress to its rung; `configs` and `epochs_spent` count
    what was handed out. A failed trial leaves no score.

    Args:
        min_epochs, max_epochs, factor: see `rung_epochs`.
        max_configs: new configurations at most (None: unbounded).
        max_total_epochs: epochs handed out at most, over all jobs (None: unbounded).
        objective: what "better" means (`Objective.sort_key`); default: lower is better.

    Raises:
        ValueError: bad rung parameters, or neither budget given.
    """

    def __init__(
        self,
        *,
        min_epochs: int,
        max_epochs: int,
        factor: int,
        max_configs: int | None,
        max_total_epochs: int | None = None,
        objective: Objective | None = None,
    ):
        if max_configs is None and max_total_epochs is None:
            raise ValueError("give max_configs or max_total_epochs (or both), but got neither.")
        self.epochs = rung_epochs(min_epochs, max_epochs, factor)
        self.factor = factor
        self.max_configs = max_configs
        self.max_total_epochs = max_total_epochs
        self.objective = objective or Objective("score", "min")
        self.rungs: list[dict[str, float]] = [{} for _ in self.epochs]
        self.promoted: list[set[str]] = [set() for _ in self.epochs]
        self.running: dict[str, int] = {}
        self.configs = 0
        self.epochs_spent = 0
        # Derived from `rungs`, for speed: each rung's results ranked best
        # first, as (signed score, arrival, trial id); ties go to the earlier.
        self._ranked: list[list[tuple[float, int, str]]] = [[] for _ in self.epochs]
        self._arrivals = 0
        self._next: Job | None | bool = False  # memo of next_job(); False: not computed

    # ----- the decision ----------------------------------------------------

    def next_job(self) -> Job | None:
        """What the next free worker gets: a due promotion, else a new configuration.

        None when neither fits the budget (the caller answers IDLE while
        trials run, since an end may make a promotion due, else STOPPED).
        """
        if self._next is False:
            self._next = self._decide()
        return self._next  # type: ignore[return-value]

    def _decide(self) -> Job | None:
        for rung in range(len(self.epochs) - 2, -1, -1):
            parent = self._promotable(rung)
            if parent is not None:
                job = Job(rung + 1, self.epochs[rung + 1], self.epochs[rung], parent)
                if self._fits(job):
                    return job
        job = Job(0, self.epochs[0])
        if (self.max_configs is None or self.configs < self.max_configs) and self._fits(job):
            return job
        return None

    def _fits(self, job: Job) -> bool:
        return self.max_total_epochs is None or self.epochs_spent + job.cost <= self.max_total_epochs

    def _promotable(self, rung: int) -> str | None:
        """The best trial in the top 1/factor of `rung` not yet promoted, or None."""
        quota = len(self.rungs[rung]) // self.factor
        promoted = self.promoted[rung]
        for _, _, trial_id in self._ranked[rung][:quota]:
            if trial_id not in promoted:
                return trial_id
        return None

    def budget_spent(self) -> bool:
        """Nothing can be handed out now (more may come when a running trial ends)."""
        return self.next_job() is None

    # ----- what happened ---------------------------------------------------

    def started(self, trial_id: str, job: Job) -> None:
        """`trial_id` was handed `job`: count it, mark its parent promoted."""
        self.running[trial_id] = job.rung
        self.epochs_spent += job.cost
        if job.parent is None:
            self.configs += 1
        else:
            self.promoted[job.rung - 1].add(job.parent)
        self._next = False

    def ended(self, trial_id: str, score: float | None) -> None:
        """`trial_id` finished its rung with `score` (None or NaN: it failed, no result)."""
        rung = self.running.pop(trial_id, None)
        if rung is not None and score is not None and score == score and trial_id not in self.rungs[rung]:
            self.rungs[rung][trial_id] = float(score)
            self._arrivals += 1
            bisect.insort(self._ranked[rung], (self.objective.sort_key(float(score)), self._arrivals, trial_id))
        self._next = False

    def __repr__(self) -> str:
        sizes = "/".join(str(len(r)) for r in self.rungs)
        return (
            f"AsyncSuccessiveHalving(epochs={self.epochs}, factor={self.factor}, results per rung {sizes}, "
            f"running={len(self.running)}, configs={self.configs}/{self.max_configs}, "
            f"epochs={self.epochs_spent}/{self.max_total_epochs})"
        )
