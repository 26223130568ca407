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
- `received()` is the last signal that came, whatever the mode;
  `raise_if_stopped()` raises `Stopped` again for one that was lost on the
  way (raised in a finaliser, swallowed by a library): the worker calls it
  after every batch and before every trial.
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
  countdown runs in a thread started with `install`, which Python's C-level
  signal handler wakes (`signal.set_wakeup_fd`): it starts even while the
  main thread is blocked inside TensorFlow or another C call and cannot run
  a Python handler, and the handler itself starts no thread and takes no
  lock (it may interrupt the main thread inside one).
- `install(hard_exit_after=S)` also makes SIGUSR1 print every thread's
  Python stack, to stderr or to `$TUNER_STACK_DUMP`: for a process that
  seems stuck (`kill -USR1 <pid>`; `faulthandler`, so it works even then).

Stdlib only: the worker and the chief install it before TensorFlow is imported.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tuner_job.errors import exit_code_of_signal

__all__ = [
    "STOP_SIGNALS",
    "HARD_EXIT_AFTER",
    "DEFERRED_LIMIT",
    "ENV_STACK_DUMP",
    "Stopped",
    "install",
    "deferred",
    "on_signal",
    "raise_if_stopped",
    "received",
    "signal_name",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Seconds a process of ours may take to stop after a signal: well inside the chart's grace periods (30 s chief, 60 s workers).
HARD_EXIT_AFTER = 15.0
#: Seconds the hard exit waits, at most, for a `deferred()` write it finds under way (then exits anyway: files are renamed into place whole).
DEFERRED_LIMIT = 5.0
#: The file SIGUSR1 appends every thread's stack to (unset: stderr).
ENV_STACK_DUMP = "TUNER_STACK_DUMP"

_depth = 0  # nested deferred() blocks
_pending: int | None = None  # a signal held by deferred()
_callback: Callable[[int], None] | None = None
_received: int | None = None
_hard_exit_after: float | None = None
_watchdog: threading.Thread | None = None
_stack_file: Any = None


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
    # Only state and a raise here: a signal handler interrupts the main thread
    # anywhere, inside a lock of the threading module or a library's included,
    # so it starts no thread and takes no lock (the watchdog is already running).
    global _pending, _received
    _received = signum
    if _callback is not None:
        _callback(signum)
        return
    if _depth:
        _pending = signum
    else:
        raise Stopped(signum)


def _watch(read_fd: int, seconds: float, limit: float) -> None:
    """The stop watchdog's thread: wait for a stop signal no callback takes, then exit `seconds` later.

    Python's C-level handler writes each signal's number to `read_fd`'s pipe
    (`signal.set_wakeup_fd`) the moment the signal comes, whatever the main
    thread is doing: even stuck in a C call, it never has to run `_handler`
    for the countdown to start.
    """
    signum = None
    while signum is None:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        signum = next((n for n in data if n in STOP_SIGNALS and _callback is None), None)
    time.sleep(seconds)
    waited_until = time.monotonic() + limit
    while _depth and time.monotonic() < waited_until:  # a backup being written is let finish
        time.sleep(0.2)
    left = " (a backup was still being written)" if _depth else ""
    print(f"{signal_name(signum)}: still running {seconds:g}s later{left}; exiting now", file=sys.stderr, flush=True)
    os._exit(exit_code_of_signal(signum))


def _start_watchdog(seconds: float, limit: float) -> None:
    global _watchdog
    if _watchdog is not None:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _watchdog = threading.Thread(target=_watch, args=(read_fd, seconds, limit), name="stop-watchdog", daemon=True)
    _watchdog.start()


def _register_stack_dump() -> None:
    """SIGUSR1 prints every thread's Python stack: to `$TUNER_STACK_DUMP` (appended) when set, else to stderr (`kubectl logs`)."""
    global _stack_file
    path = os.environ.get(ENV_STACK_DUMP)
    _stack_file = open(path, "a") if path else sys.stderr  # noqa: SIM115 (kept open: faulthandler writes to it from C)
    faulthandler.register(signal.SIGUSR1, file=_stack_file, all_threads=True)


def install(hard_exit_after: float | None = None, deferred_limit: float = DEFERRED_LIMIT) -> bool:
    """Route SIGTERM, SIGINT and SIGHUP here; returns False (and does nothing) off the main thread.

    Also makes SIGUSR1 print every thread's stack (`kill -USR1 <pid>` on a
    process that seems stuck), to stderr or to the file `$TUNER_STACK_DUMP` names.

    Args:
        hard_exit_after: seconds after the first stop signal (not one an `on_signal`
            callback takes) at which the process exits 128 + signum whatever it is
            doing; None (tests that install it in-process): never.
        deferred_limit: seconds the hard exit then waits, at most, for a
            `deferred()` block under way to end.
    """
    global _hard_exit_after
    if threading.current_thread() is not threading.main_thread():
        return False
    _hard_exit_after = hard_exit_after
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    if hard_exit_after is not None:
        _start_watchdog(hard_exit_after, deferred_limit)
        _register_stack_dump()
    return True


def raise_if_stopped() -> None:
    """Raise `Stopped` again for a stop signal that came and was lost on the way; do nothing otherwise.

    A `Stopped` raised while the main thread runs a finaliser (`__del__`, a
    weakref callback: TensorFlow and Keras have many) is printed as "Exception
    ignored" and lost, and a library's `except BaseException` may swallow it.
    The worker calls this after each batch and before each trial, so such a
    stop takes effect a batch later, not at the hard exit. Inside `deferred()`
    the block's end raises it; under `on_signal()` the callback has it.
    """
    if _received is not None and _callback is None and _depth == 0:
        raise Stopped(_received)


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
