"""Fake kind / docker / helm / kubectl: scripts first on PATH that log their argv.

Each fake appends `[name, *argv]` as one JSON line to a log and prints the
canned answer of the first rule whose argv prefix matches; the tests then
assert the exact calls a command made, in order, without any real tool.
"""

from __future__ import annotations

import json
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_api import FakeApiServer, write_kubeconfig

_FAKE = """#!{python}
import json, os, sys
name = {name!r}
with open({log!r}, "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
    count = log.tell()
if "-i" in sys.argv[1:] or "-" in sys.argv[1:]:
    # What the command was fed (a tar stream, a manifest): kept for the test to read.
    with open(os.path.join({stdin_dir!r}, str(count)), "wb") as kept:
        kept.write(sys.stdin.buffer.read())
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
        self.stdin_dir = root / "stdin"
        self.stdin_dir.mkdir()

    def add(self, name: str, *rules: tuple[list[str], str, str, int]) -> None:
        """`rules`: (argv prefix, stdout, stderr, exit status); no match prints nothing, exits 0."""
        rules_file = self.bin.parent / f"{name}.rules.json"
        rules_file.write_text(json.dumps([list(r) for r in rules]))
        script = self.bin / name
        script.write_text(
            _FAKE.format(python=sys.executable, name=name, log=str(self.log), rules=str(rules_file), stdin_dir=str(self.stdin_dir))
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def stdins(self) -> list[bytes]:
        """What each call that read its stdin was fed, in order."""
        return [p.read_bytes() for p in sorted(self.stdin_dir.iterdir(), key=lambda p: int(p.name))]

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
    for var in (
        "TUNECTL_CLUSTER", "TUNER_SHARED_DIR", "TUNECTL_RELEASE", "TUNECTL_NAMESPACE", "TUNECTL_TAG", "TUNECTL_CONTEXT",
        "TUNECTL_TF_FLAVOUR", "TUNECTL_BASE_IMAGE", "TUNECTL_BUILD_NETWORK",
    ):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    # No kubeconfig unless a test writes one: nothing here may reach a real cluster.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return fakes


@pytest.fixture
def fake_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_tools: FakeTools) -> Iterator[FakeApiServer]:
    """A fake API server; the kubeconfig's contexts `kind-tuner` (current) and `prod-gpus` both point at it."""
    server = FakeApiServer()
    config = write_kubeconfig(tmp_path / "kubeconfig", {"kind-tuner": server.url, "prod-gpus": server.url}, current="kind-tuner")
    monkeypatch.setenv("KUBECONFIG", str(config))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def closed_port_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kubeconfig whose only context points at a port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"https://127.0.0.1:{port}"
    config = write_kubeconfig(tmp_path / "kubeconfig-closed", {"kind-gone": server}, current="kind-gone")
    monkeypatch.setenv("KUBECONFIG", str(config))
    return server
