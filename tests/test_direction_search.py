"""A maximised objective, end to end with real TensorFlow: every trial keeps its best (highest) epoch.

The bug this guards: with `objective: val_precision` the workers kept each
trial's worst epoch and checkpointed with `mode="min"` while the oracle
maximised, so the exported "best" model was the worst trial. Here a binary
model with `keras.metrics.Precision` (KerasTuner infers "max"), and a custom
metric with `objective_direction: max`, each run a real search; then:

- each trial's reported score and best step are its highest epoch (from the
  workers' per-epoch log);
- its checkpoint holds that epoch's weights (evaluated again, it scores the same);
- the exported best model is the trial ranked first (the chief's best, the
  results' first row, the highest score), and scores what that trial scored.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from helpers import SMALL_SIZE, attempt_events, trial_files

pytestmark = pytest.mark.slow

HYPERMODEL = """\
import keras


def hit_rate(y_true, y_pred):
    # A custom metric: KerasTuner cannot tell its direction from the name.
    y_true = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "float32")
    return keras.ops.mean(keras.ops.equal(y_true, keras.ops.round(keras.ops.reshape(y_pred, (-1,)))))


def build(hp, input_shape):
    model = keras.Sequential([
        keras.Input(input_shape), keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(hp.Int("units", 2, 8, step=2), activation="tanh"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(hp.Float("lr", 1e-2, 1e-1, sampling="log")), "binary_crossentropy",
                  metrics=[keras.metrics.Precision(name="precision"), hit_rate])
    return model
"""


@pytest.fixture
def binary(shared: Path, tmp_path: Path) -> Path:
    """Two classes of 40 noise images that a small model learns over a few epochs (so the
    objective changes from epoch to epoch), and the hypermodel file."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    for name, (low, high) in {"bright": (70, 256), "dark": (0, 186)}.items():
        folder = shared / "data" / "binary" / name
        folder.mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(low, high, size=(*SMALL_SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:02d}.png")
    (tmp_path / "binary_model.py").write_text(HYPERMODEL)
    return tmp_path / "binary_model.py"


def _epochs(run_dir: Path, objective: str) -> dict[str, list[float]]:
    """Each trial's objective per epoch, as its worker logged it."""
    per_trial: dict[str, dict[int, float]] = {}
    for event in attempt_events(run_dir):
        if event["event"] == "epoch":
            per_trial.setdefault(event["trial"], {})[event["epoch"]] = event["logs"][objective]
    return {trial: [values[e] for e in sorted(values)] for trial, values in per_trial.items()}


def _evaluate(shared: Path, config: dict, model, objective: str) -> float:  # noqa: ANN001
    from tuner_job.data import load_image_folder

    data = load_image_folder(shared / config["data"], tuple(config["image_size"]), 0.2, config["seed"])
    metrics = model.evaluate(data.x_val.astype("float32"), data.y_val, batch_size=64, verbose=0, return_dict=True)
    return metrics[objective.removeprefix("val_")]


@pytest.mark.parametrize(("objective", "direction"), [("val_precision", None), ("val_hit_rate", "max")])
def test_a_maximised_objective_keeps_each_trials_best_epoch_and_exports_the_best_trial(
    search, binary: Path, shared: Path, objective: str, direction: str | None
) -> None:
    import keras

    from tuner_job.hypermodels import load_hypermodel

    extra = {"objective_direction": direction} if direction else {}
    s = search(run="p", data="data/binary", hypermodel=f"{binary}:build", objective=objective, max_trials=4, epochs=5,
               batch_size=8, seed=5, **extra)  # fmt: skip
    s.start_all(workers=2)
    assert s.wait_all(timeout=300) == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()

    trials = trial_files(s.run_dir)
    epochs = _epochs(s.run_dir, objective)
    assert sorted(epochs) == sorted(trials) and all(t["status"] == "COMPLETED" for t in trials.values()), s.all_logs()
    assert any(len(set(values)) > 1 for values in epochs.values()), f"every trial's {objective} was flat; nothing told best from worst: {epochs}"
    build = load_hypermodel(f"{binary}:build", (*SMALL_SIZE, 3), 2)
    for trial_id, trial in trials.items():
        values = epochs[trial_id]
        best = max(values)
        assert trial["score"] == pytest.approx(best), (trial_id, values)
        assert trial["best_step"] == values.index(best), (trial_id, values)  # the first epoch with it, as the checkpoint keeps
        model = build(_hp(trial))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_weights(str(s.run_dir / "tuner" / f"trial_{trial_id}" / "checkpoint.weights.h5"))
        assert _evaluate(shared, s.config, model, objective) == pytest.approx(best, abs=1e-6), (trial_id, values)

    ranked = json.loads((s.run_dir / "results.json").read_text())
    status = json.loads((s.run_dir / "status.json").read_text())
    exported = yaml.safe_load((s.run_dir / "best" / "hyperparameters.yaml").read_text())
    top = max(trials, key=lambda t: (trials[t]["score"], -int(t)))  # the highest score; of equals, the first trial
    assert ranked["direction"] == status["direction"] == "max"
    assert ranked["trials"][0]["trial_id"] == status["best"]["trial_id"] == exported["trial_id"] == top, (ranked["trials"][:2], status, exported)
    best_model = keras.models.load_model(s.run_dir / "best" / "model.keras", custom_objects={"hit_rate": _hit_rate(binary)}, compile=True)
    assert _evaluate(shared, s.config, best_model, objective) == pytest.approx(trials[top]["score"], abs=1e-6)
    assert f"objective={objective} (higher is better)" in s.log("chief"), s.log("chief")[-2000:]


def _hp(trial: dict):  # noqa: ANN202
    from tuner_job import _kt

    return _kt.Trial.from_state(trial).hyperparameters


def _hit_rate(path: Path):  # noqa: ANN202
    import importlib.util

    spec = importlib.util.spec_from_file_location("binary_model_for_test", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.hit_rate


def test_a_custom_metric_without_objective_direction_stops_the_chief_at_once(search, binary: Path) -> None:
    s = search(run="p", data="data/binary", hypermodel=f"{binary}:build", objective="val_hit_rate")
    s.start("chief")
    assert s.wait("chief", timeout=120) == 2
    lines = [line for line in s.log("chief").splitlines() if line.strip()]
    assert lines[-1].startswith("error: objective:") and "objective_direction" in lines[-1], lines[-5:]
    assert "Traceback" not in s.log("chief")
    assert not s.run_dir.exists()  # bad input: nothing written
