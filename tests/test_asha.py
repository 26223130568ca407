"""Asynchronous successive halving: the decision (no server), and the KerasTuner oracle around it."""

from __future__ import annotations

import random

import pytest

from tuner_job.asha import AsyncSuccessiveHalving, Job, rung_epochs


def _asha(**kwargs) -> AsyncSuccessiveHalving:
    settings = dict(min_epochs=1, max_epochs=9, factor=3, max_configs=100)
    settings.update(kwargs)
    return AsyncSuccessiveHalving(**settings)


def _start_new(asha: AsyncSuccessiveHalving, trial_id: str) -> Job:
    job = asha.next_job()
    assert job is not None and job.parent is None, job
    asha.started(trial_id, job)
    return job


@pytest.mark.parametrize(
    ("min_epochs", "max_epochs", "factor", "expected"),
    [(1, 27, 3, [1, 3, 9, 27]), (1, 10, 3, [1, 3, 10]), (2, 10, 3, [3, 10]), (5, 5, 3, [5]), (1, 8, 2, [1, 2, 4, 8]), (3, 100, 4, [6, 25, 100])],
)
def test_rung_epochs(min_epochs: int, max_epochs: int, factor: int, expected: list[int]) -> None:
    assert rung_epochs(min_epochs, max_epochs, factor) == expected


