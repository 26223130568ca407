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
- The search ends "completed" when the budget is spent, nothing is in flight
  and a trial completed; "failed" when none did, after `max_consecutive_failed_trials`
  failures in a row, or at once when a worker ends a trial with `BAD_INPUT_KEY`
  (the config is wrong: `progress.bad_input`, the chief exits 2). Either way
  waiting workers are answered at once and `wait()` returns; every response
  carries the state in its trailing metadata (`x-search-state`).
- `stop()` (SIGTERM) ends serving without a verdict: CreateTrial answers UNAVAILABLE
  (workers wait for the next chief), the state is saved, `status.json` says `stopped`.
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

from tuner_job import _kt, _kt_state
from tuner_job.chief_startup import ORACLE_SERVICE
from tuner_job.keepalive import server_options
from tuner_job.layout import RunPaths
from tuner_job.leases import TrialLeases
from tuner_job.progress import SearchProgress, counted
from tuner_job.state_store import StateStore

__all__ = ["OracleServer", "SEARCH_STATE_KEY", "SEARCH_MESSAGE_KEY", "SEARCH_RUN_KEY", "BAD_INPUT_KEY"]

log = logging.getLogger("tuner_job.chief")

SEARCH_STATE_KEY = "x-search-state"
SEARCH_MESSAGE_KEY = "x-search-message"
SEARCH_RUN_KEY = "x-search-run"  # the run a trial belongs to (a staged search moves on)
BAD_INPUT_KEY = "x-bad-input"  # EndTrial metadata: this trial showed the config wrong, in one line (a `Trial` has no error text)
SERVICE_NAME = ORACLE_SERVICE
_TERMINAL = (_kt.TrialStatus.COMPLETED, _kt.TrialStatus.FAILED)


