"""`tuner_job._kt`'s shortcuts give what stock KerasTuner gives, only cheaper."""

from __future__ import annotations

import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from tuner_job import _kt  # noqa: E402
from tuner_job.hypermodels import load_hypermodel  # noqa: E402


def _conditional_space() -> _kt.HyperParameters:
    hp = _kt.HyperParameters()
    kind = hp.Choice("kind", ["a", "b"])
    with hp.conditional_scope("kind", ["a"]):
        hp.Int("units", 8, 64, step=8)
    with hp.conditional_scope("kind", ["b"]):
        hp.Float("rate", 1e-4, 1e-1, sampling="log")
    hp.Boolean("flag")
    hp.Fixed("const", 3)
    assert kind == "a"
    return hp


def _state(trial: _kt.Trial) -> dict:
    """`get_state()` with the space as its names: a proto round trip reorders
    hyperparameters by type and fills in defaults, so configs differ in form."""
    state = trial.get_state()
    state["hyperparameters"]["space"] = sorted(hp["config"]["name"] for hp in state["hyperparameters"]["space"])
    return state


def _oracle(space: _kt.HyperParameters) -> _kt.Oracle:
    oracle = _kt.make_oracle("random", objective="val_loss", max_trials=50, epochs=1, seed=3, hyperparameters=space)
    return _kt.quiet_oracle(oracle, lambda trial: None)


@pytest.mark.parametrize("which", ["conditional", "toonvision"])
def test_cheap_space_copy_equals_the_stock_copy(which: str) -> None:
    if which == "conditional":
        oracle = _oracle(_conditional_space())
        oracle.hyperparameters.values = {"kind": "b", "rate": 0.01, "flag": False, "const": 3}
    else:
        oracle = _oracle(_kt.HyperParameters())
        _kt.populate_space(oracle, load_hypermodel("toonvision", input_shape=(40, 120, 3), num_classes=4))
        assert len(oracle.hyperparameters.space) >= 5
    assert type(oracle.hyperparameters) is not _kt.HyperParameters, "the oracle's space was not given the cheap copy"
    cheap = oracle.hyperparameters.copy()
    stock = _kt.HyperParameters.copy(oracle.hyperparameters)
    assert type(cheap) is _kt.HyperParameters
    assert cheap.get_config() == stock.get_config()
    assert [hp is orig for hp, orig in zip(cheap.space, oracle.hyperparameters.space, strict=True)] == [False] * len(cheap.space)
    cheap.values["__probe"] = 1
    assert "__probe" not in oracle.hyperparameters.values, "the copy shares its values with the space"


def test_trials_from_the_cheap_copy_match_the_stock_oracle() -> None:
    cheap, stock = _oracle(_conditional_space()), keras_tuner.oracles.RandomSearchOracle(
        objective="val_loss", max_trials=50, seed=3, hyperparameters=_conditional_space()
    )
    stock._save_trial = stock.save = lambda *a: None
    for n in range(10):
        a, b = cheap.create_trial(f"t{n}"), stock.create_trial(f"t{n}")
        assert a.hyperparameters.get_config() == b.hyperparameters.get_config()


def test_proto_cache_gives_the_stock_protos() -> None:
    oracle = _oracle(_conditional_space())
    cache = _kt.ProtoCache()
    trial = oracle.create_trial("t0")
    assert cache.to_proto(trial) == trial.to_proto()
    oracle.update_trial(trial.trial_id, {"val_loss": 0.5}, step=2)
    trial.score, trial.best_step = 0.5, 2
    assert cache.to_proto(trial) == trial.to_proto(), "metrics and score come fresh, not from the cache"

    sent = cache.to_proto(trial)
    back = cache.from_proto(sent, trial)
    assert back.hyperparameters is trial.hyperparameters, "unchanged hyperparameters are not decoded again"
    assert _state(back) == _state(_kt.Trial.from_proto(sent))

    changed = _kt.Trial.from_proto(sent)
    changed.hyperparameters.Int("new_units", 1, 4)  # a worker's model added a hyperparameter
    back = cache.from_proto(changed.to_proto(), trial)
    assert back.hyperparameters is not trial.hyperparameters
    assert "new_units" in back.hyperparameters.values
    assert _state(back) == _state(_kt.Trial.from_proto(changed.to_proto()))

    trial.hyperparameters = trial.hyperparameters.copy()  # as end_trial replaces them
    trial.hyperparameters.values["flag"] = not trial.hyperparameters.values["flag"]
    assert cache.to_proto(trial) == trial.to_proto(), "a replaced HyperParameters object is not served from the cache"
