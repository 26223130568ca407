"""The objective's direction, decided once (KerasTuner's inference, or `objective_direction`) and used by every consumer.

One table: each row goes through the chief's oracle, the worker's best epoch
and its `ModelCheckpoint`/`EarlyStopping` modes, the scoreboard (best so far,
warm start), the results' ranking, narrowing's top trials and `tunectl`'s
reading of a finished run. The slow end-to-end proof (real training, the
checkpoint and the exported model) is `test_direction_search.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuner_job.config import parse_config
from tuner_job.errors import ConfigError
from tuner_job.layout import RunPaths
from tuner_job.narrowing import select_top
from tuner_job.objective import Objective, resolve_objective
from tuner_job.progress import Scoreboard
from tuner_job.results import TrialRecord, rank
from tuner_job.trials import read_objective

keras_tuner = pytest.importorskip("keras_tuner")

from tuner_job import _kt  # noqa: E402

DIRECTIONS = [
    # (objective, objective_direction, the direction every consumer must use)
    ("val_loss", None, "min"),
    ("val_accuracy", None, "max"),
    ("val_sparse_categorical_accuracy", None, "max"),
    ("val_auc", None, "max"),
    ("val_precision", None, "max"),
    ("val_recall", None, "max"),
    ("val_mean_absolute_error", None, "min"),
    ("val_hit_rate", "max", "max"),  # a custom metric: the config says which way
    ("val_hit_rate", "min", "min"),
    ("val_accuracy", "min", "min"),  # the config overrides KerasTuner
]

# Three epochs (or trials) whose objective values put the best at a different place per direction.
VALUES = [0.5, 0.9, 0.2]
BEST_INDEX = {"min": 2, "max": 1}


def _records() -> list[TrialRecord]:
    return [TrialRecord(str(i), "COMPLETED", "tuner0", {"x": i}, {}, v, 0, 1.0) for i, v in enumerate(VALUES)]


@pytest.mark.parametrize(("name", "override", "expected"), DIRECTIONS)
def test_every_consumer_uses_the_one_direction(name: str, override: str | None, expected: str, tmp_path: Path) -> None:
    from tuner_job.trial_backup import TrialBackup
    from tuner_job.trial_runner import TrialRunner

    objective = resolve_objective(name, override)
    assert objective == Objective(name, expected)

    # The chief: the oracle ranks and scores with it.
    oracle = _kt.make_oracle("random", objective=objective, max_trials=3, epochs=1, seed=0, hyperparameters=_kt.HyperParameters())
    assert _kt.objective_of(oracle) == objective

    # The worker: its best epoch, and the modes of its checkpoint and early stopping.
    config = parse_config({"objective": name, "objective_direction": override, "early_stopping_patience": 2})
    runner = TrialRunner(config, RunPaths(tmp_path, "r"), "tuner0", hypermodel=None, data=None, client=None)  # type: ignore[arg-type]
    assert runner.objective == objective
    epoch, logs = runner.objective.best_epoch({str(e): {name: v, "loss": 1.0} for e, v in enumerate(VALUES)})
    assert (epoch, logs[name]) == (BEST_INDEX[expected], VALUES[BEST_INDEX[expected]])
    backup = TrialBackup(tmp_path / "backup", runner.objective, best_epoch=0, best_score=VALUES[0])  # a resumed trial's best so far
    callbacks = runner._callbacks("0", 0, backup)
    stopping = next(c for c in callbacks if type(c).__name__ == "EarlyStopping")
    assert (backup.objective, stopping.monitor, stopping.mode) == (objective, name, expected)
    later = VALUES[BEST_INDEX[expected]]  # the best epoch's checkpoint follows the one direction too
    assert backup.objective.better(later, backup.best_score) == (later != VALUES[0])

    # The scoreboard (best so far, seeded trials too), the results' ranking and narrowing's top trials.
    board = Scoreboard(objective)
    for i, value in enumerate(VALUES):
        board.count(str(i), True, value)
    assert board.best == (str(BEST_INDEX[expected]), VALUES[BEST_INDEX[expected]])
    assert rank(_records(), objective)[0].trial_id == str(BEST_INDEX[expected])
    docs = [{"trial_id": str(i), "status": "COMPLETED", "score": v} for i, v in enumerate(VALUES)]
    assert select_top(docs, objective, top_k=1)[0][0]["trial_id"] == str(BEST_INDEX[expected])

    # `tunectl results/narrow/plot`: a finished run's objective, as its chief recorded it.
    paths = RunPaths(tmp_path, "done")
    paths.root.mkdir(parents=True)
    paths.config.write_text(yaml.safe_dump({"run": "done", "objective": name, **({"objective_direction": override} if override else {})}))
    paths.status.write_text(json.dumps({"state": "completed", "objective": name, "direction": expected}))
    assert read_objective(paths) == objective


def test_a_custom_metric_without_objective_direction_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_objective("val_hit_rate")
    message = str(raised.value)
    assert "objective_direction" in message and "val_hit_rate" in message and "\n" not in message
    assert raised.value.exit_code == 2


def test_a_run_read_without_status_takes_the_direction_its_trials_recorded(tmp_path: Path) -> None:
    """`tunectl` needs no TensorFlow for a run: the chief recorded the direction in each trial's metric."""
    paths = RunPaths(tmp_path, "r")
    paths.trial_dir("0").mkdir(parents=True)
    paths.config.write_text(yaml.safe_dump({"run": "r", "objective": "val_hit_rate"}))
    metrics = {"val_hit_rate": {"direction": "max", "observations": [{"value": [0.5], "step": 0}]}}
    paths.trial_dir("0").joinpath("trial.json").write_text(
        json.dumps({"trial_id": "0", "status": "COMPLETED", "score": 0.5, "best_step": 0, "metrics": {"metrics": metrics}, "hyperparameters": {}})
    )
    assert read_objective(paths) == Objective("val_hit_rate", "max")


