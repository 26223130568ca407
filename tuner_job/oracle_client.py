"""`OracleClient`: the worker's side of KerasTuner's gRPC protocol.

Mirrors the oracle's method names (`create_trial`, `update_trial`,
`end_trial`, `get_trial`) so the caller cannot tell local from remote, and
adds what the stock client lacks:

- It waits for an absent chief (workers may start first, or the chief may be
  restarting), logs that it does, and gives up with `ChiefUnreachableError`
  after `chief_wait_seconds` of silence.
- A chief that answers "preparing" (it waits for or decodes the dataset, see
  `chief_startup`) is there: that time does not count toward the deadline.
- It reads the search state from each response's trailing metadata. When the
  chief is gone, `status.json` on the shared volume says whether the search
  ended, so a late worker exits at once instead of waiting out the deadline.
- Its channel pings the chief (`keepalive`): a chief whose node vanished is
  noticed within about a minute, and the channel reconnects to its successor.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from tuner_job import _kt
from tuner_job.chief_startup import PREPARING
from tuner_job.errors import ChiefUnreachableError, SearchFailedError
from tuner_job.keepalive import client_options
from tuner_job.layout import RunPaths, read_json
from tuner_job.oracle_server import BAD_INPUT_KEY, SEARCH_MESSAGE_KEY, SEARCH_RUN_KEY, SEARCH_STATE_KEY

__all__ = ["OracleClient", "SearchEnded"]

log = logging.getLogger("tuner_job.worker")

_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000)]
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


class SearchEnded(Exception):
    """The search completed: the worker has nothing left to do."""


class OracleClient:
    """A worker's connection to the chief (see the module doc).

    Args:
        address: the chief's `host:port`.
        tuner_id: this worker's id, sent with CreateTrial.
        paths: the run (followed to the next run of a staged search).
        chief_wait_seconds: how long to wait for an absent chief before `ChiefUnreachableError`.
        rpc_timeout: seconds per RPC attempt.
        max_trials: this worker's budget: a completed run with a smaller one may be extended by a restarted chief.
    """

    def __init__(
        self,
        address: str,
        tuner_id: str,
        paths: RunPaths,
        chief_wait_seconds: float,
        rpc_timeout: float = 30.0,
        max_trials: int | None = None,
    ):
        self.address = address
        self.max_trials = max_trials  # this worker's config: a bigger budget revives a completed run
        self.tuner_id = tuner_id
        self.paths = paths
        self.chief_wait_seconds = chief_wait_seconds
        self.rpc_timeout = rpc_timeout
        self.search_state = "running"
        self.search_message = ""
        # gRPC backs off up to 120 s between reconnects: a worker that waited
        # for an absent chief would find it that late. Retry every second.
        self._channel = grpc.insecure_channel(address, options=[*_CHANNEL_OPTIONS, *client_options()])
        self._stub = _kt.pb_grpc.OracleStub(self._channel)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._channel.close()

    # ----- plumbing ------------------------------------------------------

    def _read_trailers(self, call: Any) -> None:
        for key, value in call.trailing_metadata() or ():
            if key == SEARCH_STATE_KEY:
                self.search_state = value
            elif key == SEARCH_MESSAGE_KEY:
                self.search_message = value
            elif key == SEARCH_RUN_KEY and value != self.paths.run:
                self._move_to(value)

    def _move_to(self, run: str) -> None:
        """A staged search went on to its next run: follow it."""
        log.info("the search moves on to run %s", run)
        self.paths = RunPaths(self.paths.shared_dir, run)

    def _ended_on_disk(self) -> bool:
        status = read_json(self.paths.status) or {}
        if status.get("state") == "completed" and status.get("next_run"):
            self._move_to(status["next_run"])  # a stage of a staged search ended; the next follows
            return False
        if status.get("state") == "completed" and self.max_trials is not None and self.max_trials > int(status.get("max_trials") or 0):
            # The run completed with a smaller budget: a chief restarted with
            # this config extends it, so wait for that chief instead of leaving.
            return False
        if status.get("state") in ("completed", "failed"):
            self.search_state, self.search_message = status["state"], status.get("message", "")
            return True
        return False

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        """One RPC, retried while the chief is away, up to `chief_wait_seconds`."""
        started = time.monotonic()
        last_log = 0.0
        preparing_logged = -math.inf
        while True:
            try:
                response, call = method.with_call(request, timeout=timeout or self.rpc_timeout, wait_for_ready=True, metadata=metadata)
                self._read_trailers(call)
                return response
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE:
                    raise
                if self._ended_on_disk():
                    self.raise_if_ended()
                details = exc.details() or ""
                if details.startswith(PREPARING):
                    # The chief is there, waiting for or decoding the dataset: not absent.
                    if time.monotonic() - preparing_logged >= 30:
                        log.info("the chief at %s is preparing (%s)", self.address, details.removeprefix(PREPARING).strip())
                        preparing_logged = time.monotonic()
                    started = time.monotonic()
                    time.sleep(1.0)
                    continue
                waited = time.monotonic() - started
                if waited >= self.chief_wait_seconds:
                    raise ChiefUnreachableError(
                        f"no answer from the chief at {self.address} for {waited:.0f}s (chief_wait_seconds={self.chief_wait_seconds:g})"
                    ) from None
                if waited - last_log >= 30 or last_log == 0.0:
                    log.info("waiting for the chief at %s (%.0fs so far)", self.address, waited)
                    last_log = max(waited, 1e-3)
                time.sleep(min(1.0, max(0.05, self.chief_wait_seconds - waited)))

    def raise_if_ended(self) -> None:
        if self.search_state == "failed":
            raise SearchFailedError(f"the search failed: {self.search_message}")
        if self.search_state == "completed":
            raise SearchEnded(self.search_message)

    def wait_for_chief(self) -> None:
        """Block until the chief answers (or the search has already ended)."""
        started = time.monotonic()
        if self._ended_on_disk():
            self.raise_if_ended()
        # Short attempts, so that the first "waiting for the chief" line comes early.
        self._call(self._stub.GetSpace, _kt.pb.GetSpaceRequest(), timeout=min(self.chief_wait_seconds, 2.0))
        waited = time.monotonic() - started
        if waited > 1:
            log.info("chief at %s answered after %.0fs", self.address, waited)

    # ----- the oracle's methods -----------------------------------------

    def create_trial(self) -> Any:
        response = self._call(self._stub.CreateTrial, _kt.pb.CreateTrialRequest(tuner_id=self.tuner_id), timeout=max(self.rpc_timeout, 60.0))
        return _kt.Trial.from_proto(response.trial)

    def update_trial(self, trial_id: str, metrics: dict[str, float], step: int = 0) -> Any:
        response = self._call(self._stub.UpdateTrial, _kt.pb.UpdateTrialRequest(trial_id=trial_id, metrics=metrics, step=step))
        return _kt.Trial.from_proto(response.trial)

    def end_trial(self, trial: Any, bad_input: str | None = None) -> None:
        """Report a trial's end; `bad_input` (one line) says it showed the config to be wrong: the chief ends the search."""
        metadata = ((BAD_INPUT_KEY, bad_input.encode("ascii", "replace").decode()),) if bad_input else None
        self._call(self._stub.EndTrial, _kt.pb.EndTrialRequest(trial=trial.to_proto()), metadata=metadata)

    def get_trial(self, trial_id: str) -> Any:
        """Also the heartbeat: it renews the trial's lease on the chief."""
        response = self._call(self._stub.GetTrial, _kt.pb.GetTrialRequest(trial_id=trial_id))
        return _kt.Trial.from_proto(response.trial)
