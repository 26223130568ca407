"""`child_guard`: a child of a launcher killed by SIGKILL gets SIGTERM (real processes, no TensorFlow); how exits are read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.child_guard import guarded
from cluster.local_signals import FINAL, disruption
from helpers import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

# A stand-in for the launcher: starts one guarded child that notes SIGTERM in a file, prints its pid, and sleeps.
LAUNCHER = """
import subprocess, sys, time
from cluster.child_guard import guarded
child = [sys.executable, "-c", "import signal, sys, time\\n"
         "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').write('SIGTERM'), sys.exit(143)))\\n"
         "time.sleep(120)", sys.argv[1]]
proc = subprocess.Popen(guarded(child))
print(proc.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_a_guarded_child_gets_sigterm_when_its_launcher_is_killed(tmp_path: Path) -> None:
    note = tmp_path / "note"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(note)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        child = int(launcher.stdout.readline())
        deadline = time.monotonic() + 30
        while "-c" not in Path(f"/proc/{child}/cmdline").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the guard has exec'd the child (same pid)
        time.sleep(0.5)
        assert _alive(child)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its launcher"
        assert note.read_text() == "SIGTERM"
    finally:
        if launcher.poll() is None:
            launcher.kill()


def test_a_guard_whose_launcher_is_already_gone_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"]
    argv = guarded(command)
    argv[3] = str(os.getpid() + 10**6)  # a parent that is not ours: it died before the guard asked
    result = subprocess.run(argv, cwd=REPO, timeout=60, check=False)
    assert result.returncode == 143 and not marker.exists()
    assert subprocess.run(guarded(command), cwd=REPO, timeout=60, check=False).returncode == 0 and marker.read_text() == "ran"


def test_exits_read_as_a_job_would() -> None:
    for code, name in ((143, "SIGTERM"), (-15, "SIGTERM"), (130, "SIGINT"), (-2, "SIGINT"), (129, "SIGHUP"), (-1, "SIGHUP")):
        assert disruption(code) == name
    for code in (0, 1, 2, 3, 4, 70, -9, 137):  # SIGKILL is the OOM killer's too: a crash, counted
        assert disruption(code) is None
    assert set(FINAL) == {0, 1, 2, 4}
