"""Fake kind / docker / helm / kubectl: scripts first on PATH that log their argv.

Each fake appends `[name, *argv]` as one JSON line to a log and prints the
canned answer of the first rule whose argv prefix matches; the tests then
assert the exact calls a command made, in order, without any real tool.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

_FAKE = """#!{python}
import json, sys
name = {name!r}
with open({log!r}, "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
for prefix, out, err, rc in json.load(open({rules!r})):
    if sys.argv[1:len(prefix) + 1] == prefix:
        sys.stdout.write(out)
        sys.stderr.write(err)
        sys.exit(rc)
"""


class FakeTools:
    """Install fakes with `add(name, rules)`; read what ran with `calls()`."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.log = root / "calls.jsonl"
        self.log.touch()

    def add(self, name: str, *rules: tuple[list[str], str, str, int]) -> None:
        """`rules`: (argv prefix, stdout, stderr, exit status); no match prints nothing, exits 0."""
        rules_file = self.bin.parent / f"{name}.rules.json"
        rules_file.write_text(json.dumps([list(r) for r in rules]))
        script = self.bin / name
        script.write_text(_FAKE.format(python=sys.executable, name=name, log=str(self.log), rules=str(rules_file)))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def calls(self, name: str | None = None) -> list[list[str]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in lines if name is None or c[0] == name]


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """Only the fakes are on PATH, and no `.tools/bin` is searched."""
    fakes = FakeTools(tmp_path / "fakes")
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(fakes.bin))
    monkeypatch.setenv("TUNECTL_TOOLS_DIR", str(empty))
    for var in ("TUNECTL_CLUSTER", "TUNECTL_SHARED_DIR", "TUNECTL_RELEASE", "TUNECTL_NAMESPACE", "TUNECTL_TAG"):
        monkeypatch.delenv(var, raising=False)
    return fakes
