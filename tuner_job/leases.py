"""`TrialLeases`: how long each running trial's worker may stay silent before the trial moves on.

A trial handed out is leased to its worker. Every RPC that names the trial
renews the lease (UpdateTrial, EndTrial, and GetTrial, which our workers send as
a heartbeat during long epochs). A lease that runs out sends the trial to the
next free worker. Times are `time.monotonic()` seconds; used from the chief's
event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

__all__ = ["TrialLeases"]


class TrialLeases:
    """The running trials' leases, by trial id.

    Args:
        seconds: how long a silent worker keeps its trial (`lease_seconds`).
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._seen: dict[str, float] = {}  # trial_id -> when its worker last spoke

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self._seen

    def grant(self, trial_id: str) -> bool:
        """Lease (or re-lease) a trial from now; return whether it was leased already (a resumed trial)."""
        held = trial_id in self._seen
        self._seen[trial_id] = time.monotonic()
        return held

    def renew(self, trial_id: str) -> None:
        """Its worker spoke: the lease starts again (a trial not leased stays so)."""
        if trial_id in self._seen:
            self._seen[trial_id] = time.monotonic()

    def release(self, trial_id: str) -> None:
        self._seen.pop(trial_id, None)

    def expired(self, running: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The `(tuner_id, trial)` pairs of `running` whose worker was silent longer than the lease."""
        now = time.monotonic()
        return [(tuner, trial) for tuner, trial in running if now - self._seen.get(trial.trial_id, now) > self.seconds]

    @property
    def period(self) -> float:
        """How often to look for expired leases: a quarter of the lease, at most a second."""
        return min(1.0, self.seconds / 4)
