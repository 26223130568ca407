"""`StateStore`: the chief's state on the shared volume, durable before an RPC answers.

Contract:
- Used from the event loop's thread only. The loop serializes the state (it must
  not change under us); a child process writes the files (`state_writer`: a
  writer thread would fight the busy loop for the GIL at every syscall).
- `mark_trial()` records a changed trial; `journal_end()` records a finished
  one. `await commit()` returns once everything recorded before the call is on
  disk. Calls that arrive while a write is in flight share the next write
  (group commit), so `oracle.json` is rewritten once per group instead of
  twice per trial.
- Every file is written atomically (temp file, fsync, rename): a kill at any
  moment leaves the old or the new file, never a torn one.
- `commit(oracle=False)` is for changes that touch trials only (UpdateTrial's
  metrics): it writes their `trial.json` and skips `oracle.json` and
  `status.json`.
- `status.json` is progress for `tunectl` plus the few values a restart needs
  (the server's `server_key`: state, failure count, budget spent). It is
  written in the group where those change, else at most every `status_every`
  seconds, and always by `flush_now()`: its map of running trials grows with
  the workers, and serializing it with every group cost the loop as much as
  the oracle itself at 256 workers.
- The trial files of one group (and the journal) are written and fsynced
  concurrently, then `oracle.json` and `status.json`: a group of n trials costs
  about two fsyncs, not n + 2.
- `tuner/journal.jsonl` is append-only: one line per finished trial, holding the
  whole trial. It is the second copy that recovers a finished trial whose
  `trial.json` was lost or torn, and the end order when `oracle.json` was.
- `start()` (on the running loop) starts the writer process, `close()` stops it;
  without `start()`, or once the process is gone, the store writes in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuner_job import _kt
from tuner_job.layout import RunPaths
from tuner_job.state_writer import Group, StateWriter, write_group

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
    def __init__(
        self,
        paths: RunPaths,
        oracle_state: Callable[[], dict[str, Any]],
        server_state: Callable[[], dict[str, Any]],
        server_key: Callable[[], Any] = lambda: None,
        status_every: float = 0.5,
    ):
        self.paths = paths
        self._oracle_state = oracle_state
        self._server_state = server_state
        # status.json is progress plus a few values a restart needs
        # (`server_key`): written when those change, else at most every
        # `status_every` seconds (its "running" map grows with the workers).
        self._server_key = server_key
        self.status_every = status_every
        self._status_written: tuple[Any, float] | None = None
        self._dirty: dict[str, Any] = {}
        self._journal: list[dict[str, Any]] = []
        self._next: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0  # groups written (the benchmark reads it)
        self._oracle_dirty = True  # oracle.json and status.json are due in the next group
        self._files = ThreadPoolExecutor(max_workers=16, thread_name_prefix="state-fsync")  # in-process writes
        self._process = StateWriter(self._files)
        # As strings, once: building Paths for every group showed in profiles.
        self._tuner_dir = str(paths.tuner)
        self._journal_path, self._oracle_path, self._server_path = str(self.journal_file), str(self.oracle_file), str(self.server_file)

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

    def start(self) -> None:
        """Start the writer process (call on the running event loop)."""
        self._process.start()

    def close(self) -> None:
        """Stop the writer process once everything committed is on disk."""
        self._process.close()

    @property
    def writer_pid(self) -> int | None:
        return self._process.pid

    def mark_trial(self, trial: Any) -> None:
        self._dirty[trial.trial_id] = trial

    def journal_end(self, trial: Any) -> None:
        self._journal.append(trial.get_state())

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
            # Serialize on the loop (the state must not change under us).
            group = self._group(oracle=self._oracle_dirty)
            try:
                await self._process.write(group)
            except Exception as exc:  # a full or read-only volume: the RPC fails, the chief goes on
                log.error("could not save the search state: %s", exc)
                waiter.set_exception(exc)
            else:
                self.commits += 1
                waiter.set_result(None)

    def _group(self, oracle: bool, force_status: bool = False) -> Group:
        """Everything recorded so far; `oracle`: with oracle.json (and status.json when due)."""
        tuner = self._tuner_dir
        group = Group(trials={f"{tuner}/trial_{tid}/trial.json": t.get_state() for tid, t in self._dirty.items()})
        self._dirty = {}
        if self._journal:
            group.journal = (self._journal_path, self._journal)
            self._journal = []
        if oracle:
            self._oracle_dirty = False
            group.after = {self._oracle_path: self._oracle_state()}
            key, now = self._server_key(), time.monotonic()
            if force_status or self._status_written is None or self._status_written[0] != key or now - self._status_written[1] >= self.status_every:
                group.after[self._server_path] = self._server_state()
                self._status_written = (key, now)
        return group

    def flush_now(self) -> None:
        """Write everything pending, synchronously (at start-up and shutdown)."""
        write_group(self._group(oracle=True, force_status=True), self._files)

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
