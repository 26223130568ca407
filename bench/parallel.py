"""`python -m bench --only parallel`: the search algorithms under M workers, simulated.

A discrete-event simulation: no training, no gRPC. Each algorithm is a real
KerasTuner oracle driven in this process (the stock `HyperbandOracle`,
`BayesianOptimizationOracle` and `RandomSearchOracle`, and ours: `asha` and the
constant-liar Bayesian), as our chief drives it: a free worker calls
`create_trial`; RUNNING starts a job, IDLE parks the worker until the next
trial ends (our chief holds an IDLE answer until something changes), STOPPED
retires it. A job's end reports one score (`update_trial`, `end_trial`).

The objective is a learning curve over the Hartmann-3 test function h(x)
(global minimum -3.86278 at (0.1146, 0.5556, 0.8525)): after e epochs a
configuration x scores h(x) * (1 - exp(-e / tau(x))) plus Gaussian noise
(sd `NOISE`), tau(x) = 2 + 6 x2, so some configurations learn faster and a
low rung ranks them imperfectly. An epoch takes 0.75 + 0.5 x3 time units (bigger
models train slower). The space: x1, x2, x3 in [0, 1], step 0.05.

Budgets, equal within each comparison: asha, stock Hyperband and random get
`per_worker_epochs` x M epochs (so that the end of the budget, when some
workers finish before others, is a small part of the run); the two Bayesian
oracles get `bayesian_trials` full trials (a Gaussian-process fit per trial
grows with the trials: a larger budget would take the benchmark past minutes).
A job that would take the total past the budget is not run, and the run ends
when the running jobs end. Stock Hyperband runs as many iterations as its
budget allows; `stock_hyperband_1it` is KerasTuner's default (and our chief's)
`hyperband_iterations=1`, which ends after one iteration (375 epochs with
max_epochs 27 and factor 3) whatever the budget: the setting in which the
issue measured Hyperband's idle workers.

Per run: utilisation = busy / (M x makespan); time_to_target = the simulated
time when a reported score first reaches `target` (None: never);
best_at_budget = the best reported score; best_noise_free = that trial's score
without the noise; improvements = (time, best so far) each time it improved
(the time to any other target); closest_running = the smallest distance, in the space's
steps, between a trial handed out and one running then (below 1: the same
configuration twice at once).
"""

from __future__ import annotations

import heapq
import math
import os
import random
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ALGORITHMS", "FULL_TRIALS", "SimConfig", "simulate", "plan", "run_parallel", "hartmann3", "curve"]

ALGORITHMS = ("stock_hyperband", "stock_hyperband_1it", "asha", "stock_random", "stock_bayesian", "our_bayesian")
#: Each gets `bayesian_trials` full trials; the others `per_worker_epochs` x M epochs.
FULL_TRIALS = ("stock_bayesian", "our_bayesian")
NOISE = 0.02
_A = np.array([[3.0, 10.0, 30.0], [0.1, 10.0, 35.0], [3.0, 10.0, 30.0], [0.1, 10.0, 35.0]])
_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
HARTMANN3_MIN = -3.86278


def hartmann3(x: Any) -> float:
    """The Hartmann-3 function on [0, 1]^3 (to be minimised)."""
    x = np.asarray(x, dtype=float)
    return float(-np.sum(_ALPHA * np.exp(-np.sum(_A * (x - _P) ** 2, axis=1))))


def curve(x: tuple[float, float, float], epochs: int) -> float:
    """The objective after `epochs` epochs, without noise."""
    return hartmann3(x) * (1.0 - math.exp(-epochs / (2.0 + 6.0 * x[1])))


def score(x: tuple[float, float, float], epochs: int, noise_key: str) -> float:
    """The objective after `epochs` epochs, with noise seeded by `noise_key`."""
    return curve(x, epochs) + random.Random(zlib.crc32(noise_key.encode())).gauss(0.0, NOISE)


def epoch_time(x: tuple[float, float, float]) -> float:
    return 0.75 + 0.5 * x[2]


