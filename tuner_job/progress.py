"""A search's progress: trials ended, the best so far, and the verdict (running, completed, failed), or that it was stopped.

One object keeps the score for the chief: the oracle server counts each trial
it ends, the warm start offers its seeded trials, `status.json` is written
from it and a restarted chief reads the verdict back into it. Pure Python; not
thread-safe (the chief uses it from its event loop).

A chief stopped by a signal before the verdict records that in `status.json`
(`state: stopped`, with the signal and the time): the search is resumable,
and the next chief's first `status.json` says `running` again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tuner_job.objective import Objective, finite
from tuner_job.trials import trial_order

__all__ = ["RESUMABLE", "Scoreboard", "SearchProgress", "counted", "state_line", "trials_done_of_max"]


#: What a stopped search's status says to do next.
RESUMABLE = "resumable: run the same command again (or start the chief again) and it resumes"


@dataclass
class Scoreboard:
    """Trials ended (completed, failed) under an objective, and the best so far.

    Seeded trials compete for best (`offer`) without counting as ended here.
    Equal scores go to the trial first in `trial_order`, whatever order they
    ended in: the order KerasTuner's `get_best_trials` and the results rank them.
    """

    objective: Objective
    completed: int = 0
    failed: int = 0
    best: tuple[str, float] | None = field(default=None)  # (trial_id, score)

    @property
    def done(self) -> int:
        """Trials ended here, completed or failed."""
        return self.completed + self.failed

    def offer(self, trial_id: str, score: Any) -> bool:
        """Make `trial_id` the best when `score` beats the best so far (`Objective.better`, then trial order); return whether it did."""
        best = self.best
        tie = best is not None and finite(score) == best[1] and trial_order(trial_id) < trial_order(best[0])
        if tie or self.objective.better(score, None if best is None else best[1]):
            self.best = (trial_id, float(score))
            return True
        return False

    def count(self, trial_id: str, completed: bool, score: Any = None) -> bool:
        """Count an ended trial; a completed one competes for best. Returns whether it became the best."""
        if not completed:
            self.failed += 1
            return False
        self.completed += 1
        return self.offer(trial_id, score)

    def best_text(self) -> str:
        """`0.1234 (trial 7)`, or `-` before any completed trial."""
        return "-" if self.best is None else f"{self.best[1]:.4f} (trial {self.best[0]})"


@dataclass
class SearchProgress:
    """The scoreboard plus the search's verdict and what a restart must read back.

    Args:
        objective: the search's objective.
        max_consecutive_failed_trials: failures in a row that end the search "failed".
    """

    objective: Objective
    max_consecutive_failed_trials: int
    state: str = "running"  # running | completed | failed
    message: str = ""
    consecutive_failures: int = 0
    exhausted: bool = False  # the oracle said STOPPED at least once
    finished_at: float | None = None  # wall-clock time the verdict came (the benchmark reads it)
    restored_failure: str | None = None  # a failed verdict a restart found, to repeat at start
    bad_input: bool = False  # the verdict is "failed" because a trial showed the config to be wrong (exit 2)
    last_failed: str | None = None  # the last trial that failed here (the verdict names it)
    seeded: int = 0  # trials a warm start gave the oracle: inside `max_trials`, never trained here
    stopped: dict[str, Any] | None = None  # {"signal": "SIGTERM", "at": epoch seconds}: stopped without a verdict
    scoreboard: Scoreboard = field(init=False)

    def __post_init__(self) -> None:
        self.scoreboard = Scoreboard(self.objective)

    def record_end(self, trial_id: str, completed: bool, score: Any, restored: bool = False) -> bool:
        """Count an ended trial (`restored`: one a restart found ended: the failure streak is read back, not recounted).

        Returns whether it became the best so far.
        """
        if not restored:
            self.consecutive_failures = 0 if completed else self.consecutive_failures + 1
        if not completed:
            self.last_failed = trial_id
        return self.scoreboard.count(trial_id, completed, score)

    @property
    def failed_too_often(self) -> bool:
        return self.consecutive_failures >= self.max_consecutive_failed_trials

    def finish(self, state: str, message: str, bad_input: bool = False) -> bool:
        """Give the verdict once; return whether this call gave it (`bad_input`: a failure the config caused)."""
        if self.state != "running":
            return False
        self.state, self.message, self.finished_at = state, message, time.time()
        self.bad_input = bad_input and state == "failed"
        return True

    def stop(self, signal_name: str) -> None:
        """Record that a signal stopped the chief before the verdict (the first one counts); a verdict given stays."""
        if self.state == "running" and self.stopped is None:
            self.stopped = {"signal": signal_name, "at": time.time()}

    def conclusion(self) -> tuple[str, str]:
        """The verdict once the budget is spent: "completed" only when at least one trial completed here.

        A search whose every trial failed (fewer of them than the failure
        limit) is "failed", never "completed": its exit code is 1, not 0. A
        search whose space ran out first says so; one whose warm start left
        no untried configuration at all (nothing trained, nothing failed) is
        "completed", and says that.
        """
        board = self.scoreboard
        if board.completed == 0 and board.failed == 0 and self.seeded and self.exhausted:
            # A warm start whose seeded trials already fill the narrowed space: nothing new to train, nothing failed.
            best = "none" if board.best is None else board.best_text()
            return "completed", (
                f"the space holds no configuration beyond the {self.seeded} seeded trials: nothing new to train; "
                f"best {self.objective.name} {best}"
            )
        if board.completed == 0:
            last = f"; the last was trial {self.last_failed} (its error is in errors/trial_{self.last_failed}.txt)" if self.last_failed else ""
            return "failed", f"no trial completed ({board.failed} failed{last})"
        ran_out = "; the space has no untried configuration left, so fewer trials ran than max_trials" if self.exhausted else ""
        return "completed", self.summary() + ran_out

    def summary(self) -> str:
        """`5 trials (4 completed, 1 failed), best val_loss 0.1234 (trial 3)`."""
        board = self.scoreboard
        best = "none" if board.best is None else board.best_text()
        return f"{counted(board.done, 'trial')} ({board.completed} completed, {board.failed} failed), best {self.objective.name} {best}"

    def restore(self, status: dict[str, Any]) -> str | None:
        """Read back what a previous chief's `status.json` holds; return a note when the search had failed.

        A restart does not undo a failed search (Kubernetes restarts a chief
        that exited 1): it fails again at start, unless the limit was raised.
        """
        self.consecutive_failures = int(status.get("consecutive_failures", 0))
        self.exhausted = bool(status.get("exhausted", False))
        if status.get("state") == "failed" and self.failed_too_often:
            self.restored_failure = str(status.get("message") or "the search had failed")
            return f"this run had failed ({self.restored_failure}); raise max_consecutive_failed_trials to resume it, or start it --fresh"
        return None

    def key(self) -> tuple[Any, ...]:
        """What of `status()` a restart reads: `status.json` is written at once when it changes."""
        return (self.state, self.message, self.consecutive_failures, self.exhausted, self.stopped is not None)

    def status(self, **oracle_view: Any) -> dict[str, Any]:
        """`status.json`: the verdict, the counts, the best so far, plus `oracle_view` (budget, running, queued...).

        `state` is `stopped` (and `stopped` names the signal and the time) when
        a signal stopped the chief before the verdict.
        """
        board = self.scoreboard
        stopped = self.stopped if self.state == "running" else None
        return {
            "state": "stopped" if stopped else self.state,
            "message": f"stopped by {stopped['signal']}; {RESUMABLE}" if stopped else self.message,
            "stopped": stopped,
            "objective": self.objective.name,
            "direction": self.objective.direction,
            **oracle_view,
            "trials_done": board.done,
            "seeded": self.seeded,
            "completed": board.completed,
            "failed": board.failed,
            "best": None if board.best is None else {"trial_id": board.best[0], "score": board.best[1]},
            "consecutive_failures": self.consecutive_failures,
            "exhausted": self.exhausted,
            "bad_input": self.bad_input,
            "updated": time.time(),
        }


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 trial`, `2 trials`, `0 trials` (`plural` for a noun that takes more than an s: `1 class`, `2 classes`)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def state_line(status: dict[str, Any]) -> str:
    """The search's state in words for `tunectl`: `running`, `completed`, `failed`, or `stopped by SIGTERM at 14:02:07 (resumable: ...)`."""
    state = str(status.get("state") or "unknown")
    if state != "stopped":
        return state
    stopped = status.get("stopped") or {}
    by = f" by {stopped['signal']}" if stopped.get("signal") else ""
    at = f" at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(stopped['at'])))}" if stopped.get("at") else ""
    return f"stopped{by}{at} ({RESUMABLE})"


def trials_done_of_max(status: dict[str, Any]) -> tuple[int | None, int | None]:
    """(trials done, of max_trials) as a run's `status.json` says, counted as `tunectl results` counts them.

    Seeded trials are inside the budget (the chief raised `max_trials` by
    their count) and are done, though not trained here: a finished search
    with 4 seeded and 4 trained trials is 8/8, not 4/8. None where unknown.
    """
    done = status.get("trials_done")
    if done is not None:
        done = int(done) + int(status.get("seeded") or 0)
    total = status.get("max_trials")
    return done, None if total is None else int(total)
