"""TensorBoard's HParams table, read from a real TensorBoard through its plugin's HTTP API: with two runs in one
logdir, one row per trial of each run (`<run>/trial_<id>`), and the score each shows is the oracle's (the best
epoch's value), not the last epoch's.
"""

from __future__ import annotations

import json
import math

import pytest

from helpers import TensorBoardProcess, attempt_events, hparams_experiment, wait_for_http, wait_for_rows

pytestmark = pytest.mark.slow

EPOCHS = 3


def _results(run_dir) -> dict[str, dict]:
    return {str(t["trial_id"]): t for t in json.loads((run_dir / "results.json").read_text())["trials"]}


def _last_epoch(run_dir, trial_id: str, metric: str) -> float:
    epochs = [e for e in attempt_events(run_dir) if e["event"] == "epoch" and e["trial"] == trial_id]
    return max(epochs, key=lambda e: e["epoch"])["logs"][metric]


def test_each_trial_of_each_run_is_one_row_with_the_oracles_score(search, shared, tmp_path) -> None:
    # Maximising val_loss makes the best epoch an early one (the loss falls): the score is not the last epoch's value.
    runs = {}
    for run in ("first", "second"):
        s = search(run=run, max_trials=3, epochs=EPOCHS, objective="val_loss", objective_direction="max")
        s.start_all(2)
        assert s.wait_all(240) == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()
        runs[run] = s.run_dir

    with TensorBoardProcess(shared / "runs") as tb:
        wait_for_http(f"{tb.url}/data/runs", 120, lambda body: len(json.loads(body)) >= 8)
        expected = {f"{run}/trial_{i}" for run in runs for i in range(3)}
        rows = wait_for_rows(tb.url, expected, 60)
        experiment = hparams_experiment(tb.url)

    # Trials 0, 1 and 2 exist in both runs: six rows, not three merged ones.
    assert set(rows) == expected, rows
    not_last = 0
    for run, run_dir in runs.items():
        results = _results(run_dir)
        for trial_id, trial in results.items():
            shown = rows[f"{run}/trial_{trial_id}"]
            assert math.isclose(shown["score"], trial["score"], rel_tol=1e-6), (run, trial_id, shown, trial["score"])
            assert math.isclose(shown["best_epoch/val_accuracy"], trial["metrics"]["val_accuracy"], rel_tol=1e-6)
            last = _last_epoch(run_dir, trial_id, "val_loss")
            if trial["best_step"] < EPOCHS - 1 and not math.isclose(last, trial["score"], rel_tol=1e-6):
                not_last += 1
                assert not math.isclose(shown["score"], last, rel_tol=1e-6)
    assert not_last >= 1, "no trial's best epoch was before its last: the test would not tell the two apart"

    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics[0] == "score" and experiment["metricInfos"][0]["displayName"] == "val_loss (score)"
    assert "epoch_loss" not in metrics  # a last-epoch value is not offered as a column
    assert {h["name"] for h in experiment["hparamInfos"]} >= {"conv_1_filters", "dropout_1_rate"}
