"""Users' own hypermodels, in every form KerasTuner takes: functions, `HyperModel` subclasses and instances.

The fault this guards (issue 11, item 1): `hypermodel: hm.py:MyHyperModel`, a
`keras_tuner.HyperModel` subclass with its own `__init__(self, num_classes)`,
was called as if it were a build function (`TypeError: got multiple values
for argument 'num_classes'`), and the chief restarted three times before it
gave up with exit 70. Now a class is instantiated with what its constructor
takes (`input_shape`, `num_classes`), an instance is used as it is, and the
worker trains through the hypermodel's own `fit`, as KerasTuner's
`Tuner.run_trial` does, with the worker's data and callbacks: a `fit` that
tunes the batch size gets data batched to it (the steps per epoch show it).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from helpers import attempt_events, small_config, snapshot, trial_files

keras_tuner = pytest.importorskip("keras_tuner")

from tuner_job.errors import HypermodelError  # noqa: E402
from tuner_job.hypermodels import LoadedHypermodel, load_hypermodel  # noqa: E402

# The input: its own constructor, and a fit that tunes the batch size (KerasTuner's guide's way).
HM = """\
import keras
import keras_tuner


class MyHyperModel(keras_tuner.HyperModel):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def build(self, hp):
        # No keras.Input: unbuilt until it sees data, as KerasTuner's guides and the article write models.
        model = keras.Sequential([
            keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(hp.Int("units", 2, 8, step=2), activation="relu"),
            keras.layers.Dense(self.num_classes, activation="softmax"),
        ])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=hp.Choice("batch_size", [4, 8]), **kwargs)


class Shaped(MyHyperModel):
    def __init__(self, input_shape, num_classes, width=3):
        super().__init__(num_classes)
        self.input_shape, self.width = input_shape, width


instance = MyHyperModel(num_classes=3)
"""


@pytest.fixture
def hm(tmp_path: Path) -> Path:
    (tmp_path / "hm.py").write_text(HM)
    return tmp_path / "hm.py"


def test_classes_get_what_their_constructor_takes_and_instances_are_used_as_they_are(hm: Path) -> None:
    loaded = load_hypermodel(f"{hm}:MyHyperModel", (24, 16, 3), 4)
    assert isinstance(loaded, LoadedHypermodel) and loaded.overrides_fit
    assert loaded.inner.num_classes == 4
    model = loaded(keras_tuner.HyperParameters())
    assert model.built and model.output_shape == (None, 4)  # built for the dataset's images: BackupAndRestore needs weights

    shaped = load_hypermodel(f"{hm}:Shaped", (24, 16, 3), 2).inner
    assert (shaped.input_shape, shaped.num_classes, shaped.width) == ((24, 16, 3), 2, 3)

    instance = load_hypermodel(f"{hm}:instance", (24, 16, 3), 4)
    assert instance.inner.num_classes == 3  # the user's own instance, untouched

    function = load_hypermodel("toonvision", (24, 16, 3), 4)
    assert not function.overrides_fit and function(keras_tuner.HyperParameters()).output_shape == (None, 4)


@pytest.mark.parametrize(
    ("source", "name", "expected"),
    [
        ("import keras_tuner\nclass A(keras_tuner.HyperModel):\n    def __init__(self, depth):\n        super().__init__()\n", "A",
         "A() needs depth, but only input_shape and num_classes can be given"),
        ("class B:\n    pass\n", "B", "is a class B, not a build(hp) function, a keras_tuner.HyperModel subclass"),
        ("x = 3\n", "x", "is a int, not a build(hp) function"),
        ("import keras_tuner\nclass C(keras_tuner.HyperModel):\n    def __init__(self, num_classes):\n        raise ValueError('no')\n", "C",
         "C(num_classes) raised ValueError: no"),
    ],
)  # fmt: skip
def test_a_hypermodel_that_cannot_be_made_is_one_line(tmp_path: Path, source: str, name: str, expected: str) -> None:
    (tmp_path / "bad.py").write_text(source)
    with pytest.raises(HypermodelError, match=re.escape(expected)) as raised:
        load_hypermodel(f"{tmp_path / 'bad.py'}:{name}", (24, 16, 3), 4)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_a_hypermodel_subclass_tuning_its_batch_size_runs_a_whole_search(shared: Path, tmp_path: Path, hm: Path) -> None:
    """The issue's input, end to end with `tunectl local`: exit 0, no restart, every trial trained through the user's fit."""
    from typer.testing import CliRunner

    from cluster.cli import app

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(run="hm", hypermodel=f"{hm}:MyHyperModel", max_trials=3, batch_size=32)))
    images = snapshot(shared / "data", skip=(".cache",))
    result = CliRunner().invoke(
        app, ["local", "--config", str(config), "--shared-dir", str(shared), "--workers", "2", "--tensorboard-port", "0", "--max-restarts", "0"]
    )
    assert result.exit_code == 0, result.output[-5000:]
    assert "restart" not in result.output and result.output.count("chief | started") == 1, result.output[-3000:]
    run = shared / "runs" / "hm"
    trials = trial_files(run)
    assert len(trials) == 3 and all(t["status"] == "COMPLETED" for t in trials.values()), trials
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    train_images = _train_size(shared)
    for event in (e for e in attempt_events(run) if e["event"] == "epoch"):
        batch_size = trials[event["trial"]]["hyperparameters"]["values"]["batch_size"]
        assert batch_size in (4, 8) and event["batch_size"] == batch_size  # the user's fit chose it, not the config's 32
        assert event["steps"] == math.ceil(train_images / batch_size), event  # and model.fit trained at it
    assert snapshot(shared / "data", skip=(".cache",)) == images


def _train_size(shared: Path) -> int:
    from tuner_job.data import load_image_folder

    config = small_config()
    return len(load_image_folder(shared / config["data"], tuple(config["image_size"]), 0.2, 42).y_train)


# KerasTuner's guide "Tune the training loop", as a user writes it for our worker: `build` returns an
# uncompiled model, `fit` trains it with its own loop over the dataset it is given, reports its own
# metric to the callbacks at each epoch's end (without set_params or on_epoch_begin) and returns it.
OWN_LOOP = """\
import keras
import keras_tuner
import tensorflow as tf


