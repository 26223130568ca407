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
  ends. Files a resume reads are published by rename, so even that exit
  leaves them whole.

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

_depth = 0  # nested deferred() blocks
_pending: int | None = None  # a signal held by deferred()
_callback: Callable[[int], None] | None = None
_received: int | None = None
_hard_exit_after: float | None = None
_watchdog: threading.Thread | None = None


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
    global _watchdog
    if _hard_exit_after is None or _watchdog is not None:
        return
    seconds = _hard_exit_after

    def exit_late() -> None:
        time.sleep(seconds)
        while _depth:  # a backup being written is let finish (Kubernetes' SIGKILL still bounds it)
            time.sleep(0.2)
        print(f"{signal_name(signum)}: still running {seconds:g}s later; exiting now", file=sys.stderr, flush=True)
        os._exit(exit_code_of_signal(signum))

    _watchdog = threading.Thread(target=exit_late, name="stop-watchdog", daemon=True)
    _watchdog.start()


def install(hard_exit_after: float | None = None) -> bool:
    """Route SIGTERM, SIGINT and SIGHUP here; returns False (and does nothing) off the main thread.

    Args:
        hard_exit_after: seconds after the first stop signal (not one an `on_signal`
            callback takes) at which the process exits 128 + signum whatever it is
            doing; None (tests that install it in-process): never.
    """
    global _hard_exit_after
    if threading.current_thread() is not threading.main_thread():
        return False
    _hard_exit_after = hard_exit_after
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
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
