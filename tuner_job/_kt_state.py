"""KerasTuner's internals, part 2: the oracle's saved state, its recovery, and its retry queue.

What stock KerasTuner does wrong here (keras-tuner 1.4.8), and what we do instead:

- `oracle.json` holds the whole `start_order`, `end_order`, `tried_so_far` and
  `id_to_hash`, so saving it costs more with every trial. We leave them out
  (`oracle_state`): the trial files and the journal hold them, and a restart
  derives them (`restore_oracle_state`).
- `Oracle.reload()` re-queues every in-flight trial, so after a chief restart
  they train twice (DESIGN.md). `resume` keeps each with the owner the journal
  names, and rebuilds a lost or stale `oracle.json` from the trials.
- Trials whose worker went silent go back to the private `_retry_queue`
  (`requeue`; `unqueue` when that worker ends them late), which is also what
  `queued` and `has_queued` read.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from tuner_job._kt import Oracle, Trial, TrialStatus, _cheap_space_copies, space_of
from tuner_job._kt_asha import AshaOracle
from tuner_job.layout import WARM_START_LABEL
from tuner_job.space_model import values_inside
from tuner_job.trials import trial_order

__all__ = [
    "oracle_state",
    "unknown_trials",
    "restore_oracle_state",
    "rebuild_oracle_state",
    "resume",
    "seed_completed_trials",
    "queued",
    "has_queued",
    "requeue",
]

_ENDED = (TrialStatus.COMPLETED, TrialStatus.FAILED)

# Parts of the oracle's state that grow with the search and that the trial
# files and the journal already hold. `oracle.json` leaves them out, so saving
# it costs the same at trial 5,000 as at trial 50; a restart derives them.
_DERIVED = ("start_order", "end_order", "tried_so_far", "id_to_hash")


def oracle_state(oracle: Oracle) -> dict[str, Any]:
    """The oracle's state for `oracle.json`, without what `_DERIVED` names."""
    saved = (oracle.start_order, oracle.end_order, oracle._tried_so_far, oracle._id_to_hash, oracle._run_times)
    in_flight = [t.trial_id for t in oracle.ongoing_trials.values()] + list(oracle._retry_queue)
    oracle.start_order, oracle.end_order, oracle._tried_so_far, oracle._id_to_hash = [], [], set(), {}
    oracle._run_times = {t: saved[4][t] for t in in_flight if t in saved[4]}  # retries already spent
    try:
        state = oracle.get_state()
    finally:
        oracle.start_order, oracle.end_order, oracle._tried_so_far, oracle._id_to_hash, oracle._run_times = saved
    for key in _DERIVED:
        state.pop(key, None)
    return state


def unknown_trials(state: dict[str, Any], known: Iterable[str]) -> list[str]:
    """The trial ids a saved `oracle.json` names (started, running, queued) that `known` lacks, sorted."""
    named = set(state.get("start_order", [])) | set(state.get("ongoing_trials", {}).values()) | set(state.get("retry_queue", []))
    return sorted(named - set(known))


def queued(oracle: Oracle) -> list[str]:
    """The trials waiting in the oracle's retry queue (a copy)."""
    return list(oracle._retry_queue)


def has_queued(oracle: Oracle) -> bool:
    return bool(oracle._retry_queue)


def requeue(oracle: Oracle, trial_id: str) -> None:
    """Put a trial that lost its worker back in the queue: the next free worker gets it."""
    oracle._retry_queue.append(trial_id)


def unqueue(oracle: Oracle, trial_id: str) -> None:
    """Take a trial out of the queue: its silent worker ended it after all.

    KerasTuner's `end_trial` leaves a queued trial in the queue, and
    `create_trial` would hand the ended trial out again (as RUNNING).
    """
    while trial_id in oracle._retry_queue:
        oracle._retry_queue.remove(trial_id)


def _end_order(trials: dict[str, Trial], ids: list[str], end_order: list[str]) -> list[str]:
    """The journal's end order, then any finished trial it lacks (seeded trials never ended here)."""
    journaled = [t for t in end_order if t in trials]
    seen = set(journaled)
    return journaled + [
        t for t in ids if t not in seen and trials[t].status in _ENDED and not str(trials[t].message or "").startswith(WARM_START_LABEL)
    ]


def restore_oracle_state(oracle: Oracle, state: dict[str, Any], trials: dict[str, Trial], end_order: list[str]) -> None:
    """Load `oracle.json` plus what the trials and the journal hold.

    Unlike stock `reload`, in-flight trials stay with their owners.
    """
    state = copy.deepcopy(state)
    ids = sorted(trials, key=trial_order)
    ended = _end_order(trials, ids, end_order)
    hashes = {t: oracle._compute_values_hash(trials[t].hyperparameters.values) for t in ids}
    state.setdefault("start_order", ids)
    state.setdefault("end_order", ended)
    state["tried_so_far"] = sorted(set(hashes.values()) | set(state.get("tried_so_far", ())))
    state["id_to_hash"] = {**hashes, **state.get("id_to_hash", {})}
    state["run_times"] = {**{t: 1 for t in ended}, **state.get("run_times", {})}
    oracle.trials = dict(trials)
    oracle.set_state(state)  # AshaOracle.set_state rebuilds its rungs from the trials
    _cheap_space_copies(oracle)  # set_state made a new space


