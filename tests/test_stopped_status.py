"""A search stopped by a signal says so: `status.json` is `stopped` (the signal, the time; resumable), not `running`.

The fault (a user's report): after Ctrl-C or SIGTERM of `tunectl local`, or
a chief stopped by a signal, `runs/<run>/tuner/status.json` kept `running`,
so `tunectl results` said the search was running. Now the chief records
`state: stopped` with `stopped: {signal, at}` and a message on how to resume;
`tunectl results`, `tunectl status` and `tunectl local` say "stopped by
SIGTERM at ... (resumable: ...)", and a chief that resumes the search writes
`running` again, then its verdict.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from helpers import small_config, trial_files
from tuner_job.objective import resolve_objective
from tuner_job.progress import RESUMABLE, SearchProgress, state_line


def _progress() -> SearchProgress:
    return SearchProgress(resolve_objective("val_loss", None), max_consecutive_failed_trials=3)


def test_a_stop_before_the_verdict_is_recorded_and_a_verdict_is_not_undone() -> None:
    progress = _progress()
    progress.record_end("0", True, 0.5)
    before = progress.key()
    progress.stop("SIGTERM")
    status = progress.status(max_trials=4)
    assert progress.key() != before  # the state store writes status.json at once, not on its schedule
    assert status["state"] == "stopped" and status["stopped"]["signal"] == "SIGTERM", status
    assert status["message"] == f"stopped by SIGTERM; {RESUMABLE}"
    assert status["completed"] == 1 and status["best"] == {"trial_id": "0", "score": 0.5}
    line = state_line(status)
    assert re.fullmatch(rf"stopped by SIGTERM at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \({re.escape(RESUMABLE)}\)", line), line
    progress.stop("SIGINT")  # a second signal: the first one counts
    assert progress.status()["stopped"]["signal"] == "SIGTERM"

    finished = _progress()
    finished.finish("completed", "done")
    finished.stop("SIGTERM")  # after the verdict the chief writes its results; the search is not "stopped"
    assert finished.status()["state"] == "completed" and finished.status()["stopped"] is None


def test_a_resumed_search_is_running_again() -> None:
    stopped = _progress()
    stopped.stop("SIGHUP")
    resumed = _progress()
    assert resumed.restore(stopped.status()) is None
    assert resumed.status()["state"] == "running" and resumed.status()["stopped"] is None
    assert state_line({"state": "running"}) == "running"


@pytest.mark.slow
def test_tunectl_local_stopped_then_run_again(shared: Path, tmp_path: Path, slow_model: str) -> None:
    """SIGTERM to `tunectl local` after a trial completed: stopped, said so, every completed trial timed; the same command resumes it."""
    from test_stopping import Launcher, alive, descendants

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(run="halt", hypermodel=slow_model, max_trials=3, epochs=3)))
    args = ["--config", str(config), "--workers", "1", "--shared-dir", str(shared), "--tensorboard-port", "0"]
    run = shared / "runs" / "halt"
    launcher = Launcher(args, tmp_path, FAULT_SLEEP="0.5")
    below: set[int] = set()
    try:
        index, _ = launcher.wait_line(r"tuner0 \| .*trial 0 end: COMPLETED", 240)
        launcher.wait_line(r"tuner0 \| .*trial 1 epoch 1/3", 120, start=index)
        below = descendants(launcher.proc.pid)
        launcher.proc.send_signal(signal.SIGTERM)
        assert launcher.proc.wait(30) == 143, launcher.output[-3000:]
        launcher.reader.join(10)
    finally:
        launcher.finish({pid for pid in below if alive(pid)})
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and status["stopped"]["signal"] == "SIGTERM", status
    assert re.search(r"run halt stopped by SIGTERM at .* \(resumable: ", launcher.output), launcher.output[-3000:]

    result = CliRunner().invoke(app, ["results", "--shared-dir", str(shared), "--run", "halt"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "run halt: stopped" in result.output and "search stopped by SIGTERM at " in result.output, result.output
    assert "resumable: run the same command again" in result.output
    records = {t["trial_id"]: t for t in _results(shared)}
    assert records["0"]["status"] == "COMPLETED" and records["0"]["seconds"], records["0"]
    assert records["1"]["status"] == "RUNNING", records["1"]  # in its files, as the chief left it ...
    row = next(line for line in result.output.splitlines() if line.count("│") > 3 and line.split("│")[2].strip() == "1")  # trial 1
    assert "INTERRUPTED" in row and "RUNNING" not in result.output, result.output  # ... and shown for what it is

    again = Launcher(args, tmp_path, FAULT_SLEEP="0")
    try:
        again.wait_line(r"oracle serving on", 240)
        running = json.loads((run / "status.json").read_text())
        assert running["state"] in ("running", "completed") and running["stopped"] is None, running
        assert again.proc.wait(300) == 0, again.output[-3000:]
    finally:
        again.finish(set())
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["stopped"] is None, status
    trials = trial_files(run)
    assert len(trials) == 3 and all(t["status"] == "COMPLETED" for t in trials.values())
    assert all(record["seconds"] for record in _results(shared)), _results(shared)


def _results(shared: Path) -> list[dict]:
    from cluster.runs import find_run, load_ranked

    records, _ = load_ranked(find_run(shared, "halt"))
    return [record.__dict__ for record in records]
