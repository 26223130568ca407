"""The launcher's one exception, and how a command turns it into one line on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from tuner_job.errors import TunerJobError

__all__ = ["BadInputError", "LauncherError", "path_problem", "user_errors"]


class LauncherError(Exception):
    """A user-facing failure of a `tunectl` command; its message is one line."""

    exit_code = 1


class BadInputError(LauncherError):
    """The user named something that is not there or not valid (a context, a folder, a value): exit 2."""

    exit_code = 2


#: OSErrors about a path the user named: bad input (exit 2), not a failure of the command.
_PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def path_problem(path: Path) -> str | None:
    """Why no folder can be made at `path`: it is a file, or a folder above it is (None: no such problem)."""
    for folder in (path, *path.parents):
        if folder.exists():
            return None if folder.is_dir() else (f"{folder} is a file" if folder == path else f"{folder} is a file, not a folder")
    return None


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user mistake as `error: ...` on stderr and exit non-zero, no traceback.

    `LauncherError` and `TunerJobError` carry their exit code; an OSError
    about a path (a folder that is a file, a file that is missing or may not
    be written) is said in one line too, naming the path.
    """
    try:
        yield
    except (LauncherError, TunerJobError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        if not exc.filename:
            raise
        path = Path(exc.filename)
        why = path_problem(path) if isinstance(exc, NotADirectoryError) else None
        typer.echo(f"error: {path}: {(exc.strerror or str(exc)).lower()}" + (f" ({why})" if why else ""), err=True)
        raise typer.Exit(2 if isinstance(exc, _PATH_ERRORS) else 1) from None