@dataclass(frozen=True)
class SimConfig:
    """One simulated search. `budget`: epochs over all jobs (None: none); `target`: the score to reach."""

    algorithm: str
    workers: int
    seed: int
    max_epochs: int = 27
    factor: int = 3
    budget: int | None = 1125
    target: float = -3.6


@dataclass
class _Run:
    config: SimConfig
    busy: float = 0.0
    spent: int = 0
    makespan: float = 0.0
    trials: int = 0
    idle_answers: int = 0
    first_target: float | None = None
    best: float | None = None
    best_noise_free: float | None = None
    improvements: list[tuple[float, float]] = field(default_factory=list)
    closest: float | None = None
    running: dict[str, np.ndarray] = field(default_factory=dict)


def _space() -> Any:
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for name in ("x1", "x2", "x3"):
        hp.Float(name, 0.0, 1.0, step=0.05)
    return hp


def make_oracle(config: SimConfig) -> Any:
    """The algorithm's oracle, quiet (no files, no display), over the benchmark's space."""
    import keras_tuner

    from tuner_job import _kt

    common: dict[str, Any] = dict(objective=keras_tuner.Objective("loss", "min"), hyperparameters=_space(), seed=config.seed + 1)
    big = 100_000  # the epoch budget ends every run
    if config.algorithm in ("stock_hyperband", "stock_hyperband_1it"):
        iterations = 1 if config.algorithm == "stock_hyperband_1it" else big
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=config.max_epochs, factor=config.factor, hyperband_iterations=iterations, **common)
    elif config.algorithm == "stock_bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(max_trials=big, **common)
    elif config.algorithm == "stock_random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=big, **common)
    elif config.algorithm == "asha":
        oracle = _kt.make_oracle(
            "asha", max_trials=None, epochs=config.max_epochs, hyperband_factor=config.factor,
            asha_max_total_epochs=config.budget, **common,
        )
    elif config.algorithm == "our_bayesian":
        oracle = _kt.make_oracle("bayesian", max_trials=big, epochs=config.max_epochs, bayesian_liar="believer", **common)
    else:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, but got {config.algorithm!r}.")
    return _kt.quiet_oracle(oracle, lambda trial: None)


def _point(values: dict[str, Any]) -> tuple[float, float, float]:
    return (float(values["x1"]), float(values["x2"]), float(values["x3"]))


def simulate(config: SimConfig) -> dict[str, Any]:
    """Run one simulated search; return its record (see the module doc)."""
    import warnings

    from threadpoolctl import threadpool_limits

    # Ours fits its model on one BLAS thread; the stock oracle gets the same
    # (the figures are simulated time; this is the benchmark's own run time).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")  # the stock Gaussian process's ConvergenceWarning, per trial
        return _simulate(config)


