"""`tunectl local` in a terminal keeps its TensorBoard up after the search until Ctrl-C, and says so; with
`--no-keep-tensorboard`, or piped, it exits with the search as before. Real processes: the launcher in a
pseudo-terminal, its chief, workers and a real TensorBoard on a free loopback port.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cluster.tensorboard_probe import probe
from helpers import REPO, default_sigint, free_port, small_config

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """`python -m cluster ARGS` with stdin and stdout on a pseudo-terminal, its output collected."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", *args], stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, preexec_fn=default_sigint
        )
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the other side closed
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return ANSI.sub("", b"".join(self.chunks).decode(errors="replace")).replace("\r", "")

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {needle!r} (exit {self.proc.poll()}):\n{self.text[-4000:]}")
            time.sleep(0.3)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.reader.join(5)
        os.close(self.master)


def _pids(text: str, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"{name} \| started \(pid (\d+)\)", text)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read().lower()
    except FileNotFoundError:
        return False


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(small_config(run="kept", max_trials=2, epochs=1)))
    return path


def test_in_a_terminal_tensorboard_stays_up_until_ctrl_c(shared: Path, config: Path) -> None:
    port = free_port()
    term = Terminal("local", "--config", str(config), "--shared-dir", str(shared), "--workers", "2", "--tensorboard-port", str(port), "--fresh")
    try:
        term.wait_for("press Ctrl-C to stop it", 240)
        text = term.text
        assert f"TensorBoard stays up at http://127.0.0.1:{port}/" in text, text[-3000:]
        assert "run kept: completed, 2/2 trials done" in text  # the leaderboard came first
        # The search's processes are gone; TensorBoard serves this search's logs.
        for name in ("chief", "tuner0", "tuner1"):
            assert not any(_alive(pid) for pid in _pids(text, name)), name
        (tb_pid,) = _pids(text, "tensorboard")
        answer = probe(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while not answer.tensorboard and time.monotonic() < deadline:
            time.sleep(0.5)
            answer = probe(f"http://127.0.0.1:{port}")
        assert answer.tensorboard and Path(answer.logdir) == (shared / "runs").resolve(), answer
        time.sleep(1.0)
        assert term.proc.poll() is None, "tunectl exited without Ctrl-C"
        assert "experimental fast data loading" not in term.text  # TensorBoard's note is filtered

        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(30) == 0, term.text[-3000:]  # the search's code: Ctrl-C here is how one ends
        assert "stopping TensorBoard" in term.text
        assert not _alive(tb_pid)
        assert not probe(f"http://127.0.0.1:{port}", timeout=1).answers
    finally:
        term.close()

    # --no-keep-tensorboard in a terminal, and no flag but piped: the command ends with the search (it resumes the
    # completed run, so the chief ends at once).
    port = free_port()
    term = Terminal("local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", str(port), "--no-keep-tensorboard")
    try:
        assert term.proc.wait(180) == 0, term.text[-3000:]
        assert "stays up" not in term.text and not _alive(_pids(term.text, "tensorboard")[0])
    finally:
        term.close()
    piped = subprocess.run(
        [sys.executable, "-m", "cluster", "local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", str(free_port())],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stdout[-3000:] + piped.stderr[-2000:]
    assert "stays up" not in piped.stdout and "tensorboard | started" in piped.stdout
    assert not any(_alive(pid) for pid in _pids(piped.stdout, "tensorboard"))