@pytest.mark.parametrize(("args", "message"), [((0, 9, 3), "min_epochs"), ((10, 9, 3), "min_epochs"), ((1, 9, 1), "factor")])
def test_rung_epochs_rejects_bad_arguments(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rung_epochs(*args)


def test_a_budget_is_required() -> None:
    with pytest.raises(ValueError, match="max_configs or max_total_epochs"):
        _asha(max_configs=None, max_total_epochs=None)


def test_promotion_rule_top_third_of_the_rung_not_yet_promoted() -> None:
    asha = _asha()  # rungs at 1, 3, 9 epochs
    for index, score in enumerate([0.5, 0.2, 0.9]):
        _start_new(asha, f"a{index}")
        asha.ended(f"a{index}", score)
    # 3 results at rung 0: the top 1/3 is one trial, the best (a1).
    job = asha.next_job()
    assert job == Job(rung=1, epochs=3, initial_epoch=1, parent="a1")
    asha.started("p1", job)
    # a1 is promoted; with 3 results the quota is spent: a new configuration.
    assert asha.next_job() == Job(rung=0, epochs=1)
    for index, score in enumerate([0.8, 0.7], start=3):
        _start_new(asha, f"a{index}")
        asha.ended(f"a{index}", score)
    assert asha.next_job().parent is None  # 5 results: quota 1, still spent
    _start_new(asha, "a5")
    asha.ended("a5", 0.3)
    # 6 results: quota 2, the top two are a1 (promoted) and a5: a5 goes up.
    assert asha.next_job() == Job(rung=1, epochs=3, initial_epoch=1, parent="a5")


def _results(asha: AsyncSuccessiveHalving, rung: int, scores: dict[str, float], parent: str | None = None) -> None:
    """Record results at `rung` directly (the setting of a test, not a decision)."""
    for trial_id, score in scores.items():
        asha.started(trial_id, Job(rung, asha.epochs[rung], asha.epochs[rung - 1] if rung else 0, parent and f"{parent}-{trial_id}"))
        asha.ended(trial_id, score)


def test_top_rung_results_are_never_promoted() -> None:
    asha = _asha(max_epochs=3)  # rungs at 1, 3
    _results(asha, 1, {f"top{i}": float(i) for i in range(9)}, parent="x")
    assert asha.next_job() == Job(rung=0, epochs=1)


def test_promotions_from_the_highest_rung_first() -> None:
    asha = _asha(max_epochs=9)  # rungs at 1, 3, 9
    _results(asha, 0, {f"a{i}": float(i) for i in range(3)})
    _results(asha, 1, {f"b{i}": float(i) for i in range(3)}, parent="a")
    # Both rungs have a trial due (a0 and b0): the deeper one goes first.
    job = asha.next_job()
    assert job == Job(rung=2, epochs=9, initial_epoch=3, parent="b0")
    asha.started("c0", job)
    assert asha.next_job() == Job(rung=1, epochs=3, initial_epoch=1, parent="a0")


def test_maximised_objective_promotes_the_highest_score() -> None:
    from tuner_job.objective import Objective

    asha = _asha(objective=Objective("val_accuracy", "max"))
    for index, score in enumerate([0.5, 0.2, 0.9]):
        _start_new(asha, f"a{index}")
        asha.ended(f"a{index}", score)
    assert asha.next_job().parent == "a2"


def test_a_failed_trial_has_no_result_and_is_never_promoted() -> None:
    asha = _asha()
    for index in range(3):
        _start_new(asha, f"a{index}")
    asha.ended("a0", None)  # failed
    asha.ended("a1", float("nan"))  # no usable score
    asha.ended("a2", 0.4)
    assert asha.rungs[0] == {"a2": 0.4} and asha.running == {}
    assert asha.next_job().parent is None  # one result: quota 0


def _drive(asha: AsyncSuccessiveHalving, workers: int, seed: int) -> list[tuple[int, Job | None]]:
    """A simulated search: each worker takes the next job the moment it is free.

    Returns (jobs running, decision) for every time a worker asked.
    """
    rng = random.Random(seed)
    quality: dict[str, float] = {}
    running: dict[str, Job] = {}
    asked: list[tuple[int, Job | None]] = []
    counter = 0
    free = list(range(workers))
    while True:
        while free:
            job = asha.next_job()
            asked.append((len(running), job))
            if job is None:
                break
            free.pop()
            trial_id = f"t{counter}"
            counter += 1
            quality[trial_id] = quality[job.parent] if job.parent else rng.random()
            asha.started(trial_id, job)
            running[trial_id] = job
        if not running:
            return asked
        trial_id = rng.choice(sorted(running))  # any running trial may end next
        job = running.pop(trial_id)
        asha.ended(trial_id, None if rng.random() < 0.05 else quality[trial_id] / job.epochs)
        free.append(0)


@pytest.mark.parametrize("workers", [1, 4, 16])
def test_no_worker_waits_while_the_configuration_budget_lasts(workers: int) -> None:
    asha = _asha(max_epochs=27, max_configs=60)
    for running, job in _drive(asha, workers, seed=workers):
        if job is None:
            # Asked and got nothing: only once every configuration was started.
            assert asha.configs == 60, (running, asha)
    assert asha.configs == 60
    assert asha.running == {}
    # Every due promotion happened: nothing is left to hand out, and the top
    # third of every rung below the top moved up.
    assert asha.next_job() is None
    for rung in range(len(asha.epochs) - 1):
        top = sorted(asha.rungs[rung], key=asha.rungs[rung].get)[: len(asha.rungs[rung]) // 3]
        assert set(top) <= asha.promoted[rung]


@pytest.mark.parametrize("workers", [1, 8])
def test_the_epoch_budget_is_respected_and_used(workers: int) -> None:
    asha = _asha(max_epochs=27, max_configs=None, max_total_epochs=500)
    asked = _drive(asha, workers, seed=3)
    assert asha.epochs_spent <= 500
    assert asha.epochs_spent > 500 - max(b - a for a, b in zip([0, *asha.epochs], asha.epochs, strict=False))  # nothing that fitted was left
    assert all(job is not None for _, job in asked[: len(asked) // 2])
    assert len(asha.rungs[-1]) >= 1  # some configuration reached the top rung


# ----- the KerasTuner oracle ---------------------------------------------------


def _oracle(max_trials: int | None = 30, **kwargs):
    from tuner_job import _kt

    space = _kt.HyperParameters()
    space.Int("units", 1, 512)
    space.Choice("act", ["relu", "tanh"])
    settings = dict(objective="val_loss", max_trials=max_trials, epochs=9, seed=1, hyperparameters=space, hyperband_factor=3)
    settings.update(kwargs)
    return _kt.quiet_oracle(_kt.make_oracle("asha", **settings), lambda trial: None)


def _end(oracle, trial, loss: float | None) -> None:
    if loss is None:
        trial.status = "FAILED"
    else:
        oracle.update_trial(trial.trial_id, {"val_loss": loss}, step=1)
        trial.status = "COMPLETED"
    oracle.end_trial(trial)


def _loss(trial) -> float:
    """A deterministic loss: smaller units and more epochs are better."""
    values = trial.hyperparameters.values
    return values["units"] / 512 + 1.0 / values["tuner/epochs"]


def test_oracle_trials_carry_the_rung_and_a_promotion_continues_its_parent() -> None:
    oracle = _oracle()
    trials = [oracle.create_trial(f"tuner{i}") for i in range(3)]
    for trial in trials:
        values = trial.hyperparameters.values
        assert trial.status == "RUNNING"
        assert (values["tuner/rung"], values["tuner/epochs"], values["tuner/initial_epoch"]) == (0, 1, 0)
        assert "tuner/trial_id" not in values
        _end(oracle, trial, _loss(trial))
    best = min(trials, key=_loss)
    promoted = oracle.create_trial("tuner0")
    values = promoted.hyperparameters.values
    assert values["tuner/trial_id"] == best.trial_id
    assert (values["tuner/rung"], values["tuner/epochs"], values["tuner/initial_epoch"]) == (1, 3, 1)
    assert {k: v for k, v in values.items() if not k.startswith("tuner/")} == {
        k: v for k, v in best.hyperparameters.values.items() if not k.startswith("tuner/")
    }


def test_oracle_never_idle_while_the_budget_lasts_then_stops() -> None:
    from tuner_job import _kt

    oracle = _oracle(max_trials=20)
    rng = random.Random(0)
    running = {f"tuner{i}": oracle.create_trial(f"tuner{i}") for i in range(8)}
    answers = []
    while running:
        tuner = rng.choice(sorted(running))
        trial = running.pop(tuner)
        _end(oracle, trial, None if rng.random() < 0.1 else _loss(trial))
        for asker in [tuner, *[f"tuner{i}" for i in range(8) if f"tuner{i}" not in running]]:
            if asker in running:
                continue
            spent_before = _kt.budget_spent(oracle)
            answer = oracle.create_trial(asker)
            answers.append(answer.status)
            assert (answer.status == "RUNNING") == (not spent_before), (answer.status, oracle.algorithm)
            if answer.status == "RUNNING":
                running[asker] = answer
            elif answer.status == "IDLE":
                assert running, "IDLE with nothing running: it should have been STOPPED"
    assert answers[-1] == "STOPPED" and "IDLE" in answers
    assert oracle.algorithm.configs == 20
    assert sum(1 for t in oracle.trials.values() if t.hyperparameters.values["tuner/rung"] == 0) == 20
    assert _kt.trial_budget(oracle) == 20 and oracle.max_trials is None
    # A new configuration never repeats one already started.
    configs = [(v["units"], v["act"]) for v in (t.hyperparameters.values for t in oracle.trials.values()) if v["tuner/rung"] == 0]
    assert len(configs) == len(set(configs))


def test_oracle_epoch_budget() -> None:
    oracle = _oracle(max_trials=None, asha_max_total_epochs=40)
    running = {}
    while True:
        for i in range(4):
            if f"tuner{i}" not in running:
                trial = oracle.create_trial(f"tuner{i}")
                if trial.status == "RUNNING":
                    running[f"tuner{i}"] = trial
        if not running:
            break
        tuner = sorted(running)[0]
        _end(oracle, running.pop(tuner), 0.5)
    spent = sum(t.hyperparameters.values["tuner/epochs"] - t.hyperparameters.values["tuner/initial_epoch"] for t in oracle.trials.values())
    assert spent == oracle.algorithm.epochs_spent and 40 - 6 < spent <= 40


def _half_done(oracle) -> dict[str, object]:
    """Start 12 configurations on 12 workers, end 9 of them, promote: a restart finds it mid-rung."""
    trials = [oracle.create_trial(f"tuner{i}") for i in range(12)]
    for trial in trials[:9]:
        _end(oracle, trial, _loss(trial))
    promoted = oracle.create_trial("tuner0")
    assert promoted.hyperparameters.values["tuner/rung"] == 1
    return {"running": sorted(t.trial_id for t in trials[9:]) + [promoted.trial_id]}


@pytest.mark.parametrize("oracle_json", ["kept", "lost"])
def test_oracle_restart_mid_rung_rebuilds_the_rungs_from_the_trials(oracle_json: str) -> None:
    from tuner_job import _kt, _kt_state

    before = _oracle()
    _half_done(before)
    trials = {t: _kt.Trial.from_state(before.trials[t].get_state()) for t in before.trials}
    after = _oracle()
    if oracle_json == "kept":
        _kt_state.restore_oracle_state(after, _kt_state.oracle_state(before), trials, list(before.end_order))
    else:
        _kt_state.rebuild_oracle_state(after, trials, list(before.end_order))
    for field in ("rungs", "promoted", "running", "configs", "epochs_spent"):
        assert getattr(after.algorithm, field) == getattr(before.algorithm, field), field
    assert after.algorithm.next_job() == before.algorithm.next_job()
