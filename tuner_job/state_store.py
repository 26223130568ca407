"""`StateStore`: the chief's state on the shared volume, durable before an RPC answers.

Contract:
- Used from the event loop's thread only; the file writes run in a worker
  thread, off the loop.
- `mark_trial()` records a changed trial; `journal_end()` records a finished
  one. `await commit()` returns once everything recorded before the call is on
  disk. Calls that arrive while a write is in flight share the next write
  (group commit), so `oracle.json`, whose size grows with the search, is
  rewritten once per group instead of twice per trial.
- Every file is written atomically (temp file, fsync, rename): a kill at any
  moment leaves the old or the new file, never a torn one.
- `commit(oracle=False)` is for changes that touch trials only (UpdateTrial's
  metrics): it writes their `trial.json` and skips `oracle.json` and
  `status.json`, whose serialization grows with the search.
- The trial files of one group (and the journal) are written and fsynced
  concurrently, then `oracle.json` and `status.json` (fsync releases the GIL,
  and the filesystem batches concurrent fsyncs into one journal commit): a
  group of n trials costs about two fsyncs, not n + 2.
- `tuner/journal.jsonl` is append-only: one line per finished trial, holding the
  whole trial. It is the second copy that recovers a finished trial whose
  `trial.json` was lost or torn, and the end order when `oracle.json` was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuner_job import _kt
from tuner_job.layout import RunPaths, atomic_write_text

__all__ = ["StateStore", "LoadedState"]

log = logging.getLogger("tuner_job.chief")


@dataclass
class LoadedState:
    """What a restarted chief finds on disk."""

    trials: dict[str, Any] = field(default_factory=dict)  # trial_id -> Trial
    oracle_state: dict[str, Any] | None = None
    end_order: list[str] = field(default_factory=list)
    server_state: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class StateStore:
    def __init__(self, paths: RunPaths, oracle_state: Callable[[], dict[str, Any]], server_state: Callable[[], dict[str, Any]]):
        self.paths = paths
        self._oracle_state = oracle_state
        self._server_state = server_state
        self._dirty: dict[str, Any] = {}
        self._journal: list[str] = []
        self._next: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0  # groups written (the benchmark reads it)
        self._oracle_dirty = True  # oracle.json and status.json are due in the next group
        self._files = ThreadPoolExecutor(max_workers=16, thread_name_prefix="state-fsync")

    @property
    def oracle_file(self) -> Path:
        return self.paths.tuner / "oracle.json"

    @property
    def server_file(self) -> Path:
        """The server's own counters; also what `tunectl` shows as progress."""
        return self.paths.status

    @property
    def journal_file(self) -> Path:
        return self.paths.tuner / "journal.jsonl"

    def mark_trial(self, trial: Any) -> None:
        self._dirty[trial.trial_id] = trial

    def journal_end(self, trial: Any) -> None:
        self._journal.append(json.dumps(trial.get_state()))

    async def commit(self, oracle: bool = True) -> None:
        """Return once every change recorded so far is on disk.

        `oracle=False`: only trials changed (`mark_trial`), not the oracle's or
        the server's state; `oracle.json` and `status.json` wait for a later group.
        """
        self._oracle_dirty = self._oracle_dirty or oracle
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
        waiter = self._next
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_groups())
        await asyncio.shield(waiter)

    async def _write_groups(self) -> None:
        while self._next is not None:
            waiter, self._next = self._next, None
            # Serialize on the loop (the state must not change under us),
            # write in a thread (fsync releases the GIL).
            trials = {tid: json.dumps(t.get_state()) for tid, t in self._dirty.items()}
            self._dirty = {}
            journal, self._journal = self._journal, []
            oracle = server = None
            if self._oracle_dirty:
                self._oracle_dirty = False
                oracle = json.dumps(self._oracle_state())
                server = json.dumps(self._server_state())
            try:
                await asyncio.to_thread(self._write, trials, journal, oracle, server)
            except Exception as exc:  # a full or read-only volume: the RPC fails, the chief goes on
                log.error("could not save the search state: %s", exc)
                waiter.set_exception(exc)
            else:
                self.commits += 1
                waiter.set_result(None)

    def _write(self, trials: dict[str, str], journal: list[str], oracle: str | None, server: str | None) -> None:
        # Trials and journal first, then oracle.json: it never names a trial
        # whose file is not on disk yet.
        jobs = [self._files.submit(atomic_write_text, self.paths.trial_dir(tid) / "trial.json", text) for tid, text in trials.items()]
        if journal:
            self.paths.tuner.mkdir(parents=True, exist_ok=True)
            jobs.append(self._files.submit(self._append_journal, journal))
        self._wait(jobs)
        jobs = [self._files.submit(atomic_write_text, path, text) for path, text in ((self.oracle_file, oracle), (self.server_file, server)) if text is not None]
        self._wait(jobs)

    @staticmethod
    def _wait(jobs: list[Any]) -> None:
        errors = [job.exception() for job in jobs]  # wait for all, then report the first failure
        for error in errors:
            if error is not None:
                raise error

    def _append_journal(self, journal: list[str]) -> None:
        with open(self.journal_file, "a") as handle:
            handle.write("".join(line + "\n" for line in journal))
            handle.flush()
            os.fsync(handle.fileno())

    def flush_now(self) -> None:
        """Write everything pending, synchronously (at start-up and shutdown)."""
        trials = {tid: json.dumps(t.get_state()) for tid, t in self._dirty.items()}
        self._dirty = {}
        journal, self._journal = self._journal, []
        self._oracle_dirty = False
        self._write(trials, journal, json.dumps(self._oracle_state()), json.dumps(self._server_state()))

    def load(self) -> LoadedState:
        """Read the trials, the journal and `oracle.json`, noting anything torn."""
        state = LoadedState()
        journal: dict[str, dict[str, Any]] = {}
        if self.journal_file.is_file():
            for number, line in enumerate(self.journal_file.read_text().splitlines(), start=1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    state.problems.append(f"{self.journal_file.name} line {number} is torn; skipped")
                    continue
                journal[str(entry["trial_id"])] = entry
                state.end_order.append(str(entry["trial_id"]))
        for trial_file in sorted(self.paths.tuner.glob("trial_*/trial.json")):
            trial_id = trial_file.parent.name.removeprefix("trial_")
            try:
                trial = _kt.Trial.from_state(json.loads(trial_file.read_text()))
            except (ValueError, KeyError, TypeError):
                if trial_id in journal:
                    state.problems.append(f"{trial_file} was torn; recovered from the journal")
                    trial = _kt.Trial.from_state(journal[trial_id])
                    self.mark_trial(trial)
                else:
                    state.problems.append(f"{trial_file} was torn and the trial had not finished; it runs again")
                    continue
            if trial_id in journal and trial.status not in ("COMPLETED", "FAILED"):
                trial = _kt.Trial.from_state(journal[trial_id])  # the journal is newer
            state.trials[trial.trial_id] = trial
        for trial_id, entry in journal.items():
            if trial_id not in state.trials:
                state.problems.append(f"trial {trial_id}'s trial.json was missing; recovered from the journal")
                state.trials[trial_id] = _kt.Trial.from_state(entry)
                self.mark_trial(state.trials[trial_id])
        state.end_order = list(dict.fromkeys(state.end_order))
        if self.oracle_file.is_file():
            try:
                state.oracle_state = json.loads(self.oracle_file.read_text())
                oracle_state = state.oracle_state
                referenced = set(oracle_state.get("start_order", [])) | set(oracle_state.get("ongoing_trials", {}).values())
                missing = (referenced | set(oracle_state.get("retry_queue", []))) - set(state.trials)
                if missing:
                    state.problems.append(f"oracle.json names trials with no trial file ({sorted(missing)}); rebuilt from the trials")
                    state.oracle_state = None
            except ValueError:
                state.problems.append(f"{self.oracle_file} was torn; rebuilt from {len(state.trials)} trial files")
        try:
            state.server_state = json.loads(self.server_file.read_text()) if self.server_file.is_file() else {}
        except ValueError:
            state.problems.append(f"{self.server_file} was torn; failure counts start again")
        return state