def test_better_best_and_best_epoch_ignore_what_is_not_a_finite_number() -> None:
    low = Objective("val_loss", "min")
    assert low.better(0.1, None) and low.better(0.1, 0.2) and not low.better(0.2, 0.2)
    for junk in (None, float("nan"), float("inf"), True, "0.1"):
        assert not low.better(junk, 0.5) and not low.better(junk, None)
    assert low.better(0.3, float("nan"))  # a NaN best so far is no best
    assert low.best([0.4, float("nan"), 0.3, None]) == 0.3
    assert Objective("val_auc", "max").best([]) is None
    epoch, _ = low.best_epoch({"0": {"val_loss": float("nan")}, "1": {"val_loss": 0.3}, "2": {"val_loss": 0.3}, "10": {"val_loss": 0.31}})
    assert epoch == 1  # the earliest of equals, as ModelCheckpoint(save_best_only) keeps it; epochs ordered as numbers
    with pytest.raises(ValueError, match=r"objective 'val_loss' was never a finite number: \[nan, inf\]") as raised:
        low.best_epoch({"0": {"val_loss": float("nan")}, "1": {"val_loss": float("inf")}})
    assert not isinstance(raised.value, ConfigError)  # a diverged trial fails; the search goes on
    with pytest.raises(ConfigError, match="objective_direction must be 'min' or 'max'"):
        Objective("val_loss", "down")


@pytest.mark.parametrize(
    ("name", "logged", "line"),
    [
        ("val_acc", ["loss", "accuracy", "val_loss", "val_accuracy"], "did you mean `val_accuracy`?"),
        ("val_los", ["loss", "val_loss"], "did you mean `val_loss`?"),
        ("val_hit_rate", ["loss", "val_loss"], "(it logs loss, val_loss); set objective:"),
    ],
)
def test_an_objective_the_model_does_not_log_is_bad_input_with_the_closest_name(name: str, logged: list[str], line: str) -> None:
    from tuner_job.objective import ObjectiveNotLoggedError

    objective = Objective(name, "min")
    history = {"0": {k: 0.5 for k in logged}, "1": {k: 0.4 for k in logged}}
    with pytest.raises(ObjectiveNotLoggedError) as raised:
        objective.best_epoch(history)
    message = str(raised.value)
    assert isinstance(raised.value, ConfigError) and "\n" not in message  # exit 2, one line
    assert message.startswith(f"objective: the model does not log {name!r}") and line in message, message
    if "did you mean" not in line:
        assert "did you mean" not in message
    objective.require_logged([*logged, name])  # present: no error


def test_equal_scores_go_to_the_first_trial_whatever_order_they_ended_in() -> None:
    """The chief's best (and so the exported model) is the trial the results and KerasTuner rank first."""
    objective = Objective("val_precision", "max")
    board = Scoreboard(objective)
    for trial_id, score in [("3", 1.0), ("1", 0.5), ("2", 1.0), ("10", 1.0)]:  # the order they ended
        board.count(trial_id, True, score)
    assert board.best == ("2", 1.0)
    records = [TrialRecord(t, "COMPLETED", None, {}, {}, s, 0, None) for t, s in [("1", 0.5), ("2", 1.0), ("3", 1.0), ("10", 1.0)]]
    assert rank(records, objective)[0].trial_id == "2"
    board.offer("w7", 1.0)  # a seeded trial: first in trial order
    assert board.best == ("w7", 1.0)
    board.offer("0", float("nan"))
    assert board.best == ("w7", 1.0)


def test_a_warm_started_search_is_done_at_its_true_count() -> None:
    """Seeded trials are inside max_trials and done: 4 seeded + 4 trained of 8 is 8/8 (as `results` counts), not 4/8."""
    from tuner_job.progress import SearchProgress, trials_done_of_max

    progress = SearchProgress(Objective("val_loss", "min"), max_consecutive_failed_trials=3)
    progress.seeded = 4
    for trial_id in "0123":
        progress.record_end(trial_id, True, 0.5)
    assert trials_done_of_max(progress.status(max_trials=8)) == (8, 8)
    assert trials_done_of_max({"trials_done": 3, "max_trials": 6}) == (3, 6)  # a status.json from before `seeded`
    assert trials_done_of_max({}) == (None, None)


def test_a_search_whose_space_ran_out_says_so() -> None:
    """4 configurations in the space, max_trials 6: "completed", and the verdict says why only 4 ran."""
    from tuner_job.progress import SearchProgress

    progress = SearchProgress(Objective("val_loss", "min"), max_consecutive_failed_trials=3)
    for trial_id in "0123":
        progress.record_end(trial_id, True, 0.5)
    state, message = progress.conclusion()
    assert state == "completed" and "no untried configuration" not in message
    progress.exhausted = True
    state, message = progress.conclusion()
    assert state == "completed" and message.endswith("the space has no untried configuration left, so fewer trials ran than max_trials")


def test_a_warm_start_that_fills_the_space_is_completed_not_failed() -> None:
    """`narrow` around few configurations, and a seeded run whose space is all seeded: nothing to train is not a failure."""
    from tuner_job.progress import SearchProgress

    progress = SearchProgress(Objective("val_loss", "min"), max_consecutive_failed_trials=3)
    progress.seeded = 3
    progress.scoreboard.offer("w0", 0.4)
    progress.exhausted = True
    state, message = progress.conclusion()
    assert state == "completed" and "no configuration beyond the 3 seeded trials" in message and "0.4" in message, message
    progress.exhausted = False  # stopped for another reason with nothing trained: still failed
    assert progress.conclusion()[0] == "failed"
