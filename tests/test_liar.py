"""Bayesian optimisation that knows what is running: the decision (no server) and the oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tuner_job.liar import LIES, LiarGP, steps_apart

STEPS = np.full(2, 0.1)


def _snap(x: np.ndarray) -> np.ndarray:
    """A 2-D space of 10 x 10 values: a point stands for the centre of its cell."""
    return (np.minimum(np.floor(x / 0.1), 9) + 0.5) * 0.1


def _bowl(points: np.ndarray) -> np.ndarray:
    return np.sum((points - np.array([0.35, 0.65])) ** 2, axis=1)


def _observed() -> tuple[np.ndarray, np.ndarray]:
    grid = np.array([_snap(np.array(p)) for p in itertools.product([0.05, 0.45, 0.85], [0.05, 0.45, 0.85])])
    return grid, _bowl(grid)


def test_steps_apart() -> None:
    others = np.array([[0.15, 0.45], [0.25, 0.45], [0.55, 0.95]])
    assert steps_apart(np.array([0.15, 0.45]), others, STEPS).tolist() == pytest.approx([0.0, 1.0, 5.0])
    assert steps_apart(np.array([0.1, 0.1]), np.zeros((0, 2)), STEPS).shape == (0,)


def test_an_unknown_lie_is_refused() -> None:
    with pytest.raises(ValueError, match="lie must be one of"):
        LiarGP(lie="optimistic")  # type: ignore[arg-type]


@pytest.mark.parametrize("lie", LIES)
def test_a_proposal_differs_from_the_running_ones(lie: str) -> None:
    """Ask for a point with nothing running; then, with that point running, ask
    again (the next worker asks before the first ends): the model knows it runs
    and proposes a point at least a step away from it and from each other."""
    x, y = _observed()
    running = np.zeros((0, 2))
    proposals = []
    for _ in range(6):
        point = LiarGP(lie=lie, seed=5, restarts=10).propose(x, y, running, STEPS, snap=_snap)
        assert point is not None
        assert steps_apart(point, np.vstack([x, running]), STEPS).min() >= 1.0 - 1e-9, (point, running)
        proposals.append(point)
        running = np.vstack([running, point])
    assert len({tuple(p) for p in proposals}) == 6
    # The first proposal is where the model is most promising: near the bowl's bottom.
    assert _bowl(proposals[0][None, :])[0] < _bowl(x).min()


def test_lies_are_what_they_say() -> None:
    scores = np.array([3.0, 1.0, 2.0])
    assert [LiarGP(lie=lie).lie_value(scores) for lie in ("worst", "mean", "best")] == [3.0, 2.0, 1.0]


def test_no_proposal_when_every_point_is_taken() -> None:
    everything = np.array([_snap(np.array(p)) for p in itertools.product(np.arange(10) / 10 + 0.05, repeat=2)])
    assert LiarGP(seed=1, restarts=5).propose(everything[:50], _bowl(everything[:50]), everything[50:], STEPS, snap=_snap) is None


# ----- the KerasTuner oracle ---------------------------------------------------


def _space():
    from tuner_job import _kt

    space = _kt.HyperParameters()
    space.Float("rate", 0.0, 1.0, step=0.05)
    space.Choice("act", ["relu", "tanh", "elu"])
    return space


def _oracle(liar: str, max_trials: int = 40):
    from tuner_job import _kt

    oracle = _kt.make_oracle("bayesian", objective="val_loss", max_trials=max_trials, epochs=1, seed=2, hyperparameters=_space(),
                             bayesian_initial_points=4, bayesian_liar=liar)
    return _kt.quiet_oracle(oracle, lambda trial: None)


def _end(oracle, trial) -> None:
    values = trial.hyperparameters.values
    oracle.update_trial(trial.trial_id, {"val_loss": (values["rate"] - 0.3) ** 2 + (values["act"] != "tanh")})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_liar_setting_picks_the_oracle() -> None:
    import keras_tuner

    from tuner_job._kt_bayesian import ParallelBayesianOracle

    assert type(_oracle("off")) is keras_tuner.oracles.BayesianOptimizationOracle
    ours = _oracle("believer")
    assert isinstance(ours, ParallelBayesianOracle) and ours.proposer.lie == "believer"


def test_parallel_workers_get_distinct_configurations() -> None:
    """8 workers ask one after another while the others run (twice): every running
    trial is at least a step from every other, and no configuration repeats."""
    from tuner_job._kt_bayesian import space_steps, unit_point

    oracle = _oracle("believer")
    for i in range(4):  # the random initial points
        _end(oracle, oracle.create_trial(f"tuner{i}"))
    steps = space_steps(oracle.hyperparameters)
    for round_ in range(2):
        running = [oracle.create_trial(f"tuner{i}") for i in range(8)]
        points = np.array([unit_point(oracle.hyperparameters, t.hyperparameters.values) for t in running])
        for i, point in enumerate(points):
            assert steps_apart(point, np.delete(points, i, axis=0), steps).min() >= 1.0 - 1e-9, (round_, i, points)
        for trial in running:
            _end(oracle, trial)
    configs = [(t.hyperparameters.values["rate"], t.hyperparameters.values["act"]) for t in oracle.trials.values()]
    assert len(set(configs)) == len(configs) == 20


def test_unit_point_tells_float_steps_apart() -> None:
    """KerasTuner's own `value_to_prob` puts 0.2 and 0.25 on the same point (0.25 // 0.05 is 4.0)."""
    from tuner_job._kt_bayesian import space_steps, unit_point

    space = _space()
    rate = space.space[0]
    assert rate.value_to_prob(0.2) == rate.value_to_prob(0.25)  # the flaw worked around
    a = unit_point(space, {"rate": 0.25, "act": "relu"})
    b = unit_point(space, {"rate": 0.2, "act": "relu"})
    assert a[0] - b[0] == pytest.approx(space_steps(space)[0]) and a[1] == b[1]  # one step apart
