"""A chief that stops answering without closing its connections (its node died) is noticed in seconds.

A real chief process is paused with SIGSTOP: its sockets stay open, nothing
answers, no FIN and no RST, as when a node vanishes. The worker's client
(`OracleClient`, short keepalive values from the environment) must see the
connection die within a few ping intervals and fail a call in flight with
UNAVAILABLE (which it retries) instead of hanging until its deadline; while
the chief runs, its pings must be accepted (no GOAWAY `too_many_pings`).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest

from tuner_job import _kt
from tuner_job.errors import ConfigError
from tuner_job.keepalive import KEEPALIVE_ENV, KEEPALIVE_TIMEOUT_ENV, client_options, keepalive_seconds, server_options
from tuner_job.layout import RunPaths
from tuner_job.oracle_client import OracleClient

KEEPALIVE = {KEEPALIVE_ENV: "1", KEEPALIVE_TIMEOUT_ENV: "1"}


class States:
    """Connectivity changes of a channel, with the time each was seen."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.seen: list[tuple[float, grpc.ChannelConnectivity]] = []
        self.changed = threading.Condition()
        channel.subscribe(self._record, try_to_connect=False)

    def _record(self, state: grpc.ChannelConnectivity) -> None:
        with self.changed:
            self.seen.append((time.monotonic(), state))
            self.changed.notify_all()

    def settled_ready(self, timeout: float) -> bool:
        """Wait until the last change seen is READY and nothing else comes for half a second."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.changed:
                count = len(self.seen)
                ready = bool(self.seen) and self.seen[-1][1] == grpc.ChannelConnectivity.READY
                self.changed.wait(0.5)
                if ready and len(self.seen) == count:
                    return True
        return False

    def left_ready_after(self, since: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, state in self.seen:
                    if at >= since and state != grpc.ChannelConnectivity.READY:
                        return at - since
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)


@pytest.mark.slow
def test_workers_notice_a_paused_chief_within_a_few_pings(search, monkeypatch: pytest.MonkeyPatch) -> None:
    s = search(max_trials=2)
    s.start("chief", **KEEPALIVE)
    for name, value in KEEPALIVE.items():
        monkeypatch.setenv(name, value)
    client = OracleClient(f"127.0.0.1:{s.port}", "tuner0", RunPaths(s.shared, s.config["run"]), chief_wait_seconds=120)
    chief = s.procs["chief"]
    try:
        states = States(client._channel)
        client.wait_for_chief()
        # The oracle's server took the port over from the start-up health server: settle on it.
        client._stub.GetSpace(_kt.pb.GetSpaceRequest(), timeout=10)
        assert states.settled_ready(10), states.seen
        # Idle, the client pings every second; the chief accepts it (else GOAWAY too_many_pings drops the connection).
        calm = time.monotonic()
        assert states.left_ready_after(calm, 6) is None, f"the connection dropped while the chief ran: {states.seen}"

        os.kill(chief.pid, signal.SIGSTOP)
        paused = time.monotonic()
        noticed = states.left_ready_after(paused, 30)
        assert noticed is not None, f"the client never noticed the paused chief: {states.seen}"
        assert noticed < 15, noticed

        # A call in flight on a dead connection fails fast (UNAVAILABLE, which the client retries),
        # instead of waiting out its 60 s deadline.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            client._stub.CreateTrial(_kt.pb.CreateTrialRequest(tuner_id="tuner0"), timeout=60, wait_for_ready=False)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 15

        os.kill(chief.pid, signal.SIGCONT)
        trial = client.create_trial()  # reconnects and goes on
        assert trial.trial_id
    finally:
        if chief.poll() is None:
            os.kill(chief.pid, signal.SIGCONT)
        client.close()


def test_keepalive_values_come_from_the_environment() -> None:
    assert keepalive_seconds({}) == (30.0, 20.0)
    assert dict(client_options({KEEPALIVE_ENV: "2", KEEPALIVE_TIMEOUT_ENV: "3"}))["grpc.keepalive_time_ms"] == 2000
    client = dict(client_options({}))
    server = dict(server_options({}))
    assert client["grpc.keepalive_permit_without_calls"] == server["grpc.keepalive_permit_without_calls"] == 1
    # The server accepts pings at least as often as the client sends them, and every 5 s whatever its own setting.
    assert server["grpc.http2.min_recv_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
    assert dict(server_options({KEEPALIVE_ENV: "600"}))["grpc.http2.min_recv_ping_interval_without_data_ms"] == 5000
    with pytest.raises(ConfigError, match=KEEPALIVE_ENV):
        keepalive_seconds({KEEPALIVE_ENV: "soon"})

