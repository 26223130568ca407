"""`toonvision_extended`: the article's space plus its "additional tunings" (issue 16, item 1).

- The article's ten hyperparameters keep their names and ranges; `toonvision`
  stays exactly the article's space.
- Every corner of the space (1, 2 and 3 blocks; the smallest and the largest
  pools, kernels, filters and dropout; each optimizer, activation and the
  ends of the learning rate) builds at 600x200 and at small sizes, from
  values as the oracle hands them out (only the active hyperparameters: a
  block that does not exist has none), and trains a step at small sizes.
- A search with it completes, its trials' batch sizes differ, and `fit` used
  them: each epoch's step count in the attempts log is the training set over
  the trial's batch size.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from helpers import SMALL_SIZE, attempt_events, snapshot, trial_files

keras_tuner = pytest.importorskip("keras_tuner")

from tuner_job import _kt  # noqa: E402
from tuner_job.hypermodels import build_toonvision, build_toonvision_extended, load_hypermodel  # noqa: E402
from tuner_job.objective import Objective  # noqa: E402

ARTICLE = {
    **{f"conv_{b}_filters": ("Int", 4, 16, 4) for b in (1, 2)},
    **{f"conv_{b}_kernel_size": ("Choice", [3, 5]) for b in (1, 2)},
    **{f"pool_{i}_size": ("Int", 2 if i % 2 else 1, 4, 1) for i in (1, 2, 3, 4)},
    **{f"dropout_{b}_rate": ("Float", 0.0, 0.9, 0.1) for b in (1, 2)},
}


def _described(hp) -> tuple:  # noqa: ANN001
    config = hp.get_config()
    if "values" in config:
        return ("Choice", config["values"])
    return (type(hp).__name__, config["min_value"], pytest.approx(config["max_value"]), pytest.approx(config["step"]))


def _oracle_space(build) -> keras_tuner.HyperParameters:  # noqa: ANN001
    oracle = _kt.make_oracle("random", objective=Objective("val_loss", "min"), max_trials=1, epochs=1, seed=0, hyperparameters=None)
    _kt.populate_space(oracle, load_hypermodel(build, (64, 32, 3), 4))
    return oracle.hyperparameters


def test_the_article_space_is_kept_and_extended_as_the_issue_says() -> None:
    article = {hp.name: hp for hp in _oracle_space("toonvision").space}
    assert {name: _described(hp) for name, hp in article.items()} == ARTICLE  # `toonvision` is exactly the article's
    extended = {hp.name: hp for hp in _oracle_space("toonvision_extended").space}
    second = ("conv_2_filters", "conv_2_kernel_size", "pool_3_size", "pool_4_size", "dropout_2_rate")
    for name, expected in ARTICLE.items():
        assert _described(extended[name]) == expected, name
        conditions = [(c.name, list(c.values)) for c in extended[name].conditions]
        assert conditions == ([("blocks", [2, 3])] if name in second else []), name
    for name in ("conv_3_filters", "conv_3_kernel_size", "pool_5_size", "pool_6_size", "dropout_3_rate"):
        assert [(c.name, list(c.values)) for c in extended[name].conditions] == [("blocks", [3])], name
    assert (extended["conv_3_filters"].min_value, extended["conv_3_filters"].max_value) == (4, 16)
    assert (extended["pool_5_size"].min_value, extended["pool_6_size"].min_value) == (2, 1)
    config = {name: extended[name].get_config() for name in ("blocks", "optimizer", "learning_rate", "batch_size", "activation")}
    assert (config["blocks"]["min_value"], config["blocks"]["max_value"], config["blocks"]["default"]) == (1, 3, 2)
    assert config["optimizer"]["values"] == ["adam", "sgd", "rmsprop"]
    assert (config["learning_rate"]["min_value"], config["learning_rate"]["max_value"], config["learning_rate"]["sampling"]) == (1e-4, 1e-2, "log")
    assert config["batch_size"]["values"] == [16, 32, 64] and config["activation"]["values"] == ["relu", "elu", "gelu"]
    assert len(extended) == len(ARTICLE) + 5 + 5


def _corner(space: keras_tuner.HyperParameters, blocks: int, large: bool, index: int) -> keras_tuner.HyperParameters:
    """One corner's values, only for the hyperparameters active there (what a trial from the oracle holds)."""
    wanted = {
        "blocks": blocks, "activation": ["relu", "elu", "gelu"][index % 3], "optimizer": ["adam", "sgd", "rmsprop"][index % 3],
        "learning_rate": 1e-2 if large else 1e-4, "batch_size": 64 if large else 16,
    }  # fmt: skip
    for block in (1, 2, 3):
        wanted |= {
            f"conv_{block}_filters": 16 if large else 4, f"conv_{block}_kernel_size": 5 if large else 3,
            f"pool_{2 * block - 1}_size": 4 if large else 2, f"pool_{2 * block}_size": 4 if large else 1,
            f"dropout_{block}_rate": 0.9 if large else 0.0,
        }  # fmt: skip
    hp = space.copy()
    hp.values = {}
    for parameter in hp.space:  # parents come first: each condition is judged on the values so far
        if hp.is_active(parameter):
            hp.values[parameter.name] = wanted[parameter.name]
    return hp


