"""Every completed trial carries its seconds, the one that completed just before a stop too.

The fault (a user's report): the trial that completed just before `tunectl
local` was stopped had no `seconds` in the results. The worker wrote its
attempt's end line (the only record of the seconds) after the chief had
recorded the trial COMPLETED; a stop signal arriving in between (while
EndTrial was answered) ended the worker first. Now the end line is written
before the outcome is reported, whole (`stopping.deferred`), and a completed
trial whose attempt left no end line at all (a process killed outright) takes
its epochs' seconds.

Real parts: an `OracleServer` on loopback, our `OracleClient`, the worker's
`TrialRunner.finish`, and a real SIGTERM delivered to this process while the
chief handles the EndTrial.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from helpers import small_config
from tuner_job import stopping
from tuner_job.config import parse_config
from tuner_job.layout import RunPaths
from tuner_job.results import collect_trials

pytest.importorskip("keras_tuner")

from tuner_job.oracle_client import OracleClient  # noqa: E402
from tuner_job.trial_runner import TrialOutcome, TrialRunner  # noqa: E402


@pytest.fixture
def signals_here():
    """`stopping` routes SIGTERM in this process for the test; the handlers before it come back after."""
    saved = {signum: signal.getsignal(signum) for signum in stopping.STOP_SIGNALS}
    assert stopping.install()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    stopping.reset()  # the signals were this test's: a later test's worker must not see them


def _runner(tmp_path: Path, port: int) -> TrialRunner:
    paths = RunPaths(tmp_path, "r")
    client = OracleClient(f"127.0.0.1:{port}", "tuner0", paths, chief_wait_seconds=5)
    config = parse_config(small_config(run="r"))
    return TrialRunner(config, paths, "tuner0", hypermodel=None, data=None, client=client)


def test_a_stop_while_the_chief_records_the_end_keeps_the_trials_seconds(running, tmp_path: Path, signals_here) -> None:
    r = running(max_trials=2)
    r.server.on_trial_end = lambda trial: os.kill(os.getpid(), signal.SIGTERM)  # the stop comes as the chief records it
    runner = _runner(tmp_path, r.port)
    trial = runner.client.create_trial()
    outcome = TrialOutcome("COMPLETED", {"val_loss": 0.25, "loss": 0.2}, best_step=0, seconds=12.5)

    with pytest.raises(stopping.Stopped):
        runner.finish(trial, outcome)

    deadline = time.monotonic() + 10
    while True:  # the chief's commit of the end may land just after the signal
        record = {record.trial_id: record for record in collect_trials(RunPaths(tmp_path, "r"))}[trial.trial_id]
        if record.status == "COMPLETED" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert record.status == "COMPLETED" and record.score == pytest.approx(0.25), record
    assert record.seconds == pytest.approx(12.5), record


def test_a_completed_trial_without_an_end_line_takes_its_epochs_seconds(running, tmp_path: Path) -> None:
    """A worker killed outright (SIGKILL) between the chief's record and its own line: the epochs it logged still count."""
    r = running(max_trials=2)
    runner = _runner(tmp_path, r.port)
    trial = runner.client.create_trial()
    for epoch, seconds in enumerate((3.0, 4.5)):
        runner._event(trial=trial.trial_id, event="epoch", epoch=epoch, execution=0, seconds=seconds, logs={"val_loss": 0.3})
    r.end(trial, loss=0.3)

    record = {record.trial_id: record for record in collect_trials(RunPaths(tmp_path, "r"))}[trial.trial_id]

    assert record.status == "COMPLETED" and record.seconds == pytest.approx(7.5), record


def test_a_trial_resumed_after_a_stop_counts_the_stopped_attempts_epochs(running, tmp_path: Path) -> None:
    """Attempt 1 stopped after its first epoch (no end line), attempt 2 resumed and ended: both attempts' time counts."""
    r = running(max_trials=2)
    runner = _runner(tmp_path, r.port)
    trial = runner.client.create_trial()
    runner._event(trial=trial.trial_id, event="start")
    runner._event(trial=trial.trial_id, event="epoch", epoch=0, execution=0, seconds=3.0, logs={"val_loss": 0.4})
    runner._event(trial=trial.trial_id, event="start")  # the resumed attempt
    runner._event(trial=trial.trial_id, event="epoch", epoch=1, execution=0, seconds=4.0, logs={"val_loss": 0.3})
    runner._event(trial=trial.trial_id, event="end", status="COMPLETED", seconds=5.0, score=0.3)
    r.end(trial, loss=0.3)

    record = {record.trial_id: record for record in collect_trials(RunPaths(tmp_path, "r"))}[trial.trial_id]

    assert record.status == "COMPLETED" and record.seconds == pytest.approx(8.0) and record.attempts == 2, record
