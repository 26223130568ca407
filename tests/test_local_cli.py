"""`tunectl local` and `tunectl results`, end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, default_sigint, small_config

pytestmark = pytest.mark.slow


def test_tunectl_local_runs_a_search_and_prints_the_leaderboard(shared: Path, tmp_path: Path) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(run="cli", max_trials=3)))
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "local", "--config", str(config), "--shared-dir", str(shared), "--workers", "2",
         "--max-trials", "4", "--tensorboard-port", "0", "--fresh"],
        capture_output=True, text=True, timeout=240, cwd=REPO, preexec_fn=lambda: os.umask(0o022),
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    for prefix in ("chief |", "tuner0 |", "tuner1 |"):
        assert prefix in out, prefix
    assert "run cli: completed, 4/4 trials done" in out, out[-3000:]
    assert "best model: " in out and "model.keras" in out
    status = json.loads((shared / "runs" / "cli" / "status.json").read_text())
    assert status["trials_done"] == 4 and status["max_trials"] == 4  # --max-trials overrode the file

    # Each log line says its role once (the prefix), each trial's hyperparameters are said once (by the chief
    # that hands the trial out), and there is one leaderboard (the launcher's).
    logged = [line.strip() for line in out.splitlines() if re.match(r"\s*(chief|tuner\d) \| ", line)]
    for line in logged:
        role, _, rest = line.partition(" | ")
        assert not re.search(rf"\b{role}\b", rest), line
    assert len([line for line in logged if "conv_1_filters=" in line]) == 4, "\n".join(logged)
    assert out.count("run cli: completed") == 1 and "rank   trial" not in out
    assert out.count("best model: ") == 1 and out.count("results: ") == 1
    run = shared / "runs" / "cli"
    for path in (run / "results.json", run / "leaderboard.csv", run / "best" / "hyperparameters.yaml", run / "status.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path  # under the usual umask 022

    from typer.testing import CliRunner

    from cluster.cli import app

    shown = CliRunner().invoke(app, ["results", "--shared-dir", str(shared)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "run cli: completed" in shown.output and shown.output.count("COMPLETED") == 4, shown.output
    missing = CliRunner().invoke(app, ["results", "--shared-dir", str(shared), "--run", "nope"])
    assert missing.exit_code == 2 and "run 'nope' not found" in missing.output


NOISE = [  # verbatim from `tunectl local` runs: printed at every start, they tell a user nothing
    "I1130 01:27:38.876304   19181 chttp2_transport.cc:1403] ipv4:127.0.0.1:37267: Got goaway [2] "
    "err=UNAVAILABLE:GOAWAY received; Error code: 2; Debug Text: Cancelling all calls {http2_error:2}",
    "NOTE: Using experimental fast data loading logic. To disable, pass",
    '    "--load_fast=false" and report issues on GitHub. More details:',
    "    https://github.com/tensorflow/tensorboard/issues/4784",
]
KEPT = [  # what a user needs: our lines, and gRPC's or TensorFlow's warnings and errors
    "01:27:40 INFO trial 0 -> tuner0: conv_1_filters=12 conv_1_kernel_size=3",
    "E1130 01:27:38.876304   19181 chttp2_transport.cc:1403] ipv4:127.0.0.1:37267: connection refused",
    "W1130 01:27:38.876304   19181 ev_poll_posix.cc:99] a warning",
    "TensorBoard 2.20.0 at http://127.0.0.1:6006/ (Press CTRL+C to quit)",
]


def test_the_log_filter_drops_startup_noise_and_keeps_the_rest() -> None:
    from cluster.local import _NOISE

    assert [line for line in NOISE if not _NOISE.match(line)] == []
    assert [line for line in KEPT if _NOISE.match(line)] == []


def test_data_synth_writes_four_suits(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--per-class", "3", "--size", "30", "12"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert sorted(p.name for p in out.iterdir()) == ["bossbot", "cashbot", "lawbot", "sellbot"]
    with Image.open(out / "lawbot" / "lawbot_0002.png") as image:
        assert image.size == (12, 30)
    bad = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--size", "4", "4"])
    assert bad.exit_code == 2 and "at least 8x8" in bad.output


def test_tunectl_help_is_fast_and_imports_no_tensorflow() -> None:
    code = "import sys, cluster.cli; sys.exit(1 if any(m.split('.')[0] in ('tensorflow', 'keras', 'keras_tuner') for m in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


def test_ctrl_c_stops_every_child(shared: Path, tmp_path: Path) -> None:
    import signal
    import time

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(run="stop", max_trials=50, epochs=5)))
    log = tmp_path / "out.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "local", "--config", str(config), "--shared-dir", str(shared), "--workers", "2",
             "--tensorboard-port", "0"],
            stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=default_sigint,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "epoch 1/5" not in log.read_text():
            time.sleep(0.5)
        assert "epoch 1/5" in log.read_text(), log.read_text()[-3000:]
        pids = [int(p) for p in re.findall(r"started \(pid (\d+)\)", log.read_text())]
        assert len(pids) == 3, log.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read().lower()]
    assert not alive, f"children still running: {alive}"
    assert "interrupted: stopping every process" in log.read_text()


def test_a_childs_line_that_looks_like_markup_is_printed_as_it_is() -> None:
    """TensorFlow's device names (`[/job:localhost/...]`) are closing tags to rich: printed as markup, the log
    pump thread died on them and the search hung. Each line goes through `LocalSearch._print` as text."""
    import io
    import threading
    from types import SimpleNamespace

    from rich.console import Console

    from cluster.local import Child, LocalSearch

    out = io.StringIO()
    search = SimpleNamespace(console=Console(file=out, width=300, color_system=None), _lock=threading.Lock())
    child = Child("tuner0", [], {}, "cyan")
    lines = ["device placement: [/job:localhost/replica:0/task:0/device:CPU:0]", "[bold]not bold[/bold] [red]", "a [/] b"]
    for line in lines:
        LocalSearch._print(search, child, line)  # type: ignore[arg-type]
    assert out.getvalue().splitlines() == [f"     tuner0 | {line}" for line in lines]