class OracleServer(_kt.pb_grpc.OracleServicer):
    """A KerasTuner oracle served over gRPC, with leases, a journal and counters (see the module's contract).

    Each RPC reads the proto, calls the oracle, waits for the change to be on
    disk (`StateStore`) and answers; recovery and the oracle's retry queue are
    `_kt_state`'s, the leases `TrialLeases`', the counts, the best trial and
    the verdict `SearchProgress`' (`self.progress`, which the warm start shares).

    Args:
        oracle: a stock oracle from `_kt.make_oracle`, its space populated; the
            server replaces its persistence and display (`_kt.quiet_oracle`).
        store_paths: the run whose files hold the state.
        lease_seconds: how long a silent worker keeps its trial.
        max_consecutive_failed_trials: failures in a row that end the search "failed".
        idle_wait_seconds: how long CreateTrial waits for work before it answers IDLE.
        on_trial_end: called with each trial that ends (COMPLETED or FAILED), once.
        on_trial_start: called with each trial handed out and the tuner id
            (`"<id> (resumed)"` when its owner asked again).
        next_run: the next stage's run (a staged search): when this one
            completes, workers are told to wait for it instead of to stop.
        fence: the chief's lease (`ChiefLease.fence`), checked before every write.

    Use: `restore()` (a restart), then `await start(host, port)`, then `await wait()`.
    """

    def __init__(
        self,
        oracle: _kt.Oracle,
        store_paths: RunPaths,
        *,
        lease_seconds: float,
        max_consecutive_failed_trials: int,
        idle_wait_seconds: float = 5.0,
        on_trial_end: Callable[[Any], None] | None = None,
        on_trial_start: Callable[[Any, str], None] | None = None,
        next_run: str | None = None,
        fence: Any = None,
    ):
        self.oracle = oracle
        self.next_run = next_run
        self.stopping = False
        self.idle_wait_seconds = idle_wait_seconds
        self.on_trial_end = on_trial_end
        self.on_trial_start = on_trial_start
        self.progress = SearchProgress(_kt.objective_of(oracle), max_consecutive_failed_trials)
        self.store = StateStore(store_paths, lambda: _kt_state.oracle_state(self.oracle), self._status, self.progress.key, fence)
        _kt.quiet_oracle(oracle, self.store.mark_trial)
        self.leases = TrialLeases(lease_seconds)
        self._ended: set[str] = set()
        self._changed: asyncio.Condition | None = None
        self._finished: asyncio.Event | None = None
        self.health = HealthServicer()
        self._tasks: set[asyncio.Task[None]] = set()
        self._protos = _kt.ProtoCache()

    @property
    def state(self) -> str:
        """The verdict: running, completed or failed."""
        return self.progress.state

    def _status(self) -> dict[str, Any]:
        oracle = self.oracle
        return self.progress.status(
            max_trials=_kt.trial_budget(oracle),
            trials_started=len(oracle.trials),
            running={tuner: trial.trial_id for tuner, trial in oracle.ongoing_trials.items()},
            queued=_kt_state.queued(oracle),
            next_run=self.next_run if self.state == "completed" else None,
        )

    def restore(self) -> list[str]:
        """Load the state a previous chief left (`StateStore.load`, `_kt_state.resume`); return lines describing it.

        In-flight trials stay with the owners the journal names, with fresh
        leases; a search that had failed fails again at `start()` unless
        `max_consecutive_failed_trials` was raised.
        """
        loaded = self.store.load()
        notes = list(loaded.problems)
        if not loaded.trials and loaded.oracle_state is None:
            return notes
        notes += _kt_state.resume(self.oracle, loaded.oracle_state, loaded.trials, loaded.end_order, loaded.owners)
        failed = self.progress.restore(loaded.server_state or {})
        notes += [failed] if failed else []
        for trial_id in self.oracle.end_order:
            trial = self.oracle.trials.get(trial_id)
            if trial is not None and trial.status in _TERMINAL:
                self._count_end(trial, restored=True)
        for trial in self.oracle.ongoing_trials.values():
            self.leases.grant(trial.trial_id)
        notes.append(
            f"resumed: {counted(len(self.oracle.trials), 'trial')}, {len(self._ended)} finished, "
            f"{len(self.oracle.ongoing_trials)} in flight (kept with their workers), {len(_kt_state.queued(self.oracle))} queued"
        )
        self.store.flush_now()
        return notes

    def _count_end(self, trial: Any, restored: bool = False) -> None:
        self._ended.add(trial.trial_id)
        self.progress.record_end(trial.trial_id, trial.status == _kt.TrialStatus.COMPLETED, trial.score, restored=restored)

    def _nothing_to_hand_out(self, tuner_id: str) -> bool:
        """The oracle would answer STOPPED: the budget is spent, nothing to resume or retry."""
        oracle = self.oracle
        return _kt.budget_spent(oracle) and tuner_id not in oracle.ongoing_trials and not _kt_state.has_queued(oracle)

    def _search_done(self) -> bool:
        oracle = self.oracle
        budget_spent = self.progress.exhausted or _kt.budget_spent(oracle)
        return budget_spent and not oracle.ongoing_trials and not _kt_state.has_queued(oracle)

    def _finish(self, state: str, message: str, bad_input: bool = False) -> None:
        if not self.progress.finish(state, message, bad_input):
            return
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
        if self.progress.message:
            metadata.append((SEARCH_MESSAGE_KEY, self.progress.message.encode("ascii", "replace").decode()))
        context.set_trailing_metadata(tuple(metadata))

    def _background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # the store logs a failure

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
            if self.stopping:  # the worker retries until the next chief answers
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the chief is stopping")
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
                resumed = self.leases.grant(trial.trial_id)
                if not resumed:
                    self.store.journal_start(trial, tuner_id)
                await self.store.commit()
                if self.on_trial_start is not None:
                    self.on_trial_start(trial, tuner_id if not resumed else f"{tuner_id} (resumed)")
                self._metadata(context)
                return _kt.pb.CreateTrialResponse(trial=self._protos.to_proto(trial))
            if trial is None or trial.status == _kt.TrialStatus.STOPPED:
                # STOPPED with budget left: the space, not the budget, ran out.
                self.progress.exhausted = self.progress.exhausted or not _kt.budget_spent(self.oracle)
                if self._search_done():
                    self._finish(*self.progress.conclusion())
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
        trial = self.oracle.trials.get(request.trial_id)
        if trial is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown trial_id={request.trial_id!r}")
        self.leases.renew(trial.trial_id)
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
        if self.oracle.trials.get(trial_id) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown trial_id={trial_id!r}")
        if trial_id in self._ended:
            self._metadata(context)
            return _kt.pb.EndTrialResponse()
        known = self.oracle.trials[trial_id]
        ended = self._protos.from_proto(request.trial, known)
        bad_input = dict(context.invocation_metadata() or ()).get(BAD_INPUT_KEY)  # no other trial would do better
        self._protos.forget(trial_id)
        _kt_state.unqueue(self.oracle, trial_id)  # its lease ran out and it was queued: it ends (end_trial re-queues a retry)
        if not known.metrics.exists(self.oracle.objective.name) and ended.metrics.exists(self.oracle.objective.name):
            known.metrics = ended.metrics  # an UpdateTrial that a restarted chief never saved
        self.oracle.end_trial(ended)
        self.leases.release(trial_id)
        trial = self.oracle.trials[trial_id]
        if trial.status in _TERMINAL:
            self._count_end(trial)
            self.store.journal_end(trial)
            if self.on_trial_end is not None:
                self.on_trial_end(trial)
        if bad_input is not None:
            self._finish("failed", bad_input, bad_input=True)
        elif self.progress.failed_too_often:
            count, limit = self.progress.consecutive_failures, self.progress.max_consecutive_failed_trials
            self._finish("failed", f"{count} consecutive trials failed (max_consecutive_failed_trials={limit}); last: trial {trial_id}")
        elif self._search_done():
            self._finish(*self.progress.conclusion())
        await self.store.commit()
        await self._notify()
        self._metadata(context)
        return _kt.pb.EndTrialResponse()

    async def GetTrial(self, request, context):  # noqa: N802
        trial = self.oracle.trials.get(request.trial_id)
        if trial is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown trial_id={request.trial_id!r}")
        self.leases.renew(trial.trial_id)
        self._metadata(context)
        return _kt.pb.GetTrialResponse(trial=self._protos.to_proto(trial))

    async def GetBestTrials(self, request, context):  # noqa: N802
        trials = self.oracle.get_best_trials(request.num_trials)
        self._metadata(context)
        return _kt.pb.GetBestTrialsResponse(trials=[t.to_proto() for t in trials])

    # ----- lifecycle -----------------------------------------------------

    async def _reap_leases(self) -> None:
        """Send trials whose workers went silent to the next free worker."""
        while self.state == "running":
            await asyncio.sleep(self.leases.period)
            expired = self.leases.expired(self.oracle.ongoing_trials.items())
            for tuner, trial in expired:
                del self.oracle.ongoing_trials[tuner]
                self.leases.release(trial.trial_id)
                _kt_state.requeue(self.oracle, trial.trial_id)
                log.warning("trial %s: worker %s silent for %.0fs (lease_seconds=%g); the trial goes to the next free worker",
                            trial.trial_id, tuner, self.leases.seconds, self.leases.seconds)  # fmt: skip
            if expired:
                await self.store.commit()
                await self._notify()
            elif self.store.pending():
                self._background(self.store.commit(oracle=False))  # UpdateTrial's metrics, when nothing else wrote them

    async def start(self, host: str, port: int) -> grpc.aio.Server:
        """Bind `host:port` (port 0: any free one, then in `self.port`) and start serving.

        Raises:
            OSError: the port is taken or the address is not local.
        """
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
        if self.progress.restored_failure is not None:
            self._finish("failed", self.progress.restored_failure)
        elif self._search_done() and self.oracle.trials:
            self._finish(*self.progress.conclusion())
        return server

    def stop(self, signal_name: str | None = None) -> None:
        """End serving without a verdict (call on the loop); `wait()` saves the state, `status.json` says stopped by `signal_name`."""
        if signal_name is not None:
            self.progress.stop(signal_name)
        self.stopping = True
        if self._finished is not None:
            self._finished.set()

    async def wait(self, linger_seconds: float = 1.0) -> None:
        """Block until the search ends (or `stop()`), answer the waiting workers, stop."""
        assert self._finished is not None
        await self._finished.wait()
        await self.store.commit()
        await self._notify()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Workers between two RPCs learn the end on their next call; after
        # this the shared volume's status.json tells the late ones.
        await asyncio.sleep(0.0 if self.stopping else linger_seconds)
        self._reaper.cancel()
        await self._server.stop(grace=0.5)
        await self.store.commit()  # anything the last answers changed
        self.store.close()
        self.store.flush_now()  # the final status.json, whatever its schedule
