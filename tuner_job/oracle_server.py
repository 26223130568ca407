"""`OracleServer`: a KerasTuner oracle served over KerasTuner's own gRPC protocol.

A stock KerasTuner worker can join (same service, same messages); the port also
serves the standard gRPC health service, which Kubernetes probes natively.

Contract:
- Runs on `grpc.aio`. Every oracle call runs on the event loop's thread, one at
  a time, so no locks are needed; file writes leave the process (a child
  writes them, see `StateStore`), so nothing contends with the loop for the GIL.
- A RUNNING trial is owned by one tuner id and held by a lease. Every RPC that
  names the trial renews it (UpdateTrial, EndTrial, and GetTrial, which our
  workers send as a heartbeat during long epochs). The same tuner id asking
  again within the lease gets its trial back and resumes it; a lease that runs
  out sends the trial to the next free worker.
- An RPC that changes the state answers only once the change is on disk, so a
  restarted chief knows every trial it handed out or saw finish. It keeps the
  in-flight trials with their owners (fresh leases), so no trial trains twice.
- EndTrial is idempotent: a trial ends once; a late duplicate is acknowledged.
- CreateTrial never answers STOPPED while trials are in flight (one may come
  back to the queue); it waits for a change instead of answering IDLE at once,
  so workers do not busy-poll.
- The search ends "completed" when the budget is spent and nothing is in
  flight, or "failed" after `max_consecutive_failed_trials` failures. Either way
  waiting workers are answered at once and `serve()` returns; every response
  carries the state in its trailing metadata (`x-search-state`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from tuner_job import _kt
from tuner_job.chief_startup import ORACLE_SERVICE
from tuner_job.keepalive import server_options
from tuner_job.state_store import StateStore

__all__ = ["OracleServer", "SEARCH_STATE_KEY", "SEARCH_MESSAGE_KEY", "SEARCH_RUN_KEY"]

log = logging.getLogger("tuner_job.chief")

SEARCH_STATE_KEY = "x-search-state"
SEARCH_MESSAGE_KEY = "x-search-message"
SEARCH_RUN_KEY = "x-search-run"  # the run a trial belongs to (a staged search moves on)
SERVICE_NAME = ORACLE_SERVICE
_TERMINAL = (_kt.TrialStatus.COMPLETED, _kt.TrialStatus.FAILED)


class OracleServer(_kt.pb_grpc.OracleServicer):
    def __init__(
        self,
        oracle: _kt.Oracle,
        store_paths: Any,
        *,
        lease_seconds: float,
        max_consecutive_failed_trials: int,
        idle_wait_seconds: float = 5.0,
        on_trial_end: Callable[[Any], None] | None = None,
        on_trial_start: Callable[[Any, str], None] | None = None,
        next_run: str | None = None,
    ):
        self.oracle = oracle
        # A stage of a staged search: when it completes, workers are told to
        # wait for the next stage's run instead of to stop.
        self.next_run = next_run
        self.lease_seconds = lease_seconds
        self.max_consecutive_failed_trials = max_consecutive_failed_trials
        self.idle_wait_seconds = idle_wait_seconds
        self.on_trial_end = on_trial_end
        self.on_trial_start = on_trial_start
        self.store = StateStore(store_paths, lambda: _kt.oracle_state(self.oracle), self._server_state, self._server_key)
        _kt.quiet_oracle(oracle, self.store.mark_trial)
        self.state = "running"
        self.message = ""
        self.consecutive_failures = 0
        self.exhausted = False  # the oracle said STOPPED at least once
        self.best: tuple[str, float] | None = None
        self.counts = {"completed": 0, "failed": 0}
        self._lease_seen: dict[str, float] = {}  # trial_id -> last time its worker spoke
        self._ended: set[str] = set()
        self._changed: asyncio.Condition | None = None
        self._finished: asyncio.Event | None = None
        self.health = HealthServicer()
        self.finished_at: float | None = None  # when the search ended (the benchmark reads it)
        self._restored_failure: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._protos = _kt.ProtoCache()

    # ----- state ---------------------------------------------------------

    def _server_state(self) -> dict[str, Any]:
        oracle = self.oracle
        return {
            "state": self.state,
            "message": self.message,
            "objective": oracle.objective.name,
            "direction": oracle.objective.direction,
            "max_trials": oracle.max_trials,
            "trials_started": len(oracle.trials),
            "trials_done": self.counts["completed"] + self.counts["failed"],
            "completed": self.counts["completed"],
            "failed": self.counts["failed"],
            "running": {tuner: trial.trial_id for tuner, trial in oracle.ongoing_trials.items()},
            "queued": list(oracle._retry_queue),
            "best": None if self.best is None else {"trial_id": self.best[0], "score": self.best[1]},
            "consecutive_failures": self.consecutive_failures,
            "exhausted": self.exhausted,
            "next_run": self.next_run if self.state == "completed" else None,
            "updated": time.time(),
        }

    def _server_key(self) -> tuple[Any, ...]:
        """What of `_server_state` a restart reads: status.json is written at once when it changes."""
        return (self.state, self.message, self.consecutive_failures, self.exhausted)

    def restore(self) -> list[str]:
        """Load the state a previous chief left; return lines describing it."""
        loaded = self.store.load()
        notes = list(loaded.problems)
        if not loaded.trials and loaded.oracle_state is None:
            return notes
        if loaded.oracle_state is not None:
            _kt.restore_oracle_state(self.oracle, loaded.oracle_state, loaded.trials, loaded.end_order)
            # Trials whose end reached the journal but not oracle.json.
            for trial_id in loaded.end_order:
                if trial_id not in self.oracle.end_order:
                    self.oracle.end_order.append(trial_id)
                    for tuner, trial in list(self.oracle.ongoing_trials.items()):
                        if trial.trial_id == trial_id:
                            del self.oracle.ongoing_trials[tuner]
            # A stock reload would re-queue these; we keep them with their owners.
            for tuner, trial in list(self.oracle.ongoing_trials.items()):
                self.oracle.ongoing_trials[tuner] = self.oracle.trials[trial.trial_id]
            referenced = {t.trial_id for t in self.oracle.ongoing_trials.values()} | set(self.oracle._retry_queue)
            unlisted = [t for t in loaded.owners if t not in referenced]  # handed out after oracle.json's last flush
            notes += self._reclaim(loaded.owners, unlisted, "oracle.json had not recorded it")
        else:
            requeued = _kt.rebuild_oracle_state(self.oracle, loaded.trials, loaded.end_order)
            notes += self._reclaim(loaded.owners, requeued, "oracle.json was rebuilt")
            if self.oracle._retry_queue:
                notes.append(f"trials {sorted(self.oracle._retry_queue)} were running with no known owner; they go back to the queue")
        server = loaded.server_state or {}
        self.consecutive_failures = int(server.get("consecutive_failures", 0))
        self.exhausted = bool(server.get("exhausted", False))
        if server.get("state") == "failed" and self.consecutive_failures >= self.max_consecutive_failed_trials:
            # A restart does not undo a failed search (Kubernetes restarts a chief
            # that exited 1): it fails again at once. Raising the limit resumes it.
            self._restored_failure = str(server.get("message") or "the search had failed")
            notes.append(
                f"this run had failed ({self._restored_failure}); raise max_consecutive_failed_trials to resume it, or start it --fresh"
            )
        for trial_id in self.oracle.end_order:
            trial = self.oracle.trials.get(trial_id)
            if trial is not None and trial.status in _TERMINAL:
                self._ended.add(trial_id)
                self._count_end(trial)
        now = time.monotonic()
        for trial in self.oracle.ongoing_trials.values():
            self._lease_seen[trial.trial_id] = now
        notes.append(
            f"resumed: {len(self.oracle.trials)} trials, {len(self._ended)} finished, "
            f"{len(self.oracle.ongoing_trials)} in flight (kept with their workers), {len(self.oracle._retry_queue)} queued"
        )
        self.store.flush_now()
        return notes

    def _reclaim(self, owners: dict[str, str], trial_ids: list[str], why: str) -> list[str]:
        """Give running trials back to the owners the journal names (instead of the queue)."""
        notes = []
        for trial_id in trial_ids:
            trial, tuner = self.oracle.trials.get(trial_id), owners.get(trial_id)
            if trial is None or tuner is None or trial.status in _TERMINAL or trial_id in self.oracle.end_order:
                continue
            if trial_id in self.oracle._retry_queue:
                self.oracle._retry_queue.remove(trial_id)
            if tuner in self.oracle.ongoing_trials:
                self.oracle._retry_queue.append(trial_id)  # the owner holds a newer trial
                continue
            trial.status = _kt.TrialStatus.RUNNING
            self.oracle.ongoing_trials[tuner] = trial
            notes.append(f"trial {trial_id} stays with {tuner} ({why}; the journal had it)")
        return notes

    def _count_end(self, trial: Any) -> None:
        if trial.status == _kt.TrialStatus.COMPLETED:
            self.counts["completed"] += 1
            if trial.score is not None and trial.score == trial.score:  # not NaN
                better = self.best is None or (
                    trial.score < self.best[1] if self.oracle.objective.direction == "min" else trial.score > self.best[1]
                )
                if better:
                    self.best = (trial.trial_id, float(trial.score))
        else:
            self.counts["failed"] += 1

    def _nothing_to_hand_out(self, tuner_id: str) -> bool:
        """The oracle would answer STOPPED: the budget is spent, nothing to resume or retry."""
        oracle = self.oracle
        return (
            oracle.max_trials is not None
            and len(oracle.trials) >= oracle.max_trials
            and tuner_id not in oracle.ongoing_trials
            and not oracle._retry_queue
        )

    def _search_done(self) -> bool:
        oracle = self.oracle
        budget_spent = self.exhausted or (oracle.max_trials is not None and len(oracle.trials) >= oracle.max_trials)
        return budget_spent and not oracle.ongoing_trials and not oracle._retry_queue

    def _finish(self, state: str, message: str) -> None:
        if self.state != "running":
            return
        self.state, self.message = state, message
        self.finished_at = time.time()
        log.info("search %s: %s", state, message)
        assert self._finished is not None
        self._finished.set()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _metadata(self, context: grpc.aio.ServicerContext) -> None:
        state = "running" if self.state == "completed" and self.next_run else self.state
        metadata = [(SEARCH_STATE_KEY, state), (SEARCH_RUN_KEY, self.store.paths.run)]
        if self.message:
            metadata.append((SEARCH_MESSAGE_KEY, self.message.encode("ascii", "replace").decode()))
        context.set_trailing_metadata(tuple(metadata))

    def _background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # the store logs a failure

    def _renew(self, trial_id: str) -> None:
        if trial_id in self._lease_seen:
            self._lease_seen[trial_id] = time.monotonic()

    def _find(self, trial_id: str) -> Any | None:
        return self.oracle.trials.get(trial_id)

    # ----- RPCs ----------------------------------------------------------

    async def GetSpace(self, request, context):  # noqa: N802 (gRPC names)
        self._metadata(context)
        return _kt.pb.GetSpaceResponse(hyperparameters=self.oracle.get_space().to_proto())

    async def UpdateSpace(self, request, context):  # noqa: N802
        self.oracle.update_space(_kt.HyperParameters.from_proto(request.hyperparameters))
        await self.store.commit()
        self._metadata(context)
        return _kt.pb.UpdateSpaceResponse()

    async def CreateTrial(self, request, context):  # noqa: N802
        tuner_id = request.tuner_id
        deadline = time.monotonic() + self.idle_wait_seconds
        while True:
            if self.state != "running":
                self._metadata(context)
                if self.state == "completed" and self.next_run:
                    # Between stages: hold the worker until this server stops,
                    # then it asks the next stage's server.
                    await asyncio.sleep(self.idle_wait_seconds)
                    return _kt.pb.CreateTrialResponse(trial=_kt.Trial(self.oracle.get_space(), status="IDLE").to_proto())
                return _kt.pb.CreateTrialResponse(trial=_kt.Trial(self.oracle.get_space(), status="STOPPED").to_proto())
            if self._nothing_to_hand_out(tuner_id):
                trial = None  # what the oracle would answer (STOPPED), without building a trial
            else:
                trial = self.oracle.create_trial(tuner_id)
            if trial is not None and trial.status == _kt.TrialStatus.RUNNING:
                resumed = trial.trial_id in self._lease_seen
                self._lease_seen[trial.trial_id] = time.monotonic()
                if not resumed:
                    self.store.journal_start(trial, tuner_id)
                await self.store.commit()
                if self.on_trial_start is not None:
                    self.on_trial_start(trial, tuner_id if not resumed else f"{tuner_id} (resumed)")
                self._metadata(context)
                return _kt.pb.CreateTrialResponse(trial=self._protos.to_proto(trial))
            if trial is None or trial.status == _kt.TrialStatus.STOPPED:
                self.exhausted = self.exhausted or not (
                    self.oracle.max_trials is not None and len(self.oracle.trials) >= self.oracle.max_trials
                )
                if self._search_done():
                    self._finish("completed", self._summary())
                    await self.store.commit()
                    await self._notify()
                    continue
            # IDLE, or STOPPED with trials in flight: wait for an end, an
            # expired lease or the end of the search, then ask the oracle again.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._metadata(context)
                return _kt.pb.CreateTrialResponse(trial=_kt.Trial(self.oracle.get_space(), status="IDLE").to_proto())
            assert self._changed is not None
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass

    async def UpdateTrial(self, request, context):  # noqa: N802
        trial = self._find(request.trial_id)
        if trial is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown trial_id={request.trial_id!r}")
        self._renew(trial.trial_id)
        if trial.trial_id not in self._ended:
            try:
                trial = self.oracle.update_trial(request.trial_id, dict(request.metrics), step=request.step)
            except ValueError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            # Not written now: the metrics reach trial.json with the next group
            # (any RPC's, or the lease reaper's within a second), and EndTrial,
            # which is waited for, carries them too (ours do).
        self._metadata(context)
        return _kt.pb.UpdateTrialResponse(trial=self._protos.to_proto(trial))

    async def EndTrial(self, request, context):  # noqa: N802
        trial_id = request.trial.trial_id
        if self._find(trial_id) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown trial_id={trial_id!r}")
        if trial_id in self._ended:
            self._metadata(context)
            return _kt.pb.EndTrialResponse()
        known = self.oracle.trials[trial_id]
        ended = self._protos.from_proto(request.trial, known)
        self._protos.forget(trial_id)
        if not known.metrics.exists(self.oracle.objective.name) and ended.metrics.exists(self.oracle.objective.name):
            known.metrics = ended.metrics  # an UpdateTrial that a restarted chief never saved
        self.oracle.end_trial(ended)
        self._lease_seen.pop(trial_id, None)
        trial = self.oracle.trials[trial_id]
        if trial.status in _TERMINAL:
            self._ended.add(trial_id)
            self._count_end(trial)
            self.store.journal_end(trial)
            if trial.status == _kt.TrialStatus.FAILED:
                self.consecutive_failures += 1
            else:
                self.consecutive_failures = 0
        if self.on_trial_end is not None and trial.status in _TERMINAL:
            self.on_trial_end(trial)
        if self.consecutive_failures >= self.max_consecutive_failed_trials:
            self._finish(
                "failed",
                f"{self.consecutive_failures} consecutive trials failed (max_consecutive_failed_trials="
                f"{self.max_consecutive_failed_trials}); last: trial {trial_id}",
            )
        elif self._search_done():
            self._finish("completed", self._summary())
        await self.store.commit()
        await self._notify()
        self._metadata(context)
        return _kt.pb.EndTrialResponse()

    async def GetTrial(self, request, context):  # noqa: N802
        trial = self._find(request.trial_id)
        if trial is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown trial_id={request.trial_id!r}")
        self._renew(trial.trial_id)
        self._metadata(context)
        return _kt.pb.GetTrialResponse(trial=self._protos.to_proto(trial))

    async def GetBestTrials(self, request, context):  # noqa: N802
        trials = self.oracle.get_best_trials(request.num_trials)
        self._metadata(context)
        return _kt.pb.GetBestTrialsResponse(trials=[t.to_proto() for t in trials])

    # ----- lifecycle -----------------------------------------------------

    def _summary(self) -> str:
        best = "none" if self.best is None else f"{self.best[1]:.4f} (trial {self.best[0]})"
        return (
            f"{self.counts['completed'] + self.counts['failed']} trials "
            f"({self.counts['completed']} completed, {self.counts['failed']} failed), "
            f"best {self.oracle.objective.name} {best}"
        )

    async def _reap_leases(self) -> None:
        """Send trials whose workers went silent to the next free worker."""
        period = min(1.0, self.lease_seconds / 4)
        while self.state == "running":
            await asyncio.sleep(period)
            now = time.monotonic()
            expired = [
                (tuner, trial)
                for tuner, trial in self.oracle.ongoing_trials.items()
                if now - self._lease_seen.get(trial.trial_id, now) > self.lease_seconds
            ]
            for tuner, trial in expired:
                del self.oracle.ongoing_trials[tuner]
                self._lease_seen.pop(trial.trial_id, None)
                self.oracle._retry_queue.append(trial.trial_id)
                log.warning(
                    "trial %s: worker %s silent for %.0fs (lease_seconds=%g); the trial goes to the next free worker",
                    trial.trial_id, tuner, self.lease_seconds, self.lease_seconds,
                )
            if expired:
                await self.store.commit()
                await self._notify()
            elif self.store.pending():
                self._background(self.store.commit(oracle=False))  # UpdateTrial's metrics, when nothing else wrote them

    async def start(self, host: str, port: int) -> grpc.aio.Server:
        """Bind and start serving; `wait()` blocks until the search ends."""
        self._changed = asyncio.Condition()
        self._finished = asyncio.Event()
        # The chief has imported TensorFlow: a full garbage collection walks
        # its ~400k objects (165 ms here) and stalls every RPC in flight.
        # Those objects live as long as the process; take them out of it.
        gc.collect()
        gc.freeze()
        # Workers ping every TUNER_GRPC_KEEPALIVE_SECONDS to notice a dead chief: accept it.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *server_options()])
        _kt.pb_grpc.add_OracleServicer_to_server(self, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind the oracle to {host}:{port}: the port is in use or the address is not local")
        self.port = bound
        await server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.store.flush_now()  # status.json says "running" from the first moment
        self.store.start()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_leases())
        self._server = server
        if self._restored_failure is not None:
            self._finish("failed", self._restored_failure)
        elif self._search_done() and self.oracle.trials:
            self._finish("completed", self._summary())
        return server

    async def wait(self, linger_seconds: float = 1.0) -> None:
        """Block until the search ends, answer the waiting workers, stop."""
        assert self._finished is not None
        await self._finished.wait()
        await self.store.commit()
        await self._notify()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Workers between two RPCs learn the end on their next call; after
        # this the shared volume's status.json tells the late ones.
        await asyncio.sleep(linger_seconds)
        self._reaper.cancel()
        await self._server.stop(grace=0.5)
        await self.store.commit()  # anything the last answers changed
        self.store.close()
        self.store.flush_now()  # the final status.json, whatever its schedule
