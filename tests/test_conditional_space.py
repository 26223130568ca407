"""`space` overrides and narrowing of conditional hyperparameters (issue 11, item 4).

The fault: a `space:` override of a hyperparameter declared inside
`hp.conditional_scope(...)` was declared to the oracle without its parents,
so KerasTuner never gave it a value and the chief died on a `KeyError`
(exit 70, restarted); `tunectl narrow` writes exactly such overrides, so the
next stage of any conditional hypermodel crashed. The hypermodel here has two
levels of conditions: `arch` -> `depth` (and `units_a`) -> `units_b`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import snapshot, trial_files

keras_tuner = pytest.importorskip("keras_tuner")

from tuner_job import _kt  # noqa: E402
from tuner_job.config import parse_config  # noqa: E402
from tuner_job.hypermodels import load_hypermodel  # noqa: E402
from tuner_job.objective import Objective  # noqa: E402
from tuner_job.prepare import build_oracle  # noqa: E402
from tuner_job.space_model import apply_overrides, parse_space, values_inside  # noqa: E402

TWO_LEVELS = """\
import keras


def build(hp, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    arch = hp.Choice("arch", ["small", "big"])
    with hp.conditional_scope("arch", ["small"]):
        if arch == "small":
            depth = hp.Choice("depth", [1, 2])
            x = keras.layers.Dense(hp.Int("units_a", 2, 8, step=2), activation="relu")(x)
            with hp.conditional_scope("depth", [2]):
                if depth == 2:
                    x = keras.layers.Dense(hp.Int("units_b", 2, 8, step=2), activation="relu")(x)
    with hp.conditional_scope("arch", ["big"]):
        if arch == "big":
            x = keras.layers.Dense(hp.Int("units_big", 8, 32, step=8), activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""

OVERRIDES = {"units_b": {"min": 4, "max": 6}, "units_a": {"values": [2, 4]}, "depth": {"values": [2]}}


@pytest.fixture
def two_levels(tmp_path: Path) -> str:
    (tmp_path / "two_levels.py").write_text(TWO_LEVELS)
    return f"{tmp_path / 'two_levels.py'}:build"


def _space_of(oracle) -> dict:  # noqa: ANN001
    return parse_space({"class_name": type(h).__name__, "config": h.get_config()} for h in oracle.hyperparameters.space)


def test_overrides_of_conditional_hyperparameters_keep_their_conditions(two_levels: str) -> None:
    config = parse_config({"hypermodel": two_levels, "space": OVERRIDES, "max_trials": 30})
    oracle = build_oracle(config, load_hypermodel(two_levels, (24, 16, 3), 4), Objective("val_loss", "min"))
    space = _space_of(oracle)
    assert space["units_b"].conditions == (("arch", ("small",)), ("depth", (2,)))
    assert (space["units_b"].min, space["units_b"].max) == (4, 6) and space["units_a"].values == (2, 4)
    assert space["depth"].kind == "fixed" and space["depth"].conditions == (("arch", ("small",)),)
    assert space["arch"].values == ("small", "big") and space["units_big"].conditions == (("arch", ("big",)),)
    _kt.quiet_oracle(oracle, lambda trial: None)  # no project folder: nothing to save
    seen_small = seen_big = 0
    for n in range(12):  # the narrowed space holds 4 + 4 points: the oracle stops when it has tried them
        trial = oracle.create_trial(f"tuner{n}")
        if trial.status != "RUNNING":
            break
        values = trial.hyperparameters.values
        assert values_inside(space, values) is not None, values
        if values["arch"] == "small":
            seen_small += 1
            assert values["depth"] == 2 and values["units_a"] in (2, 4) and 4 <= values["units_b"] <= 6, values
        else:
            seen_big += 1
            assert "units_b" not in values and "units_a" not in values, values
    assert seen_small and seen_big and seen_small + seen_big >= 6


@pytest.mark.slow
def test_a_conditional_hypermodel_is_searched_narrowed_and_searched_again(search, shared: Path, tmp_path: Path, two_levels: str) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    images = snapshot(shared / "data", skip=(".cache",))
    first = search(run="c1", hypermodel=two_levels, space={"units_b": {"min": 4, "max": 6}}, max_trials=6)
    first.start_all(workers=2)
    assert first.wait_all(timeout=300) == {"chief": 0, "tuner0": 0, "tuner1": 0}, first.all_logs()
    assert all(t["status"] == "COMPLETED" for t in trial_files(first.run_dir).values())

    out = tmp_path / "stage2.yaml"
    result = CliRunner().invoke(app, ["narrow", "--run", "c1", "--shared-dir", str(shared), "--top", "3", "--out", str(out), "--max-trials", "3"])
    assert result.exit_code == 0, result.output
    stage2 = yaml.safe_load(out.read_text())
    assert "units_b" in stage2["space"], stage2  # an override of a second-level conditional hyperparameter, kept

    second = search(**stage2)
    second.start_all(workers=2)
    assert second.wait_all(timeout=300) == {"chief": 0, "tuner0": 0, "tuner1": 0}, second.all_logs()
    assert "KeyError" not in second.all_logs()
    trials = trial_files(second.run_dir)
    trained = {tid: t for tid, t in trials.items() if not tid.startswith("w")}
    # The narrowed space may hold fewer new points than the budget: the oracle stops when it has tried them. Which
    # trials are the top 3 depends on training, so it may hold none beyond the seeded ones: completed, nothing trained.
    assert len(trained) <= 3 and all(t["status"] == "COMPLETED" for t in trained.values()), trials
    if not trained:
        assert "nothing new to train" in second.log("chief"), second.all_logs()
    definitions = parse_space(trials[sorted(trials)[-1]]["hyperparameters"]["space"])
    assert definitions["units_b"].conditions == (("arch", ("small",)), ("depth", (2,)))  # the condition kept through the chief
    narrowed = apply_overrides(definitions, parse_config(stage2).space)
    for tid, trial in trained.items():
        assert values_inside(narrowed, trial["hyperparameters"]["values"]) is not None, (tid, trial["hyperparameters"]["values"], stage2["space"])
    assert snapshot(shared / "data", skip=(".cache",)) == images
