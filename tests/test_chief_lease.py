"""The chief's lease on its run, driven in-process with short leases: claim, watch, give up, take over, fence.

Holders here are real `ChiefLease` objects renewing on their threads, or the
files a dead one left; the volume is a local folder. The processes-and-signals
side (a second `python -m tuner_job` chief, kill -9, SIGSTOP) is in
`test_stopping.py`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tuner_job.chief_lease import ChiefLease, Fence, current_holder
from tuner_job.errors import RunHeldError
from tuner_job.layout import RunPaths

LEASE = 0.6  # seconds: renewed every 0.12 s


@pytest.fixture
def paths(tmp_path: Path) -> RunPaths:
    return RunPaths(tmp_path, "run1")


def test_a_free_run_is_claimed_with_epoch_1_and_renewed(paths: RunPaths) -> None:
    lease = ChiefLease(paths, LEASE, "10.0.0.5:8000")
    line = lease.acquire()
    try:
        assert lease.epoch == 1 and "holds it (epoch 1; it was free)" in line
        first = current_holder(paths.chief_lease)
        assert first is not None and (first.epoch, first.pid, first.address) == (1, os.getpid(), "10.0.0.5:8000")
        time.sleep(LEASE)
        later = current_holder(paths.chief_lease)
        assert later is not None and later.counter > first.counter, "the holder renews its file"
        assert lease.fence.newer() is None
    finally:
        lease.release()
    released = current_holder(paths.chief_lease)
    assert released is not None and released.released and released.epoch == 1


def test_a_second_chief_waits_a_lease_then_gives_up_naming_a_live_holder(paths: RunPaths) -> None:
    holder = ChiefLease(paths, LEASE, "chief-a:8000")
    holder.acquire()
    waits: list[str] = []
    try:
        started = time.monotonic()
        with pytest.raises(RunHeldError) as raised:
            ChiefLease(paths, LEASE, "chief-b:8000").acquire(on_wait=waits.append)
        waited = time.monotonic() - started
    finally:
        holder.release()
    message = str(raised.value)
    assert f"pid {os.getpid()}, address chief-a:8000, epoch 1" in message and "\n" not in message, message
    assert raised.value.exit_code == 2
    assert LEASE <= waited < 2 * LEASE + 1.0, waited  # one lease, at most two
    assert len(waits) == 1 and "is held by the chief on" in waits[0] and f"waiting up to {LEASE:g} s" in waits[0]
    assert [p.name for p in paths.chief_lease.glob("epoch-*.json")] == ["epoch-000001.json"], "the loser claims nothing"


def test_a_released_run_is_taken_at_once_with_the_next_epoch(paths: RunPaths) -> None:
    first = ChiefLease(paths, 30.0, "a:1")
    first.acquire()
    first.release()
    second = ChiefLease(paths, 30.0, "b:1")
    started = time.monotonic()
    line = second.acquire()
    second.release()
    assert time.monotonic() - started < 5, "a released lease needs no waiting"
    assert second.epoch is None and "epoch 2; it was released by the chief on" in line


def test_a_dead_holder_is_taken_over_after_one_lease_and_the_zombie_is_fenced(paths: RunPaths) -> None:
    dead = ChiefLease(paths, LEASE, "dead:1")
    dead.acquire()
    dead._stop.set()  # its process "died": no more renewals, nothing released
    dead._thread.join()
    stale = current_holder(paths.chief_lease)
    started = time.monotonic()
    successor = ChiefLease(paths, LEASE, "next:1")
    line = successor.acquire()
    try:
        waited = time.monotonic() - started
        assert LEASE <= waited < LEASE + 2.0, waited
        assert successor.epoch == 2 and "took it over from the chief on" in line and "epoch 1" in line, line
        # The old holder, were it only paused, now finds a newer epoch before any write.
        newer = Fence(str(paths.chief_lease), 1, paths.run).newer()
        assert newer is not None and newer.epoch == 2 and newer.address == "next:1"
        assert successor.fence.newer() is None
        assert stale is not None and not stale.released  # it was not let go: the lease ran out
    finally:
        successor.release()


def test_two_contenders_for_a_dead_holder_never_both_win(paths: RunPaths) -> None:
    dead = ChiefLease(paths, LEASE, "dead:1")
    dead.acquire()
    dead._stop.set()
    dead._thread.join()
    outcomes: dict[str, object] = {}

    def contend(name: str) -> None:
        lease = ChiefLease(paths, LEASE, f"{name}:1")
        try:
            lease.acquire()
            outcomes[name] = lease
        except RunHeldError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=contend, args=(n,)) for n in ("b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [v for v in outcomes.values() if isinstance(v, ChiefLease)]
    try:
        assert len(outcomes) == 2 and len(winners) == 1, outcomes
        assert isinstance(next(v for v in outcomes.values() if not isinstance(v, ChiefLease)), RunHeldError)
        assert winners[0].epoch == 2 and sorted(p.name for p in paths.chief_lease.glob("epoch-*.json"))[-1] == "epoch-000002.json"
    finally:
        for winner in winners:
            winner.release()


def test_an_unreadable_holder_file_is_taken_over_once_it_stays_so_for_a_lease(paths: RunPaths) -> None:
    paths.chief_lease.mkdir(parents=True)
    (paths.chief_lease / "epoch-000004.json").write_text('{"host": "a", "pid"')  # torn by hand, not by us
    lease = ChiefLease(paths, LEASE, "b:1")
    line = lease.acquire()
    lease.release()
    assert "epoch 5" in line, line
    assert json.loads((paths.chief_lease / "epoch-000005.json").read_text())["released"] is True
