"""`StateStore`: the chief's state on the shared volume, durable before an RPC answers.

Contract:
- Used from the event loop's thread only. The loop serializes the state (it must
  not change under us); a child process writes the files (`state_writer`: a
  writer thread would fight the busy loop for the GIL at every syscall).
- `tuner/journal.jsonl` is the write-ahead log: `journal_start()` records a
  trial handed out (whole, with its owner), `journal_end()` a trial finished
  (whole, results included). `mark_trial()` records any other change, for the
  trial's checkpoint file. `await commit()` returns once every journal line
  recorded before the call is fsynced and `oracle.json` is replaced. Calls that
  arrive while a write is in flight share the next write (group commit), so a
  group of n trials costs one fsync, and `oracle.json` is rewritten once per
  group instead of twice per trial. See `state_writer` for what is durable when.
- Every file is replaced atomically (temp file, rename): a kill at any moment
  leaves the old or the new file, never a torn one.
- `commit(oracle=False)` is for changes that touch trials only (UpdateTrial's
  metrics): it writes their checkpoints and skips `oracle.json` and `status.json`.
- `status.json` is progress for `tunectl` plus the few values a restart needs
  (the server's `server_key`: state, failure count, budget spent). It is
  written in the group where those change, else at most every `STATUS_EVERY`
  seconds, and always by `flush_now()`: its map of running trials grows with
  the workers, and serializing it with every group cost the loop as much as
  the oracle itself at 256 workers.
- `load()` takes each trial from the journal where that is newer (a finished
  trial; a checkpoint missing or torn), else from its checkpoint, and the owner
  of every running trial from its last start line.
- `start()` (on the running loop) starts the writer process, `close()` stops it;
  without `start()`, or once the process is gone, the store writes in-process.
- With a `fence` (the chief's lease) every write, in the writer process or
  here, first checks that no newer chief holds the run (`chief_lease`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner_job import _kt, _kt_state
from tuner_job.chief_lease import Fence
from tuner_job.layout import RunPaths
from tuner_job.state_writer import Group, StateWriter, write_group
from tuner_job.trials import JOURNAL_EVENT, JOURNAL_OWNER, read_trials

__all__ = ["StateStore", "LoadedState", "JOURNAL_EVENT", "JOURNAL_OWNER"]

log = logging.getLogger("tuner_job.chief")

STATUS_EVERY = 0.5  # seconds between status.json writes when nothing a restart reads changed


@dataclass
class LoadedState:
    """What a restarted chief finds on disk."""

    trials: dict[str, Any] = field(default_factory=dict)  # trial_id -> Trial
    oracle_state: dict[str, Any] | None = None
    end_order: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # running trial_id -> tuner_id, from the journal
    server_state: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class StateStore:
    """The chief's state on the shared volume (see the module's contract).

    Args:
        paths: the run whose `tuner/` folder and `status.json` it writes.
        oracle_state: returns the oracle's state for `oracle.json` (called on the loop, per group).
        server_state: returns the server's state for `status.json`.
        server_key: returns what of the server state a restart reads; a change
            writes `status.json` in the next group instead of on its schedule.
        fence: the chief's lease, checked before every write (None: unchecked).
    """

    def __init__(
        self,
        paths: RunPaths,
        oracle_state: Callable[[], dict[str, Any]],
        server_state: Callable[[], dict[str, Any]],
        server_key: Callable[[], Any] = lambda: None,
        fence: Fence | None = None,
    ):
        self.paths = paths
        self.fence = fence
        self._oracle_state = oracle_state
        self._server_state = server_state
        # status.json is progress plus a few values a restart needs
        # (`server_key`): written when those change, else at most every
        # `STATUS_EVERY` seconds (its "running" map grows with the workers).
        self._server_key = server_key
        self._status_written: tuple[Any, float] | None = None
        self._dirty: dict[str, Any] = {}
        self._journal: list[dict[str, Any]] = []
        self._fresh: dict[str, dict[str, Any]] = {}  # a state journaled since the trial last changed: its checkpoint too
        self._next: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0  # groups written (the benchmark reads it)
        self._oracle_dirty = True  # oracle.json and status.json are due in the next group
        self._process = StateWriter(fence)
        # As strings, once: building Paths for every group showed in profiles.
        self._tuner_dir = str(paths.tuner)
        self._journal_path, self._oracle_path, self._server_path = str(self.journal_file), str(self.oracle_file), str(self.server_file)

    @property
    def oracle_file(self) -> Path:
        return self.paths.oracle_json

    @property
    def server_file(self) -> Path:
        """The server's own counters; also what `tunectl` shows as progress."""
        return self.paths.status

    @property
    def journal_file(self) -> Path:
        return self.paths.journal

    def start(self) -> None:
        """Start the writer process (call on the running event loop)."""
        self._process.start()

    def close(self) -> None:
        """Stop the writer process once everything committed is on disk."""
        self._process.close()

    def pending(self) -> bool:
        """Whether a trial change or a journal line waits for the next group."""
        return bool(self._dirty or self._journal)

    def mark_trial(self, trial: Any) -> None:
        """A trial changed: its `trial.json` is rewritten with the next group."""
        self._dirty[trial.trial_id] = trial
        self._fresh.pop(trial.trial_id, None)

    def journal_start(self, trial: Any, tuner_id: str) -> None:
        """A trial handed to `tuner_id`: its line makes the hand-out durable."""
        self._journal_line(trial, {JOURNAL_EVENT: "start", JOURNAL_OWNER: tuner_id})

    def journal_end(self, trial: Any) -> None:
        """A finished trial, whole (results included)."""
        self._journal_line(trial, {JOURNAL_EVENT: "end"})

    def _journal_line(self, trial: Any, event: dict[str, str]) -> None:
        state = self._fresh[trial.trial_id] = trial.get_state()  # also this group's checkpoint
        self._journal.append({**state, **event})

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
        fresh = self._fresh
        group = Group(trials={f"{tuner}/trial_{tid}/trial.json": fresh.get(tid) or t.get_state() for tid, t in self._dirty.items()})
        for tid, state in fresh.items():  # journaled without a change KerasTuner saved (a retried trial handed out)
            group.trials.setdefault(f"{tuner}/trial_{tid}/trial.json", state)
        self._dirty, self._fresh = {}, {}
        if self._journal:
            group.journal = (self._journal_path, self._journal)
            self._journal = []
        if oracle:
            self._oracle_dirty = False
            group.after = {self._oracle_path: self._oracle_state()}
            key, now = self._server_key(), time.monotonic()
            if force_status or self._status_written is None or self._status_written[0] != key or now - self._status_written[1] >= STATUS_EVERY:
                group.after[self._server_path] = self._server_state()
                self._status_written = (key, now)
        return group

    def flush_now(self) -> None:
        """Write everything pending, synchronously (at start-up and shutdown)."""
        if self.fence is not None:
            self.fence.check()
        write_group(self._group(oracle=True, force_status=True), durable=True)

    def load(self) -> LoadedState:
        """Read the trials, the journal and `oracle.json`, noting anything torn.

        Each trial comes from the newer of its journal line and its file
        (`trials.read_trials`); a file found stale or missing is rewritten with
        the next group. A torn last journal line is cut off. An `oracle.json`
        that is torn, or names a trial no file or line holds, is dropped: the
        oracle is then rebuilt from the trials (`_kt_state.resume`).
        """
        found = read_trials(self.paths, parse=_kt.Trial.from_state, repair=True)
        state = LoadedState(trials=found.trials, end_order=found.journal.end_order, owners=found.journal.owners, problems=found.problems)
        for trial_id in found.recovered:
            self.mark_trial(found.trials[trial_id])
        if self.oracle_file.is_file():
            try:
                state.oracle_state = json.loads(self.oracle_file.read_text())
                missing = _kt_state.unknown_trials(state.oracle_state, state.trials)
                if missing:
                    state.problems.append(f"oracle.json names trials with no trial file ({missing}); rebuilt from the trials")
                    state.oracle_state = None
            except ValueError:
                state.problems.append(f"{self.oracle_file} was torn; rebuilt from {len(state.trials)} trial files")
        try:
            state.server_state = json.loads(self.server_file.read_text()) if self.server_file.is_file() else {}
        except ValueError:
            state.problems.append(f"{self.server_file} was torn; failure counts start again")
        return state
