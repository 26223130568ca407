"""The launcher's one exception, and how a command turns it into one line on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from tuner_job.errors import TunerJobError

__all__ = ["BadInputError", "LauncherError", "user_errors"]


class LauncherError(Exception):
    """A user-facing failure of a `tunectl` command; its message is one line."""

    exit_code = 1


class BadInputError(LauncherError):
    """The user named something that is not there or not valid (a context, a folder, a value): exit 2."""

    exit_code = 2


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user mistake as `error: ...` on stderr and exit non-zero, no traceback."""
    try:
        yield
    except (LauncherError, TunerJobError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
