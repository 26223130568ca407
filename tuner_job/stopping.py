"""How a chief or worker process stops on a signal: SIGTERM (how Kubernetes stops every pod), SIGINT, SIGHUP.

Contract:
- `install()` (main thread, first thing) routes the three signals here. By
  default a signal raises `Stopped` in the main thread, at the next bytecode:
  a `BaseException`, so no `except Exception` (a trial's error handling)
  mistakes it for a failed trial, and every `finally` runs on the way out.
  The process then exits `128 + signum` (143 for SIGTERM).
- Inside `deferred()` a signal is held until the block ends, then raised:
  for a write that a resume reads (a trial's per-epoch backup), which is then
  finished rather than lost.
- Inside `on_signal(callback)` a signal calls `callback(signum)` instead (the
  chief's event loop: the server stops serving, saves its state and returns).
- `received()` is the last signal that came, whatever the mode.
- A second signal while one is being handled does the same again: handlers
  are idempotent, and Kubernetes sends SIGKILL after the grace period anyway.
- `install(hard_exit_after=S)` (the process's entry point) is the safety net
  for what no one else kills: a worker whose launcher died (its parent-death
  signal), where `Stopped` was swallowed (raised inside a finaliser or a
  library's catch-all) or the unwinding hangs. S seconds after the first
  signal that is not handed to an `on_signal` callback, the process exits
  `128 + signum` at once, or as soon as a `deferred()` write it is inside
  ends (waiting at most `DEFERRED_LIMIT` seconds for it). Files a resume
  reads are published by rename, so even that exit leaves them whole. The
  countdown starts in a thread of its own that Python's C-level signal
  handler wakes (`signal.set_wakeup_fd`), so it starts even while the main
  thread is blocked inside TensorFlow or another C call and cannot run a
  Python handler.

Stdlib only: the worker and the chief install it before TensorFlow is imported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tuner_job.errors import exit_code_of_signal

__all__ = ["STOP_SIGNALS", "HARD_EXIT_AFTER", "Stopped", "install", "deferred", "on_signal", "received", "signal_name"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Seconds a process of ours may take to stop after a signal: well inside the chart's grace periods (30 s chief, 60 s workers).
HARD_EXIT_AFTER = 15.0
#: Seconds the hard exit waits, at most, for a `deferred()` write it finds under way (then exits anyway: files are renamed into place whole).
DEFERRED_LIMIT = 30.0

_depth = 0  # nested deferred() blocks
_pending: int | None = None  # a signal held by deferred()
_callback: Callable[[int], None] | None = None
_received: int | None = None
_hard_exit_after: float | None = None
_deferred_limit = DEFERRED_LIMIT
_watchdog: threading.Thread | None = None
_watchdog_lock = threading.Lock()
_wakeup: tuple[int, int] | None = None  # the pipe Python's C signal handler writes each signal's number to


def signal_name(signum: int) -> str:
    """`SIGTERM` for 15."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Stopped(BaseException):
    """A stop signal came: the process unwinds and exits `exit_code` (128 + signum).

    Args:
        signum: the signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = signum
        self.exit_code = exit_code_of_signal(signum)


def _handler(signum: int, frame: object) -> None:
    global _pending, _received
    _received = signum
    if _callback is not None:
        _callback(signum)
        return
    _start_watchdog(signum)
    if _depth:
        _pending = signum
    else:
        raise Stopped(signum)


def _start_watchdog(signum: int) -> None:
    """Start the hard-exit countdown for `signum`, once per process (from the handler or the wakeup thread)."""
    global _watchdog
    with _watchdog_lock:
        if _hard_exit_after is None or _watchdog is not None:
            return
        seconds, limit = _hard_exit_after, _deferred_limit

        def exit_late() -> None:
            time.sleep(seconds)
            waited_until = time.monotonic() + limit
            while _depth and time.monotonic() < waited_until:  # a backup being written is let finish
                time.sleep(0.2)
            left = " (a backup was still being written)" if _depth else ""
            print(f"{signal_name(signum)}: still running {seconds:g}s later{left}; exiting now", file=sys.stderr, flush=True)
            os._exit(exit_code_of_signal(signum))

        _watchdog = threading.Thread(target=exit_late, name="stop-watchdog", daemon=True)
        _watchdog.start()


def _watch_wakeups(read_fd: int) -> None:
    """Read the signal numbers Python's C handler writes, and start the countdown for a stop signal no callback takes.

    Runs in a thread of its own: the C handler writes even while the main
    thread is stuck in a C call that never returns to Python to run `_handler`.
    """
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum in STOP_SIGNALS and _callback is None:
                _start_watchdog(signum)


def _watch_from_c_handler() -> None:
    global _wakeup
    if _wakeup is not None:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block
    try:
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread (install checked) or an fd Python refuses
        os.close(read_fd)
        os.close(write_fd)
        return
    _wakeup = (read_fd, write_fd)
    threading.Thread(target=_watch_wakeups, args=(read_fd,), name="stop-wakeups", daemon=True).start()


def install(hard_exit_after: float | None = None, deferred_limit: float = DEFERRED_LIMIT) -> bool:
    """Route SIGTERM, SIGINT and SIGHUP here; returns False (and does nothing) off the main thread.

    Args:
        hard_exit_after: seconds after the first stop signal (not one an `on_signal`
            callback takes) at which the process exits 128 + signum whatever it is
            doing; None (tests that install it in-process): never.
        deferred_limit: seconds the hard exit then waits, at most, for a
            `deferred()` block under way to end.
    """
    global _hard_exit_after, _deferred_limit
    if threading.current_thread() is not threading.main_thread():
        return False
    _hard_exit_after, _deferred_limit = hard_exit_after, deferred_limit
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    if hard_exit_after is not None:
        _watch_from_c_handler()
    return True


def received() -> int | None:
    """The last stop signal this process received, or None."""
    return _received


@contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals while the block runs; raise `Stopped` when it ends if one came."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise Stopped(signum)


@contextmanager
def on_signal(callback: Callable[[int], None]) -> Iterator[None]:
    """Call `callback(signum)` (in the main thread) for each stop signal while the block runs, instead of raising."""
    global _callback
    previous, _callback = _callback, callback
    try:
        yield
    finally:
        _callback = previous
