"""`cluster.console.make_console`: tunectl's tables follow the terminal's width, then COLUMNS, else 200 when piped."""

from __future__ import annotations

import pytest

from cluster.console import PIPED_WIDTH, make_console


@pytest.mark.parametrize(("columns", "width"), [("80", 80), ("132", 132), (None, PIPED_WIDTH), ("wide", PIPED_WIDTH)])
def test_piped_output_is_as_wide_as_columns_says(monkeypatch: pytest.MonkeyPatch, columns: str | None, width: int) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.delenv("LINES", raising=False)

    console = make_console()

    assert not console.is_terminal  # pytest captures stdout: a pipe, as `tunectl ... | less` is
    assert console.width == width
