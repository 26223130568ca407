"""The oracle server's contract, over real gRPC on loopback, in one process.

Each test runs an `OracleServer` on its own event loop in a thread and talks to
it with KerasTuner's own stubs, as a stock worker would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from helpers import free_port  # noqa: E402
from tuner_job import _kt, _kt_state  # noqa: E402
from tuner_job.layout import RunPaths  # noqa: E402
from tuner_job.oracle_server import SEARCH_STATE_KEY, OracleServer  # noqa: E402


class Running:
    def __init__(self, tmp: Path, max_trials: int = 1, lease_seconds: float = 30, failures: int = 3, oracle: Any = None):
        if oracle is None:
            space = _kt.HyperParameters()
            space.Int("units", 1, 64)
            space.Choice("act", ["relu", "tanh"])
            oracle = _kt.make_oracle("random", objective="val_loss", max_trials=max_trials, epochs=1, seed=1, hyperparameters=space)
        self.server = OracleServer(
            oracle, RunPaths(tmp, "r"), lease_seconds=lease_seconds, max_consecutive_failed_trials=failures, idle_wait_seconds=1.0
        )
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def main() -> None:
            await self.server.start("127.0.0.1", self.port)
            started.set()
            await self.server.wait(linger_seconds=0.2)

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        assert started.wait(10)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = _kt.pb_grpc.OracleStub(self.channel)

    def create(self, tuner: str) -> tuple[Any, str]:
        response, call = self.stub.CreateTrial.with_call(_kt.pb.CreateTrialRequest(tuner_id=tuner), timeout=10)
        state = dict(call.trailing_metadata())[SEARCH_STATE_KEY]
        return _kt.Trial.from_proto(response.trial), state

    def end(self, trial: Any, status: str = "COMPLETED", loss: float | None = None) -> None:
        if loss is not None:
            if not trial.metrics.exists("val_loss"):
                trial.metrics.register("val_loss", direction="min")
            trial.metrics.update("val_loss", loss, step=1)
        trial.status = status
        self.stub.EndTrial(_kt.pb.EndTrialRequest(trial=trial.to_proto()), timeout=10)

    def close(self) -> None:
        self.channel.close()
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server._finish, "completed", "test over")
        self.thread.join(10)


def test_health_and_the_end_trial_metrics_fallback(running) -> None:
    r = running(max_trials=2)
    health = health_pb2_grpc.HealthStub(r.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="keras_tuner.Oracle"), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    trial, state = r.create("tuner0")
    assert trial.status == "RUNNING" and state == "running"
    # No UpdateTrial reached the chief (say it restarted): EndTrial's metrics count.
    r.end(trial, loss=0.5)
    assert r.server.oracle.trials[trial.trial_id].score == pytest.approx(0.5)


def test_end_trial_is_idempotent_and_unknown_ids_are_not_found(running) -> None:
    r = running(max_trials=3)
    trial, _ = r.create("tuner0")
    r.end(trial, loss=1.0)
    r.end(trial, loss=0.1)  # a late duplicate: acknowledged, ignored
    assert r.server.progress.scoreboard.completed == 1
    assert r.server.oracle.trials[trial.trial_id].score == pytest.approx(1.0)
    with pytest.raises(grpc.RpcError) as info:
        r.stub.GetTrial(_kt.pb.GetTrialRequest(trial_id="nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_same_tuner_gets_its_trial_back_and_no_stop_while_in_flight(running) -> None:
    r = running(max_trials=1)
    trial, _ = r.create("tuner0")
    again, _ = r.create("tuner0")  # a restarted worker with the same id
    assert again.trial_id == trial.trial_id
    started = time.monotonic()
    other, state = r.create("tuner1")  # budget spent, but trial 0 may still come back
    assert other.status == "IDLE" and state == "running"
    assert time.monotonic() - started >= 0.9, "IDLE was answered at once: workers would busy-poll"
    r.end(trial, loss=1.0)
    stopped, state = r.create("tuner1")
    assert stopped.status == "STOPPED" and state == "completed"


def test_expired_lease_sends_the_trial_to_the_next_worker(running) -> None:
    r = running(max_trials=1, lease_seconds=0.5)
    trial, _ = r.create("tuner0")
    time.sleep(1.5)  # tuner0 says nothing
    taken, _ = r.create("tuner1")
    assert taken.trial_id == trial.trial_id
    assert r.server.oracle.ongoing_trials["tuner1"].trial_id == trial.trial_id
    time.sleep(1.5)  # and tuner1 goes silent too: the reaper is still at work
    again, _ = r.create("tuner2")
    assert again.trial_id == trial.trial_id


def test_a_trial_ended_after_its_lease_ran_out_is_not_handed_out_again(running) -> None:
    """tuner0 goes silent past its lease (its trial is queued for the next
    worker), then ends the trial after all: the trial is done, once, and the
    next worker gets a new trial, not the ended one again."""
    r = running(max_trials=2, lease_seconds=0.5)
    trial, _ = r.create("tuner0")
    deadline = time.monotonic() + 30
    while not _kt_state.has_queued(r.server.oracle):
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.1)
    r.end(trial, loss=0.5)
    assert not _kt_state.has_queued(r.server.oracle)
    r.server.leases.seconds = 30  # from here on, no lease runs out under load
    nxt, _ = r.create("tuner1")
    assert nxt.status == "RUNNING" and nxt.trial_id != trial.trial_id
    assert r.server.oracle.trials[trial.trial_id].status == "COMPLETED"
    assert r.server.progress.scoreboard.completed == 1


def test_failure_limit_stops_the_search_without_raising(running) -> None:
    r = running(max_trials=10, failures=2)
    for tuner in ("tuner0", "tuner1"):
        trial, _ = r.create(tuner)
        r.end(trial, status="FAILED")
    stopped, state = r.create("tuner0")
    assert stopped.status == "STOPPED" and state == "failed"
    assert "2 consecutive trials failed" in r.server.progress.message


def _restored(tmp: Path, max_trials: int) -> tuple[OracleServer, list[str]]:
    space = _kt.HyperParameters()
    space.Int("units", 1, 64)
    space.Choice("act", ["relu", "tanh"])
    oracle = _kt.make_oracle("random", objective="val_loss", max_trials=max_trials, epochs=1, seed=1, hyperparameters=space)
    server = OracleServer(oracle, RunPaths(tmp, "r"), lease_seconds=30, max_consecutive_failed_trials=3)
    return server, server.restore()


@pytest.mark.parametrize("oracle_json", ["stale", "lost"])
def test_the_journal_restores_what_a_machine_crash_left_behind(running, tmp_path: Path, oracle_json: str) -> None:
    """A crash of the machine can lose what was written without an fsync:
    `oracle.json` and the trial checkpoints. The journal keeps every trial
    handed out (with its owner) and every result."""
    r = running(max_trials=5)
    done, _ = r.create("tuner0")
    r.end(done, loss=0.25)
    first, _ = r.create("tuner1")
    tuner_dir = tmp_path / "runs" / "r" / "tuner"
    stale = (tuner_dir / "oracle.json").read_text()  # knows tuner1's trial, not what follows
    second, _ = r.create("tuner2")
    r.close()
    (tuner_dir / "oracle.json").write_text(stale) if oracle_json == "stale" else (tuner_dir / "oracle.json").unlink()
    (tuner_dir / f"trial_{second.trial_id}" / "trial.json").unlink()  # its checkpoint never reached the disk
    (tuner_dir / f"trial_{done.trial_id}" / "trial.json").write_text("{")  # torn

    server, notes = _restored(tmp_path, max_trials=5)
    oracle = server.oracle
    assert {tuner: t.trial_id for tuner, t in oracle.ongoing_trials.items()} == {"tuner1": first.trial_id, "tuner2": second.trial_id}, notes
    assert oracle._retry_queue == []
    assert oracle.trials[done.trial_id].status == "COMPLETED" and oracle.trials[done.trial_id].score == pytest.approx(0.25)
    assert oracle.trials[second.trial_id].hyperparameters.values == second.hyperparameters.values
    assert server.progress.scoreboard.completed == 1
    assert any(f"trial {second.trial_id} stays with tuner2" in note for note in notes), notes
    assert any("recovered from the journal" in note for note in notes), notes


def test_a_stale_oracle_json_does_not_hand_out_a_trial_that_ended(running, tmp_path: Path) -> None:
    """oracle.json lags the journal: a trial that ended after its last save is
    listed there as running. The restored chief must not give it back to its
    old owner as if it still ran."""
    r = running(max_trials=5)
    first, _ = r.create("tuner0")
    second, _ = r.create("tuner1")
    tuner_dir = tmp_path / "runs" / "r" / "tuner"
    stale = (tuner_dir / "oracle.json").read_text()
    r.end(first, loss=0.5)
    r.close()
    (tuner_dir / "oracle.json").write_text(stale)

    server, notes = _restored(tmp_path, max_trials=5)
    oracle = server.oracle
    assert {tuner: t.trial_id for tuner, t in oracle.ongoing_trials.items()} == {"tuner1": second.trial_id}, notes
    assert first.trial_id in oracle.end_order and server.progress.scoreboard.completed == 1
    trial = oracle.create_trial("tuner0")
    assert trial.trial_id not in (first.trial_id, second.trial_id) and trial.status == "RUNNING"
