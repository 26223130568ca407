"""Signals and exit codes as `tunectl local` reads them, after a Job's podFailurePolicy.

- The launcher stops on SIGTERM and SIGHUP as on Ctrl-C (`trapped`): every
  child is stopped, and it exits 128 + signum (143, 129; 130 for Ctrl-C).
- A child's exit is one of: final (0 completed, 1 failed, 2 bad input, 4 the
  run taken over by another chief: a restart would not change it); a
  disruption (stopped by SIGTERM, SIGINT or SIGHUP sent to it from outside,
  whether it handled the signal, 128 + signum, or died of it, -signum):
  restarted without counting, as the chart ignores disruptions; else a crash,
  restarted up to `--max-restarts`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tuner_job.errors import EXIT_BAD_INPUT, EXIT_LEASE_LOST, EXIT_OK, EXIT_SEARCH_FAILED, exit_code_of_signal

__all__ = ["FINAL", "Signalled", "disruption", "trapped", "ignoring"]

#: Exit codes a restart would not change.
FINAL = (EXIT_OK, EXIT_SEARCH_FAILED, EXIT_BAD_INPUT, EXIT_LEASE_LOST)
_LAUNCHER_STOPS_ON = (signal.SIGTERM, signal.SIGHUP)
_DISRUPTIONS = {code: sig.name for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) for code in (-sig, exit_code_of_signal(sig))}


def disruption(code: int) -> str | None:
    """The name of the signal from outside that stopped a child exiting with `code` (`SIGTERM`), or None."""
    return _DISRUPTIONS.get(code)


class Signalled(Exception):
    """SIGTERM or SIGHUP reached the launcher; `exit_code` is 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = exit_code_of_signal(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def trapped() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise `Signalled` in the main thread (elsewhere: nothing changes)."""

    def raise_signalled(signum: int, frame: Any) -> None:
        raise Signalled(signum)

    previous = {signum: signal.signal(signum, raise_signalled) for signum in _LAUNCHER_STOPS_ON} if _main_thread() else {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def ignoring() -> Iterator[None]:
    """While the block runs (the launcher stopping its children), a second signal cannot cut it short."""
    signals = (*_LAUNCHER_STOPS_ON, signal.SIGINT)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signals} if _main_thread() else {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
