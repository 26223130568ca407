"""Two chiefs on one run (issue 12): real `python -m tuner_job` chiefs, kill -9 and SIGSTOP at chosen moments.

- A second chief finds the first alive: one line, one lease of waiting, exit 2
  naming it, nothing written.
- The first killed (-9): a new chief takes over once the lease ran out, with
  the next epoch, and the search completes with every trial once.
- The first paused (SIGSTOP) past its lease while another took over and
  finished the search, then resumed (SIGCONT): it stops at once (exit 4) and
  no file of the run changes.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import trial_files
from test_faults import assert_exited, assert_results_once, events, wait_epoch

pytestmark = pytest.mark.slow

LEASE = 4  # chief_lease_seconds: renewed every 0.8 s


def _epochs(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "chief-lease").glob("epoch-*.json"))]


def _snapshot(run_dir: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of the run: (mtime_ns, size, sha1)."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(run_dir))] = (path.stat().st_mtime_ns, path.stat().st_size, hashlib.sha1(path.read_bytes()).hexdigest())
    return out


def test_a_second_chief_gives_up_and_a_successor_takes_over_after_a_kill(search, slow_model) -> None:
    s = search(hypermodel=slow_model, epochs=2, max_trials=4, chief_lease_seconds=LEASE, lease_seconds=120)
    first = s.start("chief")
    s.wait_for(lambda: "oracle serving" in s.log("chief"), 120, "the first chief to serve")

    # A second chief on the same run (another release, another port): it names the first and leaves.
    other = search(**s.config)
    second = other.start("chief")
    assert other.wait("chief", 180) == 2, other.log("chief")[-3000:]
    assert first.poll() is None, s.log("chief")[-3000:]
    log = other.log("chief")
    waits = [line for line in log.splitlines() if "is held by the chief on" in line]
    assert len(waits) == 1 and f"pid {first.pid}, address 127.0.0.1:{s.port}, epoch 1" in waits[0], log[-3000:]
    assert f"waiting up to {LEASE} s" in waits[0]
    (error,) = [line for line in log.splitlines() if line.startswith("error: ")]
    assert "run t is held by another chief: the chief on" in error and f"pid {first.pid}, address 127.0.0.1:{s.port}" in error, error
    assert "oracle serving" not in log and second.pid not in {e["pid"] for e in _epochs(s.run_dir)}
    assert [e["epoch"] for e in _epochs(s.run_dir)] == [1]

    # Its search goes on.
    s.start("tuner0", FAULT_SLEEP="0.4")
    s.start("tuner1", FAULT_SLEEP="0.4")
    wait_epoch(s, "tuner0", 0)
    # The first dies without a word; a successor on its port takes the run over once the lease ran out.
    s.kill("chief")
    killed = time.monotonic()
    successor = s.start("chief")
    codes = s.wait_all(240)
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()
    took_over = s.logs["chief"][-1].read_text()
    match = re.search(rf"took it over from the chief on \S+ \(pid {first.pid}, .*epoch 1\), which did not renew its lease for (\d+) s; "
                      r"this chief holds epoch 2", took_over)  # fmt: skip
    assert match and int(match.group(1)) >= LEASE, took_over[-3000:]
    print(f"successor took over {time.monotonic() - killed:.1f}s after the kill (lease {LEASE}s)")
    lease = _epochs(s.run_dir)[-1]
    assert (lease["epoch"], lease["pid"], lease["released"]) == (2, successor.pid, True), lease
    starts = Counter(e["trial"] for e in events(s.run_dir, "start"))
    trials = trial_files(s.run_dir)
    assert sorted(starts) == sorted(trials) and set(starts.values()) == {1}, starts  # no trial trained twice
    assert {t["status"] for t in trials.values()} == {"COMPLETED"}
    assert_results_once(s.run_dir, 4)
    assert_exited(s)


def test_a_paused_chief_that_lost_its_lease_stops_and_writes_nothing(search, slow_model) -> None:
    s = search(hypermodel=slow_model, epochs=2, max_trials=3, chief_lease_seconds=LEASE, lease_seconds=120)
    paused = s.start("chief")
    s.start("tuner0", FAULT_SLEEP="0.4")
    s.start("tuner1", FAULT_SLEEP="0.4")
    wait_epoch(s, "tuner0", 0)
    paused.send_signal(signal.SIGSTOP)
    try:
        s.kill("tuner0")  # cut off with it
        s.kill("tuner1")
        # Another chief (another port) takes the run over once the lease ran out, with workers of its own.
        other = search(**s.config)
        other.start("chief")
        other.start("tuner0", FAULT_SLEEP="0.4")
        other.start("tuner1", FAULT_SLEEP="0.4")
        assert other.wait_all(240) == {"chief": 0, "tuner0": 0, "tuner1": 0}, other.all_logs()
        assert "took it over from the chief on" in other.log("chief"), other.log("chief")[-3000:]
        before = _snapshot(s.run_dir)
        assert_results_once(s.run_dir, 3)
    finally:
        paused.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    code = s.wait("chief", 60)
    took = time.monotonic() - resumed
    print(f"the resumed chief stopped {took:.1f}s after SIGCONT with exit {code}")
    log = s.log("chief")
    assert code == 4, log[-3000:]
    (error,) = [line for line in log.splitlines() if line.startswith("error: ")]
    assert re.search(r"run t was taken over by the chief on \S+ \(pid \d+, address 127\.0\.0\.1:\d+, epoch 2\); "
                     r"this chief \(epoch 1\) stops serving and writes nothing more", error), error  # fmt: skip
    after = _snapshot(s.run_dir)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the fenced chief wrote after the takeover: {changed}"
    assert [e["epoch"] for e in _epochs(s.run_dir)] == [1, 2]
    assert_results_once(s.run_dir, 3)
