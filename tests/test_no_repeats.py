"""A warm-started (or any earlier) point is never proposed again (issue 11, item 10).

The faults, each shown on the stock KerasTuner 1.4.8 oracle first (so the
test can tell a fix from luck), then shown gone on ours (`_kt.make_oracle`):

- Bayesian optimisation hands out the Gaussian process's optimum without
  asking whether a trial already had it: seeded with the earlier stage's
  trials, its first own trial was the best seeded point again.
- Random search dedups by hashing the values' text, so a point of a narrowed
  grid (0.2 + 4 * 0.1 = 0.6000000000000001) is "new" against the seeded 0.6.

The seeding is the chief's warm start (`_kt_state.seed_completed_trials`).
"""

from __future__ import annotations

import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from tuner_job import _kt, _kt_state  # noqa: E402
from tuner_job.objective import Objective  # noqa: E402
from tuner_job.space_model import point_key  # noqa: E402

OBJECTIVE = Objective("val_loss", "min")


def _mixed_space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    hp.Int("x", 1, 3)
    hp.Choice("c", ["a", "b"])
    hp.Float("r", 0.0, 0.9, step=0.1)
    return hp


def _grid_space() -> keras_tuner.HyperParameters:
    """A narrowed range: its grid starts at 0.2, the earlier run's at 0.0."""
    hp = keras_tuner.HyperParameters()
    hp.Float("r", 0.2, 0.9, step=0.1)
    return hp


def _seed(oracle, points: list[dict], scores: list[float]) -> None:  # noqa: ANN001
    trials = []
    for i, (values, score) in enumerate(zip(points, scores, strict=True)):
        hp = oracle.hyperparameters.copy()
        hp.values = dict(values)
        trial = _kt.Trial(hp, trial_id=str(i), status="COMPLETED")
        trial.score, trial.best_step = score, 0
        trials.append((f"w{i}", trial, "warm-start:earlier"))
    assert len(_kt_state.seed_completed_trials(oracle, trials)) == len(points)


def _propose(oracle, count: int, score: float = 0.5) -> tuple[list[dict], int]:  # noqa: ANN001
    """Run up to `count` trials (each ends COMPLETED, scoring `score` and up); return their values and how many repeated an earlier point."""
    _kt.quiet_oracle(oracle, lambda trial: None)
    seen = {point_key(t.hyperparameters.values) for t in oracle.trials.values()}
    proposed, repeats = [], 0
    for n in range(count):
        trial = oracle.create_trial(f"tuner{n}")
        if trial.status != "RUNNING":
            break
        key = point_key(trial.hyperparameters.values)
        repeats += key in seen
        seen.add(key)
        proposed.append(dict(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_loss": score + 0.01 * n})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    return proposed, repeats


MIXED_SEEDS = [{"x": 3, "c": "a", "r": 0.7}, {"x": 1, "c": "b", "r": 0.2}, {"x": 2, "c": "a", "r": 0.5}]


def test_bayesian_never_proposes_a_seeded_point_again() -> None:
    stock = keras_tuner.oracles.BayesianOptimizationOracle(
        objective=keras_tuner.Objective("val_loss", "min"), hyperparameters=_mixed_space(), max_trials=20, num_initial_points=2, seed=1
    )
    _seed(stock, MIXED_SEEDS, [0.1, 0.9, 0.5])
    # The fault: each new trial scores best, the GP's optimum stays where it was, then lands on the seeded (3, a, 0.7).
    assert _propose(stock, 8, score=0.05)[1] >= 1

    ours = _kt.make_oracle(
        "bayesian", objective=OBJECTIVE, max_trials=20, epochs=1, seed=1, hyperparameters=_mixed_space(), bayesian_initial_points=2
    )
    _seed(ours, MIXED_SEEDS, [0.1, 0.9, 0.5])
    proposed, repeats = _propose(ours, 8, score=0.05)
    assert len(proposed) == 8 and repeats == 0, proposed


GRID_SEEDS = [{"r": 0.3}, {"r": 0.7}, {"r": 0.9}, {"r": 0.6}]


def test_random_never_proposes_a_seeded_point_again_whatever_the_grid_noise() -> None:
    stock = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), hyperparameters=_grid_space(), max_trials=20, seed=1
    )
    _seed(stock, GRID_SEEDS, [0.3, 0.7, 0.9, 0.6])
    assert _propose(stock, 10)[1] >= 1  # the fault: 0.30000000000000004 is "new" to a hash of the text

    ours = _kt.make_oracle("random", objective=OBJECTIVE, max_trials=20, epochs=1, seed=1, hyperparameters=_grid_space())
    _seed(ours, GRID_SEEDS, [0.3, 0.7, 0.9, 0.6])
    proposed, repeats = _propose(ours, 10)
    assert repeats == 0 and sorted(round(v["r"], 9) for v in proposed) == [0.2, 0.4, 0.5, 0.8], proposed  # the 4 points left, then STOPPED


def test_a_restored_oracle_knows_every_earlier_point() -> None:
    """A restarted chief replaces the oracle's trials (`_kt_state.resume`): the index follows."""
    first = _kt.make_oracle("random", objective=OBJECTIVE, max_trials=20, epochs=1, seed=1, hyperparameters=_grid_space())
    proposed, _ = _propose(first, 5)
    again = _kt.make_oracle("random", objective=OBJECTIVE, max_trials=20, epochs=1, seed=1, hyperparameters=_grid_space())
    _kt.quiet_oracle(again, lambda trial: None)
    _kt_state.resume(again, None, dict(first.trials), list(first.end_order), {})
    more, repeats = _propose(again, 5)
    # 8 grid points, 5 done: what is left, never one of the 5 (the same seed would draw them first); like KerasTuner's
    # random search, it stops once `_max_collisions` draws in a row hit tried points, so the last may go unfound.
    assert repeats == 0 and 1 <= len(more) <= 3, more
    assert not {point_key(v) for v in more} & {point_key(v) for v in proposed}


def test_a_point_key_is_same_value_for_a_set() -> None:
    assert point_key({"r": 0.30000000000000004, "n": 4}) == point_key({"n": 4.0, "r": 0.3})
    assert point_key({"flag": True}) != point_key({"flag": 1})
    assert point_key({"x": 1, "tuner/epochs": 3, "tuner/trial_id": "2"}) == point_key({"x": 1})
    assert point_key({"r": 0.3}) != point_key({"r": 0.3001})


def test_a_seeded_grid_search_proposes_nothing_so_the_config_refuses_it() -> None:
    """Why `tuner: grid` with `warm_start` is a config error (tests/test_config.py): it would train nothing."""
    grid = _kt.make_oracle("grid", objective=OBJECTIVE, max_trials=20, epochs=1, seed=1, hyperparameters=_grid_space())
    _seed(grid, GRID_SEEDS, [0.3, 0.7, 0.9, 0.6])
    assert _propose(grid, 10) == ([], 0)