def rebuild_oracle_state(oracle: Oracle, trials: dict[str, Trial], end_order: list[str]) -> list[str]:
    """Rebuild a lost `oracle.json` from the trials; return the trials to re-run.

    Finished trials keep their results; trials that were running go back to the
    queue (their owners are unknown without `oracle.json`).
    """
    oracle.trials = dict(trials)
    oracle.start_order = sorted(trials, key=trial_order)
    oracle.end_order = _end_order(trials, oracle.start_order, end_order)
    running = sorted(t for t, trial in trials.items() if trial.status not in _ENDED)
    for trial_id in oracle.start_order:
        oracle._record_values(trials[trial_id])
        oracle._run_times[trial_id] = max(oracle._run_times[trial_id], 1 if trial_id in oracle.end_order else 0)
    oracle._seed_state = oracle.seed + 1000 * len(trials)
    oracle._retry_queue = list(running)
    oracle.ongoing_trials = {}
    if isinstance(oracle, AshaOracle):
        oracle.rebuild()  # its rungs and budget come from the trials
    return running


def _reclaim(oracle: Oracle, owners: dict[str, str], trial_ids: list[str], why: str) -> list[str]:
    """Give running trials back to the owners the journal names (instead of the queue)."""
    notes = []
    for trial_id in trial_ids:
        trial, tuner = oracle.trials.get(trial_id), owners.get(trial_id)
        if trial is None or tuner is None or trial.status in _ENDED or trial_id in oracle.end_order:
            continue
        if trial_id in oracle._retry_queue:
            oracle._retry_queue.remove(trial_id)
        if tuner in oracle.ongoing_trials:
            oracle._retry_queue.append(trial_id)  # the owner holds a newer trial
            continue
        trial.status = TrialStatus.RUNNING
        oracle.ongoing_trials[tuner] = trial
        notes.append(f"trial {trial_id} stays with {tuner} ({why}; the journal had it)")
    return notes


def resume(oracle: Oracle, state: dict[str, Any] | None, trials: dict[str, Trial], end_order: list[str], owners: dict[str, str]) -> list[str]:
    """Put a restarted chief's oracle where the last one left it; return lines describing what was done.

    Args:
        oracle: a fresh oracle, its space populated.
        state: `oracle.json` as saved (None: lost or stale, rebuild from the trials).
        trials: every trial, newest of journal and file (`StateStore.load`).
        end_order: the journal's order of ended trials.
        owners: running trial id -> the tuner id the journal handed it to.
    """
    notes: list[str] = []
    if state is not None:
        restore_oracle_state(oracle, state, trials, end_order)
        # Trials whose end reached the journal but not oracle.json: a stale
        # oracle.json still lists them as running with their old owners (and
        # `restore_oracle_state` already took `end_order` from the journal).
        for trial_id in end_order:
            if trial_id not in oracle.end_order:
                oracle.end_order.append(trial_id)
        ended = set(oracle.end_order)
        for tuner, trial in list(oracle.ongoing_trials.items()):
            if trial.trial_id in ended or oracle.trials[trial.trial_id].status in _ENDED:
                del oracle.ongoing_trials[tuner]
        # A stock reload would re-queue these; we keep them with their owners.
        for tuner, trial in list(oracle.ongoing_trials.items()):
            oracle.ongoing_trials[tuner] = oracle.trials[trial.trial_id]
        referenced = {t.trial_id for t in oracle.ongoing_trials.values()} | set(oracle._retry_queue)
        unlisted = [t for t in owners if t not in referenced]  # handed out after oracle.json's last flush
        notes += _reclaim(oracle, owners, unlisted, "oracle.json had not recorded it")
    else:
        requeued = rebuild_oracle_state(oracle, trials, end_order)
        notes += _reclaim(oracle, owners, requeued, "oracle.json was rebuilt")
        if oracle._retry_queue:
            notes.append(f"trials {sorted(oracle._retry_queue)} were running with no known owner; they go back to the queue")
    return notes


def seed_completed_trials(oracle: Oracle, trials: list[tuple[str, Trial, str]]) -> list[Trial]:
    """Add earlier trials to a fresh oracle as COMPLETED observations.

    `trials` holds `(new_id, old_trial, message)`; those whose values fall
    inside the oracle's space (`space_model.values_inside`) are added under
    `new_id` with the old metrics and score, and recorded as tried (no point
    is paid for twice). They are not in `end_order` (this run did not end
    them); the caller raises `max_trials` by their count. Returns the added trials.
    """
    space = space_of(oracle.hyperparameters)
    added = []
    for new_id, old, message in trials:
        values = values_inside(space, dict(old.hyperparameters.values))
        if values is None:
            continue
        hyperparameters = oracle.hyperparameters.copy()
        hyperparameters.values = values
        trial = Trial(hyperparameters=hyperparameters, trial_id=new_id, status=TrialStatus.COMPLETED, message=message)
        trial.metrics = old.metrics
        trial.score = old.score
        trial.best_step = old.best_step
        oracle.trials[new_id] = trial
        oracle.start_order.append(new_id)
        oracle._record_values(trial)
        oracle._run_times[new_id] = 1
        added.append(trial)
    return added
