"""One staged search: `tunectl study`, a `stages:` config and `tunectl narrow` give the same stages.

The fast tests build the stages from runs on disk (no TensorFlow); the slow
one shows a chief whose next stage cannot be narrowed stopping with exit 2
and one line, its workers stopping too, instead of a crash loop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from helpers import small_config
from test_narrow import TRIALS, write_run
from tuner_job.config import dump_config, load_config
from tuner_job.errors import NarrowingError
from tuner_job.stages import stage_config


def _study_config(tmp_path: Path) -> Path:
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(run="st", max_trials=50)))
    out = tmp_path / "staged.yaml"
    result = CliRunner().invoke(
        app, ["study", "--config", str(config), "--stages", "random:8,bayesian:3", "--top", "3", "--epochs", "2", "--write-config", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "st-s1, st-s2" in result.output
    return out


def test_study_and_stages_and_narrow_give_the_same_stages(tmp_path: Path) -> None:
    staged = load_config(_study_config(tmp_path))
    assert (staged.stages, staged.stage_top, staged.epochs, staged.run) == ("random:8,bayesian:3", 3, 2, "st")

    shared = tmp_path / "shared"
    first, result = stage_config(staged, 1, shared)
    assert result is None
    assert (first.run, first.tuner, first.max_trials, first.stages, first.warm_start) == ("st-s1", "random", 8, None, None)

    write_run(shared, "st-s1", config=yaml.safe_load(dump_config(first)))  # stage 1 ran: its config and trials
    second, result = stage_config(staged, 2, shared)
    assert result is not None and result.top_ids == ["00", "06", "04"]
    assert (second.run, second.tuner, second.max_trials, second.warm_start, second.epochs) == ("st-s2", "bayesian", 3, "st-s1", 2)

    # `tunectl narrow` of the same run, with the same choices, writes the same stage.
    out = tmp_path / "narrowed.yaml"
    args = ["narrow", "--run", "st-s1", "--shared-dir", str(shared), "--top", "3", "--new-run", "st-s2", "--tuner", "bayesian", "--max-trials", "3"]
    narrowed = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert narrowed.exit_code == 0, narrowed.output
    assert load_config(out) == second


def test_a_stage_that_cannot_be_narrowed_is_one_line_naming_no_flag(tmp_path: Path) -> None:
    staged = load_config(_study_config(tmp_path))
    shared = tmp_path / "shared"
    first, _ = stage_config(staged, 1, shared)
    write_run(shared, "st-s1", trials=[(None, "FAILED", values) for _, _, values in TRIALS[:3]], config=yaml.safe_load(dump_config(first)))
    with pytest.raises(NarrowingError) as raised:
        stage_config(staged, 2, shared)
    message = str(raised.value)
    assert message.startswith("stage 2: cannot narrow the space around run st-s1: no COMPLETED trial with a score among 3 trial(s)")
    assert "\n" not in message and "--" not in message
    assert raised.value.exit_code == 2


BROKEN_MODEL = """\
import keras


class CannotTrain(keras.Model):
    def train_step(self, data):
        raise ValueError("this model cannot train")


def build(hp, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(hp.Int("units", 2, 4), activation="relu")(keras.layers.Flatten()(inputs))
    model = CannotTrain(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""


@pytest.mark.slow
def test_a_stage_in_which_no_trial_completed_ends_the_staged_search_with_exit_1(search, tmp_path: Path) -> None:
    """Stage 1 fails ("no trial completed": never exit 0), so no later stage runs or is narrowed around nothing."""
    model = tmp_path / "broken.py"
    model.write_text(BROKEN_MODEL)
    s = search(run="nar", hypermodel=f"{model}:build", stages="random:2,random:2", max_consecutive_failed_trials=5)
    s.start_all(workers=1)
    codes = s.wait_all(timeout=240)
    chief = s.log("chief")
    assert codes["chief"] == 1, chief[-3000:]
    errors = [line for line in chief.splitlines() if line.startswith("error:")]
    assert errors == ["error: no trial completed (2 failed; the last was trial 1 (its error is in errors/trial_1.txt))"], chief[-3000:]
    assert chief.rstrip().splitlines()[-1] == errors[0] and "Traceback" not in chief
    assert codes["tuner0"] == 1, s.log("tuner0")[-3000:]  # the search failed
    shared = s.shared / "runs"
    assert (shared / "nar-s1" / "results.json").is_file()  # stage 1 is kept as it ended
    assert yaml.safe_load((shared / "nar-s1" / "status.json").read_text())["state"] == "failed"
    assert not (shared / "nar-s2").exists()