CORNERS = list(itertools.product([1, 2, 3], [False, True]))


@pytest.mark.parametrize("input_shape", [(600, 200, 3), (24, 16, 3), (8, 8, 3)])
def test_every_corner_builds_and_trains_a_step(input_shape: tuple[int, int, int]) -> None:
    import numpy as np

    space = _oracle_space("toonvision_extended")
    images = np.zeros((2, *input_shape), dtype="uint8")
    for index, (blocks, large) in enumerate(CORNERS):
        hp = _corner(space, blocks, large, index)
        assert {f"conv_{b}_filters" for b in (1, 2, 3) if f"conv_{b}_filters" in hp.values} == {f"conv_{b}_filters" for b in range(1, blocks + 1)}
        model = build_toonvision_extended(hp, input_shape, 4)
        convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
        assert len(convs) == blocks and all(c.activation.__name__ == hp.values["activation"] for c in convs)
        assert type(model.optimizer).__name__.lower() == hp.values["optimizer"]
        for layer in model.layers:
            if len(layer.output.shape) == 4:
                assert min(layer.output.shape[1:3]) >= 1, (blocks, large, layer.name, layer.output.shape)
        if input_shape[0] < 100:  # a training step: the article's size would only cost time
            history = model.fit(images, np.array([0, 3]), validation_data=(images, np.array([1, 2])), epochs=1, verbose=0)
            assert np.isfinite(history.history["loss"][0]), (blocks, large)
        assert model.predict(images[:1], verbose=0).shape == (1, 4)


def test_the_defaults_are_the_article_model() -> None:
    extended, article = build_toonvision_extended(keras_tuner.HyperParameters()), build_toonvision(keras_tuner.HyperParameters())
    assert [type(layer).__name__ for layer in extended.layers] == [type(layer).__name__ for layer in article.layers]
    assert extended.count_params() == article.count_params()
    assert type(extended.optimizer).__name__ == "Adam" and float(extended.optimizer.learning_rate) == pytest.approx(1e-3)


@pytest.fixture
def bigger(shared: Path) -> Path:
    """20 images per class: 64 to train on, so 16, 32 and 64 per batch make 4, 2 and 1 steps."""
    from cluster.synth import synthesize

    synthesize(shared / "data" / "cogs", per_class=20, size=SMALL_SIZE, seed=11)
    return shared / "data" / "cogs"


@pytest.mark.slow
def test_a_search_completes_and_fit_uses_each_trials_batch_size(search, bigger: Path) -> None:
    from tuner_job.data import load_image_folder

    images = snapshot(bigger, skip=(".cache",))
    s = search(run="ext", data="data/cogs", hypermodel="toonvision_extended", max_trials=5, batch_size=32, seed=3)
    s.start_all(workers=2)
    assert s.wait_all(timeout=400) == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()
    trials = trial_files(s.run_dir)
    assert len(trials) == 5 and all(t["status"] == "COMPLETED" for t in trials.values()), {k: t["status"] for k, t in trials.items()}
    train = len(load_image_folder(bigger, SMALL_SIZE, 0.2, 3).y_train)
    assert train == 64
    sizes = {tid: t["hyperparameters"]["values"]["batch_size"] for tid, t in trials.items()}
    assert len(set(sizes.values())) >= 2, sizes  # the trials' batch sizes differ
    epochs = [e for e in attempt_events(s.run_dir) if e["event"] == "epoch"]
    assert sorted(e["trial"] for e in epochs) == sorted(trials)
    for event in epochs:
        assert event["batch_size"] == sizes[event["trial"]] and event["steps"] == math.ceil(train / sizes[event["trial"]]), event
    assert snapshot(bigger, skip=(".cache",)) == images
