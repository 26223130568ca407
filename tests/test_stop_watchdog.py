"""The stop watchdog (`stopping.install(hard_exit_after=...)`): a process whose `Stopped` is swallowed still exits.

A worker whose launcher died gets one SIGTERM (its parent-death signal) and no
SIGKILL after it: if that one `Stopped` is lost (raised inside a finaliser, or
caught by a library's `except BaseException`), nothing else would end it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from helpers import REPO

SWALLOWS = """
import time
from tuner_job import stopping
stopping.install(hard_exit_after={after})
deadline, ready = time.monotonic() + {runs}, False
while time.monotonic() < deadline:
    try:
        if not ready:
            print("ready", flush=True)
            ready = True
        time.sleep(0.05)
    except BaseException:  # a library that swallows everything, our Stopped included
        pass
print("never stopped", flush=True)
"""


def _stop(script: str, settle: float = 0.0) -> tuple[int, float, str]:
    """Start `script`, SIGTERM it `settle` seconds after it prints `ready`: (exit code, seconds from the signal to the exit, output)."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(settle)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return code, time.monotonic() - sent, proc.stdout.read()


def _run(after: str, runs: float) -> tuple[int, float, str]:
    return _stop(SWALLOWS.format(after=after, runs=runs))


def test_a_swallowed_stop_still_exits_143_after_the_hard_exit_delay() -> None:
    code, took, output = _run("1.0", runs=60)
    assert code == 143, output
    assert 0.9 <= took < 20, took
    assert "SIGTERM: still running 1s later; exiting now" in output and "never stopped" not in output


def test_without_the_watchdog_a_swallowed_stop_is_lost() -> None:
    """The control: the same process with no watchdog (how tests install it in-process) keeps running."""
    code, took, output = _run("None", runs=3)
    assert code == 0 and "never stopped" in output, output


def test_the_watchdog_lets_a_backup_being_written_finish() -> None:
    """Inside `deferred()` (an epoch's backup) the hard exit waits for the block's end, as SIGTERM itself does."""
    script = """
import time
from tuner_job import stopping
stopping.install(hard_exit_after=0.5)
try:
    with stopping.deferred():
        print("ready", flush=True)
        time.sleep(3)
        print("backup whole", flush=True)
except BaseException:
    pass
time.sleep(60)
"""
    code, took, output = _stop(script)
    assert code == 143 and "backup whole" in output and took >= 2.5, output


def test_the_watchdog_starts_while_the_main_thread_is_stuck_in_c() -> None:
    """A main thread inside a C call (TensorFlow's, a blocked write) never runs the Python handler: the countdown starts anyway.

    The main thread blocks SIGTERM, so the kernel hands it to another thread and
    `time.sleep` in the main thread is never interrupted: Python's C handler
    runs, the Python one would wait the whole 60 s.
    """
    script = """
import signal, time
from tuner_job import stopping
stopping.install(hard_exit_after=1.0, deferred_limit=1.0)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
time.sleep(60)
print("never stopped", flush=True)
"""
    code, took, output = _stop(script, settle=0.5)  # the main thread in its sleep: it runs no Python handler now
    assert code == 143 and "never stopped" not in output, output
    assert 0.9 <= took < 20, took


def test_a_backup_that_never_ends_does_not_hold_the_hard_exit_forever() -> None:
    """The hard exit waits for a `deferred()` write at most `deferred_limit` seconds more (a hung write, a stuck volume)."""
    script = """
import time
from tuner_job import stopping
stopping.install(hard_exit_after=0.5, deferred_limit=1.0)
try:
    with stopping.deferred():
        print("ready", flush=True)
        time.sleep(60)
except BaseException:
    pass
"""
    code, took, output = _stop(script)
    assert code == 143 and "a backup was still being written" in output, output
    assert 1.4 <= took < 20, took


