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
  stop signal (`CALLBACK_HARD_EXIT_AFTER`, 25 s, after one an `on_signal`
  callback took: the chief's own stop), the process exits `128 + signum` at
  once, or as soon as a `deferred()` write it is inside ends (waiting at
  most `DEFERRED_LIMIT` seconds for it). The exit does not depend on
  stderr (a pipe whose reader died), and a forked child lets go of its
  parent's watchdog. Files a resume
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
import select
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
    "CALLBACK_HARD_EXIT_AFTER",
    "DEFERRED_LIMIT",
    "ENV_STACK_DUMP",
    "Stopped",
    "install",
    "deferred",
    "on_signal",
    "raise_if_stopped",
    "received",
    "reset",
    "signal_name",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Seconds a process of ours may take to stop after a signal: well inside the chart's grace periods (30 s chief, 60 s workers).
HARD_EXIT_AFTER = 15.0
#: The same for a signal an `on_signal` callback took (the chief saving its state): inside the chart's 30 s chief grace period.
CALLBACK_HARD_EXIT_AFTER = 25.0
#: Seconds the hard exit waits, at most, for a `deferred()` write it finds under way (then exits anyway: files are renamed into place whole).
DEFERRED_LIMIT = 5.0
#: The file SIGUSR1 appends every thread's stack to (unset: stderr).
ENV_STACK_DUMP = "TUNER_STACK_DUMP"

_depth = 0  # nested deferred() blocks
_pending: int | None = None  # a signal held by deferred()
_callback: Callable[[int], None] | None = None
_received: int | None = None
_watchdog: threading.Thread | None = None
_stack_file: Any = None
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


def _watch(read_fd: int, seconds: float, callback_seconds: float, limit: float) -> None:
    """The stop watchdog's thread: exit `seconds` after a stop signal (`callback_seconds` after one an `on_signal` callback took).

    Python's C-level handler writes each signal's number to `read_fd`'s pipe
    (`signal.set_wakeup_fd`) the moment the signal comes, whatever the main
    thread is doing: even stuck in a C call, it never has to run `_handler`
    for the countdown to start. A later signal can only bring the exit closer.
    """
    deadline: float | None = None
    signum, after = 0, seconds
    while deadline is None or time.monotonic() < deadline:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ready, _, _ = select.select([read_fd], [], [], timeout)
            data = os.read(read_fd, 64) if ready else b""
        except InterruptedError:
            continue
        except OSError:
            return
        if ready and not data:  # the pipe was closed (a forked child let go of it)
            return
        for number in data:
            if number in STOP_SIGNALS:
                wait = seconds if _callback is None else callback_seconds
                if deadline is None or time.monotonic() + wait < deadline:
                    deadline, signum, after = time.monotonic() + wait, number, wait
    waited_until = time.monotonic() + limit
    while _depth and time.monotonic() < waited_until:  # a backup being written is let finish
        time.sleep(0.2)
    try:  # stderr may be a pipe nobody reads any more (a launcher killed): the exit must not depend on it
        left = " (a backup was still being written)" if _depth else ""
        print(f"{signal_name(signum)}: still running {after:g}s later{left}; exiting now", file=sys.stderr, flush=True)
    except BaseException:
        pass
    finally:
        os._exit(exit_code_of_signal(signum))


def _start_watchdog(seconds: float, callback_seconds: float, limit: float) -> None:
    global _watchdog, _wakeup
    if _watchdog is not None:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _wakeup = (read_fd, write_fd)
    _watchdog = threading.Thread(target=_watch, args=(read_fd, seconds, callback_seconds, limit), name="stop-watchdog", daemon=True)
    _watchdog.start()


def _forget_in_child() -> None:
    """A forked child has no watchdog thread, and must not wake its parent's: its signals are its own."""
    global _watchdog, _wakeup
    if _wakeup is not None:
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:  # not the child's main thread
            pass
        for fd in _wakeup:
            try:
                os.close(fd)
            except OSError:
                pass
    _watchdog, _wakeup = None, None


os.register_at_fork(after_in_child=_forget_in_child)


def _register_stack_dump() -> None:
    """SIGUSR1 prints every thread's Python stack: to `$TUNER_STACK_DUMP` (appended) when set and writable, else to stderr (`kubectl logs`)."""
    global _stack_file
    path = os.environ.get(ENV_STACK_DUMP)
    try:
        _stack_file = open(path, "a") if path else sys.stderr  # noqa: SIM115 (kept open: faulthandler writes to it from C)
    except OSError as exc:
        print(f"{ENV_STACK_DUMP}={path}: {exc.strerror}; SIGUSR1 prints the stacks to stderr", file=sys.stderr, flush=True)
        _stack_file = sys.stderr
    faulthandler.register(signal.SIGUSR1, file=_stack_file, all_threads=True)


def reset() -> None:
    """Forget the stop signals received (for tests that send their own process a signal, then go on)."""
    global _received, _pending
    _received, _pending = None, None


def install(hard_exit_after: float | None = None, deferred_limit: float = DEFERRED_LIMIT, callback_exit_after: float | None = None) -> bool:
    """Route SIGTERM, SIGINT and SIGHUP here; returns False (and does nothing) off the main thread.

    Also makes SIGUSR1 print every thread's stack (`kill -USR1 <pid>` on a
    process that seems stuck), to stderr or to the file `$TUNER_STACK_DUMP` names.

    Args:
        hard_exit_after: seconds after the first stop signal at which the process
            exits 128 + signum whatever it is doing (`CALLBACK_HARD_EXIT_AFTER`
            for a signal an `on_signal` callback took: the chief's stop, which
            saves its state); None (tests that install it in-process): never.
        deferred_limit: seconds the hard exit then waits, at most, for a
            `deferred()` block under way to end.
        callback_exit_after: the hard exit's delay after a signal an
            `on_signal` callback took (default: `CALLBACK_HARD_EXIT_AFTER`, or
            `hard_exit_after` if longer).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    if hard_exit_after is not None:
        after_callback = callback_exit_after if callback_exit_after is not None else max(hard_exit_after, CALLBACK_HARD_EXIT_AFTER)
        _start_watchdog(hard_exit_after, after_callback, deferred_limit)
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
