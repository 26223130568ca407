"""`tunectl local`'s TensorBoard after the search: kept up until Ctrl-C while a person is watching.

A search can end in seconds; stopping its TensorBoard with it leaves a dead
URL behind. So when `tunectl local` (or `study`) runs in a terminal, the
search's processes stop as before but TensorBoard keeps serving the logs
until Ctrl-C, and the launcher says so. Piped or scripted (stdin or stdout
not a terminal: CI, `make`, a log file) and with `--no-keep-tensorboard`, it
exits with the search, as before; `--keep-tensorboard` keeps it anyway.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

__all__ = ["KeepTensorBoard", "keep_tensorboard_wanted", "report_then_serve", "serve_until_interrupted"]

KeepTensorBoard = Annotated[
    bool | None,
    typer.Option(
        "--keep-tensorboard/--no-keep-tensorboard",
        help="Keep TensorBoard up after the search until Ctrl-C (default: when run in a terminal).",
        show_default=False,
    ),
]


def keep_tensorboard_wanted(flag: bool | None, tensorboard_port: int | None) -> bool:
    """Whether to keep TensorBoard after the search: the flag, else whether stdin and stdout are terminals."""
    if not tensorboard_port:
        return False
    if flag is not None:
        return flag
    return sys.stdin.isatty() and sys.stdout.isatty()


def serve_until_interrupted(search: Any, code: int, poll_s: float = 0.5) -> int:
    """Leave `search`'s TensorBoard up until Ctrl-C (or until it exits by itself), then stop it.

    Args:
        search: the `LocalSearch` whose `run()` spared its TensorBoard.
        code: the search's exit code, returned unchanged: Ctrl-C here is the
            expected way to end, not an interruption of the search.
        poll_s: how often to look whether TensorBoard is still running, in seconds.
    """
    console = search.console
    child = search.children.get("tensorboard")
    process = child.process if child is not None else None
    try:
        if process is None or process.poll() is not None:
            exit_code = None if process is None else process.returncode
            console.print(f"TensorBoard is not running (exit code {exit_code}): nothing to keep up")
            return code
        url = f"http://127.0.0.1:{search.tensorboard_port}/"
        console.print(f"search finished; TensorBoard stays up at [bold]{url}[/bold] (HParams tab: every trial); press Ctrl-C to stop it")
        while process.poll() is None:
            time.sleep(poll_s)
        console.print(f"TensorBoard exited by itself (exit code {process.returncode})")
    except KeyboardInterrupt:
        console.print("stopping TensorBoard")
    finally:
        search.stop()
    return code


def report_then_serve(search: Any, report: Callable[[], int]) -> int:
    """Print the search's results (`report()` returns the exit code), then keep TensorBoard up if `run()` spared it.

    A kept TensorBoard is stopped whatever `report` raises: it must not outlive the command.
    """
    try:
        code = report()
    except BaseException:
        search.stop()
        raise
    return serve_until_interrupted(search, code) if search.tensorboard_kept else code