def test_sigusr1_writes_every_threads_stack_and_the_process_goes_on(tmp_path) -> None:
    """`kill -USR1` on a process that seems stuck shows where each thread is (`$TUNER_STACK_DUMP`), and does not stop it."""
    stacks = tmp_path / "stacks.txt"
    script = """
import threading, time
from tuner_job import stopping
stopping.install(hard_exit_after=5.0)
def waiting_in_a_helper_thread():
    time.sleep(60)
threading.Thread(target=waiting_in_a_helper_thread, daemon=True).start()
def sleeping_in_the_main_thread():
    print("ready", flush=True)
    time.sleep(60)
try:
    sleeping_in_the_main_thread()
except stopping.Stopped as stop:
    raise SystemExit(stop.exit_code)
"""
    env = dict(os.environ, TUNER_STACK_DUMP=str(stacks))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "sleeping_in_the_main_thread" not in (stacks.read_text() if stacks.exists() else ""):
            time.sleep(0.1)
        text = stacks.read_text()
        assert "sleeping_in_the_main_thread" in text and "waiting_in_a_helper_thread" in text, text
        assert proc.poll() is None, "SIGUSR1 stopped the process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_swallowed_stop_is_raised_again_where_the_worker_checks() -> None:
    """`raise_if_stopped` (after each batch, before each trial) raises a `Stopped` that a finaliser or a library lost.

    The watchdog is off here, so only the check can end the loop; outside a
    `deferred()` block and an `on_signal()` callback only.
    """
    script = """
import os, signal, time
from tuner_job import stopping
stopping.install(hard_exit_after=None)
stopping.raise_if_stopped()  # no signal yet: nothing
print("ready", flush=True)
try:
    time.sleep(60)
except BaseException:  # a library's catch-all, or a finaliser: the stop is lost here
    pass
with stopping.on_signal(lambda signum: None):
    stopping.raise_if_stopped()  # a callback owns the stop: nothing
with stopping.deferred():
    stopping.raise_if_stopped()  # a backup being written: nothing (it is let finish)
    print("inside deferred: not raised", flush=True)
for batch in range(100):
    try:
        stopping.raise_if_stopped()
    except stopping.Stopped as stop:
        print(f"raised again at batch {batch}", flush=True)
        raise SystemExit(stop.exit_code)
print("never stopped", flush=True)
"""
    code, took, output = _stop(script, settle=0.3)
    assert code == 143 and took < 20, output
    assert output.splitlines() == ["inside deferred: not raised", "raised again at batch 0"], output


def test_the_hard_exit_does_not_depend_on_stderr() -> None:
    """A launcher killed outright leaves its children's stderr a pipe nobody reads: the exit's message fails, the exit must not."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SWALLOWS.format(after="0.5", runs=60)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert proc.stderr is not None
        proc.stderr.close()  # the reader is gone: a write to stderr now fails with a broken pipe
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert code == 143 and time.monotonic() - sent < 20, code


def test_a_forked_childs_signal_does_not_wake_the_parents_watchdog() -> None:
    """A SIGTERM to a forked child (a multiprocessing pool's worker) is the child's: the parent goes on."""
    script = """
import os, signal, time
from tuner_job import stopping
stopping.install(hard_exit_after=0.5)
child = os.fork()
if child == 0:
    try:
        time.sleep(30)
    finally:
        os._exit(0)
time.sleep(0.3)
os.kill(child, signal.SIGTERM)
os.waitpid(child, 0)
print("ready", flush=True)
time.sleep(2)  # the parent's watchdog would have ended it by now
print("parent still running", flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "parent still running" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)


def test_a_stop_a_callback_took_has_a_later_hard_exit() -> None:
    """The chief's stop (an `on_signal` callback saving its state) is given longer, but not for ever."""
    script = """
import time
from tuner_job import stopping
stopping.install(hard_exit_after=0.3, callback_exit_after=2.0)
with stopping.on_signal(lambda signum: None):  # the callback takes the stop; the stop then hangs
    print("ready", flush=True)
    time.sleep(60)
"""
    code, took, output = _stop(script, settle=0.3)
    assert code == 143 and 1.8 <= took < 20, (code, took, output)
    assert "SIGTERM: still running 2s later; exiting now" in output, output
