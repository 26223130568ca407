"""`tunectl local` and `tunectl study` check the search before any process starts (issue 11, items 8 and 2).

The fault: only the data folder was checked up front; a bad `space`
override, a hypermodel that does not build or compile, or an objective whose
direction no one can tell cost a chief start-up (TensorFlow, the dataset, the
oracle) and, for a crash, three restarts. Now `python -m tuner_job --check`
runs first (`prepare.check_search`: the chief's own checks, plus one training
step on two blank images that shows which metrics the model logs), so each
mistake is one line, exit 2, and nothing has started or been written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import error_lines, small_config, snapshot

pytestmark = pytest.mark.slow

CUSTOM_METRIC = """\
import keras


def hit_rate(y_true, y_pred):
    labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int64")
    return keras.ops.mean(keras.ops.cast(keras.ops.equal(keras.ops.argmax(y_pred, -1), labels), "float32"))


def build(hp, input_shape, num_classes):
    model = keras.Sequential([keras.Input(input_shape), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(num_classes, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=[hit_rate])
    return model
"""

NOT_COMPILED = "import keras\ndef build(hp):\n    hp.Int('units', 1, 4)\n    return keras.Sequential([keras.layers.Dense(4)])\n"
RAISES = "def build(hp):\n    hp.Int('units', 1, 4)\n    raise RuntimeError('no GPU here')\n"
NEEDS_ARGUMENT = "import keras_tuner\nclass Needy(keras_tuner.HyperModel):\n    def __init__(self, num_classes, depth):\n        super().__init__()\n"

# (hypermodel file's text or None for the built-in, config overrides, what the one line says)
CASES = {
    "space names nothing": (None, {"space": {"conv_9_filters": {"min": 4, "max": 8}}}, "space.conv_9_filters: the hypermodel has no hyperparameter"),
    "space widens a range": (None, {"space": {"conv_1_filters": {"min": 2, "max": 8}}}, "space.conv_1_filters: [2, 8] widens the hypermodel's range"),
    "hypermodel not compiled": (NOT_COMPILED, {}, "returned a model that is not compiled"),
    "hypermodel raises": (RAISES, {}, "failed to build: RuntimeError: no GPU here"),
    "HyperModel needs an argument": (NEEDS_ARGUMENT, {"hypermodel": "Needy"}, "Needy() needs depth, but only input_shape and num_classes"),
    "custom metric without objective_direction": (CUSTOM_METRIC, {"objective": "val_hit_rate"}, "set objective_direction: min or max"),
    "objective the model does not log": (None, {"objective": "val_acc"}, "does not log 'val_acc'"),
    # What `tunectl narrow` around one configuration used to write: KerasTuner's GP then failed every CreateTrial.
    "bayesian with every hyperparameter fixed": (
        "import keras\ndef build(hp):\n    units = hp.Fixed('units', 8)\n    m = keras.Sequential([keras.layers.Flatten(), "
        "keras.layers.Dense(units), keras.layers.Dense(4, activation='softmax')])\n    m.compile('adam', 'sparse_categorical_crossentropy', "
        "metrics=['accuracy'])\n    return m\n",
        {"tuner": "bayesian"}, "tuner: bayesian needs a hyperparameter to tune, but the space fixes every one",
    ),
}


def _config(tmp_path: Path, source: str | None, overrides: dict) -> Path:
    config = dict(overrides)
    if source is not None:
        (tmp_path / "user_model.py").write_text(source)
        config["hypermodel"] = f"{tmp_path / 'user_model.py'}:{config.get('hypermodel', 'build')}"
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(small_config(**config)))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_tunectl_local_stops_a_bad_search_before_any_process_starts(case: str, shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    source, overrides, line = CASES[case]
    config = _config(tmp_path, source, overrides)
    before = snapshot(shared)
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", "0"])
    assert result.exit_code == 2, result.output[-3000:]
    errors = error_lines(result.output)
    assert len(errors) == 1 and line in errors[0], result.output[-3000:]
    assert "started (pid" not in result.output and "Traceback" not in result.output, result.output[-3000:]
    assert snapshot(shared) == before


def test_the_objective_line_offers_the_metric_meant(shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    config = _config(tmp_path, None, {"objective": "val_acc"})
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", "0"])
    assert result.exit_code == 2 and "did you mean `val_accuracy`?" in error_lines(result.output)[0], result.output


def test_tunectl_study_checks_its_first_stage_before_any_process_starts(shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    config = _config(tmp_path, CUSTOM_METRIC, {"objective": "val_hit_rate"})
    before = snapshot(shared)
    result = CliRunner().invoke(
        app, ["study", "--config", str(config), "--shared-dir", str(shared), "--stages", "random:2,bayesian:2", "--tensorboard-port", "0"]
    )
    assert result.exit_code == 2, result.output[-3000:]
    errors = error_lines(result.output)
    assert len(errors) == 1 and "objective_direction" in errors[0] and "started (pid" not in result.output, result.output[-3000:]
    assert snapshot(shared) == before


def test_a_good_search_passes_the_check_and_says_what_was_checked(shared: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from helpers import REPO

    config = _config(tmp_path, CUSTOM_METRIC, {"objective": "val_hit_rate", "objective_direction": "max"})
    before = snapshot(shared)
    result = subprocess.run(
        [sys.executable, "-m", "tuner_job", "--check", "--config", str(config), "--shared-dir", str(shared)],
        capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("checked: 4 classes, hypermodel"), result.stdout
    assert "objective val_hit_rate (higher is better) among its metrics" in result.stdout
    assert snapshot(shared) == before  # a check writes nothing, not even the dataset's cache
