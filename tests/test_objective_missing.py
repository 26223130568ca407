"""An objective the model does not log ends the search at its first trial; no completed trial is never exit 0 (issue 11, item 3).

The fault: `objective: val_acc` with a model that logs `val_accuracy`: every
trial trained in full and failed, and with fewer trials than the failure limit
the search reported "completed", exit 0. Now the first epoch that shows the
objective missing ends the trial as FAILED with the reason, the worker tells
the chief (EndTrial's `x-bad-input` metadata), the chief ends the search at
once and exits 2 with a "did you mean `val_accuracy`?" line. And any search
whose budget is spent without one completed trial is "failed" (exit 1).

These run the processes directly, as Kubernetes does: `tunectl local`'s own
check would stop the first case before it starts (tests/test_start_checks.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import attempt_events, error_lines, small_config, snapshot, trial_files

pytestmark = pytest.mark.slow


def test_the_first_trial_that_shows_the_objective_missing_ends_the_search_with_exit_2(search, shared: Path) -> None:
    images = snapshot(shared / "data", skip=(".cache",))
    s = search(run="acc", objective="val_acc", max_trials=6, epochs=3)
    s.start_all(workers=2)
    codes = s.wait_all(timeout=300)
    assert codes["chief"] == 2 and set(codes.values()) <= {1, 2} and 2 in (codes["tuner0"], codes["tuner1"]), (codes, s.all_logs())
    chief = error_lines(s.log("chief"))
    expected = "error: objective: the model does not log 'val_acc' (it logs accuracy, loss, val_accuracy, val_loss); did you mean `val_accuracy`?"
    assert len(chief) == 1 and chief[0].startswith(expected), s.log("chief")[-3000:]
    assert "Traceback" not in s.all_logs()
    status = json.loads((s.run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["bad_input"] is True and status["completed"] == 0, status
    started = [e for e in attempt_events(s.run_dir) if e["event"] == "start"]
    assert len(started) <= 2, started  # one trial per worker at most: none after the first showed it
    epochs = [e for e in attempt_events(s.run_dir) if e["event"] == "epoch"]
    assert epochs == [], epochs  # stopped at the first epoch's end, not after 3 epochs of each trial
    assert [t["status"] for t in trial_files(s.run_dir).values()].count("COMPLETED") == 0
    assert snapshot(shared / "data", skip=(".cache",)) == images


# Fails in the workers only (the check before the start runs this fit too, in tunectl's process).
FIT_FAILS = """\
import os

import keras
import keras_tuner


class Broken(keras_tuner.HyperModel):
    def build(self, hp):
        model = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(hp.Int("units", 2, 8, step=2))])
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    def fit(self, hp, model, *args, **kwargs):
        if os.environ.get("KERASTUNER_TUNER_ID", "").startswith("tuner"):
            raise RuntimeError("the GPU fell off the bus")
        return model.fit(*args, **kwargs)
"""


def test_a_search_in_which_no_trial_completed_never_exits_0(shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    (tmp_path / "broken.py").write_text(FIT_FAILS)
    config = tmp_path / "search.yaml"
    hypermodel = f"{tmp_path / 'broken.py'}:Broken"
    config.write_text(yaml.safe_dump(small_config(run="none", hypermodel=hypermodel, max_trials=2, max_consecutive_failed_trials=3)))
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--workers", "1", "--tensorboard-port", "0"])
    assert result.exit_code == 1, result.output[-4000:]
    assert "search failed in" in result.output and "no trial completed (2 failed; the last was trial 1" in result.output, result.output[-4000:]
    assert "restart" not in result.output and "stopping the chief" not in result.output  # it wrote the results and exited 1 itself
    assert "chief | exited with code 1" in result.output
    status = json.loads((shared / "runs" / "none" / "status.json").read_text())
    assert status["state"] == "failed" and status["failed"] == 2 and not status["bad_input"], status
