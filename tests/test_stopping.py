"""Stopping is safe (issue 12): real processes, real signals at chosen moments, each test bounded in time.

- SIGTERM (or SIGHUP) to `tunectl local`: within 10 s no process below it is
  left (read from /proc), exit 143 (129), the chief's lease released; SIGKILL
  to it: its children stop by themselves all the same (parent-death signal).
- SIGTERM to one worker, six times, at random moments of its epochs and once
  inside a backup write (held open by `TUNER_TEST_BACKUP_PAUSE_SECONDS`):
  every trial completes, no finished epoch is trained again, results.json
  holds each trial once.
- (A torn backup, truncated on purpose: `test_faults.py`, 2b.)
- A worker that crash-loops and retires: the chief still completes the
  search, writes results.json, and the launcher exits with its verdict.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from helpers import free_port, small_config, trial_files
from test_faults import assert_results_once, events
from tuner_job import stopping

pytestmark = pytest.mark.slow


# ----- /proc --------------------------------------------------------------------


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
    return out


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now: children, grandchildren..."""
    parents = _parents()
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _cmdline(pid: int) -> str:
    """The command line of `pid`, with its tuner id and kernel state (what a process left running was doing)."""
    proc = Path(f"/proc/{pid}")
    try:
        line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
        environ = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
        state = next((s for s in (proc / "status").read_text().splitlines() if s.startswith("State:")), "")
        return f"{line} [{environ.get(b'KERASTUNER_TUNER_ID', b'-').decode()}; {state}; wchan {(proc / 'wchan').read_text()}]"
    except OSError:
        return "?"


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


# ----- tunectl local as a user runs it -------------------------------------------


