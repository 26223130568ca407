"""One root exception for the package, and what each kind means for the search.

Every error a user can cause (a bad config, a bad dataset, a bad hypermodel)
is a `TunerJobError` whose message is one line that names the offending key,
file or value. The entry point prints it and exits with its `exit_code`.
"""

from __future__ import annotations

import re

__all__ = [
    "TunerJobError",
    "ConfigError",
    "DataError",
    "HypermodelError",
    "NarrowingError",
    "SearchFailedError",
    "ChiefUnreachableError",
    "RunHeldError",
    "EXIT_OK",
    "EXIT_SEARCH_FAILED",
    "EXIT_BAD_INPUT",
    "EXIT_CHIEF_UNREACHABLE",
    "EXIT_LEASE_LOST",
    "EXIT_CRASH",
    "error_summary",
    "exit_code_of_signal",
]

EXIT_OK = 0
EXIT_SEARCH_FAILED = 1  # the search ended without completing (failure limit)
EXIT_BAD_INPUT = 2  # config, dataset or hypermodel is wrong: retrying will not help
EXIT_CHIEF_UNREACHABLE = 3  # a worker gave up waiting for the chief
EXIT_LEASE_LOST = 4  # a chief found that another chief took its run over (fenced): it stopped without writing
EXIT_CRASH = 70  # an unexpected error (EX_SOFTWARE): worth a restart


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, without terminal colours, at most `limit` characters.

    Keras wraps a layer's error in a many-line, coloured message; a log line or a
    leaderboard cell needs one line.
    """
    message = " ".join(line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exit_code_of_signal(signum: int) -> int:
    """The shell's code for a process stopped by signal `signum`: 128 + signum (SIGTERM 143, SIGINT 130, SIGHUP 129)."""
    return 128 + int(signum)


class TunerJobError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(TunerJobError):
    """The search config is invalid: unknown key, wrong type or bad value."""


class DataError(TunerJobError):
    """The dataset folder is missing, empty or holds an unreadable image."""


class HypermodelError(TunerJobError):
    """The hypermodel cannot be loaded or does not build a Keras model."""


class NarrowingError(TunerJobError):
    """A search space cannot be narrowed around a run (no such run, no completed trial, bad selection)."""


class SearchFailedError(TunerJobError):
    """The search ended without completing; every process should stop."""

    exit_code = EXIT_SEARCH_FAILED


class ChiefUnreachableError(TunerJobError):
    """A worker waited longer than `chief_wait_seconds` for the chief."""

    exit_code = EXIT_CHIEF_UNREACHABLE


class RunHeldError(TunerJobError):
    """Another chief holds the run's lease and is alive: this chief exits 2 without writing anything."""