def _simulate(config: SimConfig) -> dict[str, Any]:
    from tuner_job._kt_bayesian import space_steps, unit_point

    oracle = make_oracle(config)
    steps = space_steps(oracle.hyperparameters)
    run = _Run(config)
    events: list[tuple[float, int, str, Any]] = []  # (end time, sequence, worker, trial)
    parked: list[str] = []
    retired: set[str] = set()
    stopped = False
    sequence = 0

    def ask(worker: str, now: float) -> None:
        nonlocal stopped, sequence
        if stopped:
            retired.add(worker)
            return
        trial = oracle.create_trial(worker)
        if trial.status == "IDLE":
            run.idle_answers += 1
            parked.append(worker)
            return
        if trial.status != "RUNNING":
            retired.add(worker)
            return
        values = trial.hyperparameters.values
        epochs = int(values.get("tuner/epochs", config.max_epochs))
        cost = epochs - int(values.get("tuner/initial_epoch", 0))
        if config.budget is not None and run.spent + cost > config.budget:
            stopped = True  # this job does not fit: no more jobs, the running ones end
            retired.add(worker)
            return
        vector = unit_point(oracle.hyperparameters, values)
        if run.running:
            apart = float(np.min(np.max(np.abs(np.array(list(run.running.values())) - vector) / steps, axis=1)))
            run.closest = apart if run.closest is None else min(run.closest, apart)
        run.running[trial.trial_id] = vector
        run.spent += cost
        run.trials += 1
        duration = cost * epoch_time(_point(values))
        run.busy += duration
        sequence += 1
        heapq.heappush(events, (now + duration, sequence, worker, trial))

    for index in range(config.workers):
        ask(f"tuner{index}", 0.0)
    while events:
        now, _, worker, trial = heapq.heappop(events)
        values = trial.hyperparameters.values
        epochs = int(values.get("tuner/epochs", config.max_epochs))
        result = score(_point(values), epochs, f"{config.algorithm}/{config.seed}/{trial.trial_id}")
        oracle.update_trial(trial.trial_id, {"loss": result}, step=epochs)
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        del run.running[trial.trial_id]
        run.makespan = now
        if run.best is None or result < run.best:
            run.best, run.best_noise_free = result, curve(_point(values), epochs)
            run.improvements.append((now, result))
        if run.first_target is None and result <= config.target:
            run.first_target = now
        waiting, parked[:] = list(parked), []
        for other in [worker, *waiting]:
            ask(other, now)
    return {
        "algorithm": config.algorithm,
        "M": config.workers,
        "seed": config.seed,
        "budget": config.budget,
        "target": config.target,
        "utilisation": run.busy / (config.workers * run.makespan) if run.makespan else None,
        "time_to_target": run.first_target,
        "best_at_budget": run.best,
        "best_noise_free": run.best_noise_free,
        "makespan": run.makespan,
        "epochs": run.spent,
        "trials": run.trials,
        "idle_answers": run.idle_answers,
        "closest_running": run.closest,
        "improvements": run.improvements,
    }


def plan(
    workers: list[int],
    seeds: int,
    *,
    fast_seeds: int | None = None,
    per_worker_epochs: int = 384,
    bayesian_trials: int = 60,
    algorithms: list[str] | None = None,
    **settings: Any,
) -> list[SimConfig]:
    """Every (algorithm, M, seed) to simulate, with its budget (see the module doc).

    `seeds` seeds for the two Bayesian oracles (a Gaussian-process fit per
    trial: minutes per search); `fast_seeds` (default: `seeds`) for the others
    (seconds per search). The time to target varies much from seed to seed
    (the first configuration good enough is a matter of luck: stock Hyperband
    at M=16 takes 62 to 228 time units), so a median over 5 seeds cannot tell
    a 1.3x from a 1.6x ratio; 40 can (`parallel_report` gives its interval).
    """
    configs = []
    for algorithm in algorithms or ALGORITHMS:
        count = seeds if algorithm in FULL_TRIALS or fast_seeds is None else fast_seeds
        for m in workers:
            max_epochs = settings.get("max_epochs", SimConfig.max_epochs)
            if algorithm in FULL_TRIALS:
                budget: int | None = bayesian_trials * max_epochs
            else:
                budget = None if algorithm == "stock_hyperband_1it" else per_worker_epochs * m
            configs.extend(SimConfig(algorithm, m, seed, budget=budget, **settings) for seed in range(count))
    return configs


def run_parallel(configs: list[SimConfig], jobs: int | None = None, log: Any = None) -> list[dict[str, Any]]:
    """Simulate `configs` in `jobs` processes (default: the cores, at most 2); records in `ALGORITHMS` order."""
    import multiprocessing

    jobs = jobs or min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    # The Bayesian runs fit a Gaussian process per trial: start them first.
    ordered = sorted(configs, key=lambda c: (c.algorithm not in FULL_TRIALS, -c.workers))
    records: list[dict[str, Any]] = []
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the children import KerasTuner, hence TensorFlow: quietly
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done, record in enumerate(pool.map(simulate, ordered), start=1):
            records.append(record)
            if log is not None and (done % 10 == 0 or done == len(ordered)):
                log(f"parallel: {done}/{len(ordered)} simulated searches")
    order = {a: i for i, a in enumerate(ALGORITHMS)}
    records.sort(key=lambda r: (order.get(r["algorithm"], 99), r["M"], r["seed"]))
    return records