class LoopHyperModel(keras_tuner.HyperModel):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def build(self, hp):
        return keras.Sequential([
            keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(hp.Int("units", 2, 8, step=2), activation="relu"), keras.layers.Dense(self.num_classes),
        ])

    def fit(self, hp, model, x, validation_data, callbacks=None, epochs=1, **kwargs):
        optimizer = keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"))
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        for callback in callbacks:
            callback.set_model(model)
        best = float("inf")
        for epoch in range(kwargs.get("initial_epoch", 0), epochs):
            for images, labels in x:
                with tf.GradientTape() as tape:
                    loss = loss_fn(labels, model(images, training=True))
                optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            total = [float(loss_fn(labels, model(images))) for images, labels in validation_data]
            my_metric = sum(total) / len(total)
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs={"my_metric": my_metric})
            best = min(best, my_metric)
        return best
"""


@pytest.mark.slow
def test_a_custom_training_loop_as_keras_tuners_guide_writes_it_runs_a_whole_search(shared: Path, tmp_path: Path) -> None:
    """Uncompiled model, a loop of its own over `x` (it must end), its own metric as the objective: every trial completes."""
    from typer.testing import CliRunner

    from cluster.cli import app

    (tmp_path / "loop.py").write_text(OWN_LOOP)
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(
        run="loop", hypermodel="loop.py:LoopHyperModel", objective="my_metric", objective_direction="min", max_trials=2, epochs=2,
    )))  # fmt: skip
    result = CliRunner().invoke(
        app, ["local", "--config", str(config), "--shared-dir", str(shared), "--workers", "1", "--tensorboard-port", "0", "--max-restarts", "0"]
    )
    assert result.exit_code == 0, result.output[-5000:]
    run = shared / "runs" / "loop"
    trials = trial_files(run)
    assert len(trials) == 2 and all(t["status"] == "COMPLETED" for t in trials.values()), trials
    epochs = [e for e in attempt_events(run) if e["event"] == "epoch"]
    assert sorted((e["trial"], e["epoch"]) for e in epochs) == sorted((t, n) for t in trials for n in (0, 1))
    assert all("my_metric" in e["logs"] for e in epochs)
    assert all((run / "checkpoints").glob("*")), "each trial published its best epoch's weights"
