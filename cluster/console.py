"""The one way `tunectl` makes a rich `Console`: as wide as the user's terminal says.

A terminal's own width wins, then `COLUMNS` (what a shell exports, and what
a user sets to fit a narrow window or a pager); output piped or captured
with neither gets `piped_width` columns, so a log file or a CI log keeps
each line and URL whole instead of rich's default 80.
"""

from __future__ import annotations

import os

from rich.console import Console

__all__ = ["PIPED_WIDTH", "make_console"]

#: Columns for output that goes to a pipe or a file and no COLUMNS says how wide.
PIPED_WIDTH = 200


def make_console(piped_width: int = PIPED_WIDTH) -> Console:
    """A Console sized to the terminal, else to `COLUMNS`, else `piped_width` columns.

    Args:
        piped_width: columns when stdout is not a terminal and `COLUMNS` is unset or not a number.
    """
    console = Console()  # rich reads COLUMNS itself, and the terminal's size when it is one
    if console.is_terminal or os.environ.get("COLUMNS", "").strip().isdigit():
        return console
    return Console(width=piped_width)