class Launcher:
    """`python -m cluster local ...` with its output read line by line."""

    def __init__(self, args: list[str], cwd: Path, **env: str):
        environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", COLUMNS="250", **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "local", *args],
            env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, pattern: str, timeout: float, start: int = 0) -> tuple[int, re.Match[str]]:
        """The first line from index `start` on matching `pattern`, and its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(start, len(self.lines)):
                match = re.search(pattern, self.lines[index])
                if match:
                    return index, match
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r} within {timeout}s:\n" + "".join(self.lines[-80:]))

    def pids(self, name: str) -> list[int]:
        return [int(m.group(1)) for line in list(self.lines) if (m := re.match(rf"\s*{name} \| started \(pid (\d+)\)", line))]

    def finish(self, pids: set[int]) -> None:
        """Kill whatever a failed test left running (the launcher and every pid it had below it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _local_args(config: Path, shared: Path, *extra: str) -> list[str]:
    return ["--config", str(config), "--workers", "2", "--shared-dir", str(shared), *extra]


def _write_config(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(small_config(**overrides)))
    return path


# ----- 1. the launcher stopped by a signal ---------------------------------------


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_tunectl_local_stopped_leaves_no_process_behind(shared: Path, tmp_path: Path, how: str) -> None:
    config = _write_config(tmp_path, run="stop", max_trials=50, epochs=5)
    stacks = tmp_path / "stacks.txt"  # SIGUSR1 to a process left behind writes its threads' stacks here
    launcher = Launcher(_local_args(config, shared, "--tensorboard-port", str(free_port())), tmp_path, TUNER_STACK_DUMP=str(stacks))
    below: set[int] = set()
    try:
        launcher.wait_line(r"tuner\d \| .*trial \S+ epoch 1/5", 180)
        launcher.wait_line(r"tensorboard \| started", 5)
        below = descendants(launcher.proc.pid)
        named = {pid for name in ("chief", "tuner0", "tuner1", "tensorboard") for pid in launcher.pids(name)}
        assert named <= below and len(below) >= 5, (named, below)  # + the chief's state writer
        # SIGTERM, SIGHUP: the launcher stops its children (SIGKILL after its 8 s grace), within 10 s.
        # SIGKILL: each child stops by itself on its parent-death signal, at once; its hard exit
        # (stopping.HARD_EXIT_AFTER, + DEFERRED_LIMIT for a backup under way) bounds it whatever it is doing.
        bound = stopping.HARD_EXIT_AFTER + stopping.DEFERRED_LIMIT + 5 if how == "SIGKILL" else 10
        sent = time.monotonic()
        launcher.proc.send_signal(getattr(signal, how))
        code = launcher.proc.wait(15)
        while time.monotonic() - sent < bound and any(alive(pid) for pid in below):
            time.sleep(0.1)
        took = time.monotonic() - sent
        left = {pid: _cmdline(pid) for pid in sorted(below) if alive(pid)}
        print(f"{how}: every process below tunectl local gone {took:.1f}s after the signal")
        if left:
            for pid in left:
                os.kill(pid, signal.SIGUSR1)
            time.sleep(1)
            dumped = stacks.read_text() if stacks.exists() else "(no stacks written)"
            pytest.fail(f"{how}: still running after {took:.0f}s: {left}\n{launcher.output[-4000:]}\nstacks:\n{dumped[-6000:]}")
        if how != "SIGKILL":
            assert code == 128 + getattr(signal, how), launcher.output[-4000:]  # 143, 129
            assert f"{how}: stopping every process" in launcher.output
        else:
            assert code == -signal.SIGKILL
        # The chief stopped as a chief should: its lease released, so the next one need not wait.
        lease = json.loads(sorted((shared / "runs" / "stop" / "chief-lease").glob("epoch-*.json"))[-1].read_text())
        assert lease["released"] is True and lease["pid"] == launcher.pids("chief")[0], lease
    finally:
        launcher.finish(below)


# ----- 2. one worker stopped six times -------------------------------------------


def test_sigterm_six_times_to_one_worker_loses_no_epoch(shared: Path, tmp_path: Path, slow_model: str) -> None:
    run = "six"
    config = _write_config(tmp_path, run=run, hypermodel=slow_model, epochs=3, max_trials=5, lease_seconds=120)
    # One worker, so that the search waits for it. Each epoch: two batches of
    # 0.3 s, then a backup held open for 0.8 s (the window for signal 3).
    args = ["--config", str(config), "--workers", "1", "--shared-dir", str(shared), "--tensorboard-port", "0"]
    launcher = Launcher(args, tmp_path, FAULT_SLEEP="0.3", TUNER_TEST_BACKUP_PAUSE_SECONDS="0.8")
    run_dir = shared / "runs" / run
    rng = random.Random(12)
    below: set[int] = set()
    try:
        cursor = 0
        for round_ in range(6):
            # Training: an epoch of this attempt has ended (the 1st of a trial before signal 3).
            pattern = r"tuner0 \| .*trial (\S+) epoch 1/3" if round_ == 2 else r"tuner0 \| .*trial (\S+) epoch \d/3"
            cursor, training = launcher.wait_line(pattern, 240, cursor)
            trial_id = training.group(1)
            below |= descendants(launcher.proc.pid)
            pid = launcher.pids("tuner0")[-1]
            if round_ == 2:
                # Into the next backup write of this trial: wait for its temp folder, then signal.
                folder = run_dir / "backup" / f"trial_{trial_id}" / "execution_0"
                before = {p.name for p in folder.glob("epoch-*")}
                deadline = time.monotonic() + 60
                while not list(folder.glob(".epoch-*.tmp")) and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert list(folder.glob(".epoch-*.tmp")), "no backup write seen"
                os.kill(pid, signal.SIGTERM)
                cursor, _ = launcher.wait_line(r"tuner0 \| exited with code 143", 60, cursor)
                published = sorted({p.name for p in folder.glob("epoch-*")} - before)
                assert published == ["epoch-00001"], f"the backup being written when SIGTERM came was not finished: {before}"
                launcher.wait_line(rf"tuner0 \| .*SIGTERM came during the backup of epoch 2 \(.*trial_{re.escape(trial_id)}/", 5)
                cursor, _ = launcher.wait_line(rf"tuner0 \| .*trial {re.escape(trial_id)} resumes after epoch 2 of 3", 240, cursor)
                continue
            time.sleep(rng.uniform(0.05, 1.5))  # a random moment of this epoch or the next
            os.kill(pid, signal.SIGTERM)
            cursor, _ = launcher.wait_line(r"tuner0 \| exited with code 143", 60, cursor)
        code = launcher.proc.wait(300)
        launcher.reader.join(10)
        output = launcher.output
        print("".join(line for line in launcher.lines if re.search(r"tuner0 \| .*(exited|started|stopped|resumes|start on)", line)))
        assert code == 0, output[-5000:]
        assert output.count("tuner0 | exited with code 143") == 6, output[-5000:]
        assert len(re.findall(r"tuner0 \| started \(pid \d+\), back after SIGTERM", output)) == 6
        assert "restart 1" not in output and "gave up" not in output, output[-5000:]
        trials = trial_files(run_dir)
        assert len(trials) == 5 and {t["status"] for t in trials.values()} == {"COMPLETED"}, trials
        assert not (run_dir / "errors").exists(), list((run_dir / "errors").iterdir())
        finished = Counter((e["trial"], e["epoch"]) for e in events(run_dir, "epoch"))
        again = {key: n for key, n in finished.items() if n > 1}
        assert not again, f"epochs trained again after they were backed up: {again}"
        assert_results_once(run_dir, 5)
        left = [pid for pid in below if alive(pid)]
        assert not left, left
    finally:
        launcher.finish(below)


# ----- 3. a worker retired: the chief's verdict still stands ----------------------


def test_a_completed_search_leaves_its_results_whatever_a_worker_did(shared: Path, tmp_path: Path, slow_model: str) -> None:
    config = _write_config(tmp_path, run="verdict", hypermodel=slow_model, epochs=2, max_trials=5, lease_seconds=6)
    launcher = Launcher(_local_args(config, shared, "--tensorboard-port", "0", "--max-restarts", "0"), tmp_path,
                        FAULT_CRASH_TUNER="tuner1", FAULT_SLEEP="0.5")  # fmt: skip
    below: set[int] = set()
    try:
        launcher.wait_line(r"tuner1 \| exited with code 70", 240)
        below = descendants(launcher.proc.pid)
        code = launcher.proc.wait(300)
        launcher.reader.join(10)
        output = launcher.output
        assert output.count("tuner1 | exited with code 70") == 1 and "tuner1 | started" in output, output[-5000:]  # retired
        assert code == 0, output[-5000:]
        assert "stopping the chief" not in output, output[-5000:]
        run_dir = shared / "runs" / "verdict"
        document = assert_results_once(run_dir, 5)
        assert document["state"] == "completed" and {t["status"] for t in document["trials"]} == {"COMPLETED"}, document
        assert {t["worker"] for t in document["trials"]} == {"tuner0"}
    finally:
        launcher.finish(below)
