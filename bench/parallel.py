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

Every algorithm gets the same budget of `budget` epochs: a job that would
take the total past it is not run, and the run ends when the running jobs
end. Per run: utilisation = busy / (M x makespan); time_to_target = the
simulated time when a reported score first reaches `target` (None: never);
best_at_budget = the best reported score; closest_running = the smallest
distance, in the space's steps, between a trial handed out and one running
then (below 1: the same configuration twice at once).
"""

from __future__ import annotations

import heapq
import math
import os
import random
import statistics
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ALGORITHMS", "SimConfig", "simulate", "run_parallel", "hartmann3", "summarize_parallel"]

ALGORITHMS = ("stock_hyperband", "stock_bayesian", "stock_random", "asha", "our_bayesian")
NOISE = 0.02
_A = np.array([[3.0, 10.0, 30.0], [0.1, 10.0, 35.0], [3.0, 10.0, 30.0], [0.1, 10.0, 35.0]])
_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
HARTMANN3_MIN = -3.86278


def hartmann3(x: Any) -> float:
    """The Hartmann-3 function on [0, 1]^3 (to be minimised)."""
    x = np.asarray(x, dtype=float)
    return float(-np.sum(_ALPHA * np.exp(-np.sum(_A * (x - _P) ** 2, axis=1))))


def score(x: tuple[float, float, float], epochs: int, noise_key: str) -> float:
    """The objective after `epochs` epochs, with noise seeded by `noise_key`."""
    tau = 2.0 + 6.0 * x[1]
    rng = random.Random(zlib.crc32(noise_key.encode()))
    return hartmann3(x) * (1.0 - math.exp(-epochs / tau)) + rng.gauss(0.0, NOISE)


def epoch_time(x: tuple[float, float, float]) -> float:
    return 0.75 + 0.5 * x[2]


@dataclass(frozen=True)
class SimConfig:
    """One simulated search. `budget`: epochs over all jobs; `target`: the score to reach."""

    algorithm: str
    workers: int
    seed: int
    max_epochs: int = 27
    factor: int = 3
    budget: int = 1125
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
    if config.algorithm == "stock_hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=config.max_epochs, factor=config.factor, hyperband_iterations=big, **common)
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
        oracle = _kt.make_oracle("bayesian", max_trials=big, epochs=config.max_epochs, bayesian_liar="worst", **common)
    else:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, but got {config.algorithm!r}.")
    return _kt.quiet_oracle(oracle, lambda trial: None)


def _point(values: dict[str, Any]) -> tuple[float, float, float]:
    return (float(values["x1"]), float(values["x2"]), float(values["x3"]))


def simulate(config: SimConfig) -> dict[str, Any]:
    """Run one simulated search; return its record (see the module doc)."""
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
        if run.spent + cost > config.budget:
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
            run.best = result
        if run.first_target is None and result <= config.target:
            run.first_target = now
        waiting, parked[:] = list(parked), []
        for other in [worker, *waiting]:
            ask(other, now)
    return {
        "algorithm": config.algorithm,
        "M": config.workers,
        "seed": config.seed,
        "utilisation": run.busy / (config.workers * run.makespan) if run.makespan else None,
        "time_to_target": run.first_target,
        "best_at_budget": run.best,
        "makespan": run.makespan,
        "epochs": run.spent,
        "trials": run.trials,
        "idle_answers": run.idle_answers,
        "closest_running": run.closest,
    }


def run_parallel(
    workers: list[int], seeds: int, algorithms: list[str] | None = None, jobs: int | None = None, log: Any = None, **sizes: Any
) -> list[dict[str, Any]]:
    """Every (algorithm, M, seed), spread over `jobs` processes (default: the cores, at most 2)."""
    algorithms = algorithms or list(ALGORITHMS)
    configs = [SimConfig(a, m, s, **sizes) for a in algorithms for m in workers for s in range(seeds)]
    # The Bayesian runs fit a Gaussian process per trial: start them first.
    configs.sort(key=lambda c: ("bayesian" not in c.algorithm, c.workers))
    jobs = jobs or min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    records: list[dict[str, Any]] = []
    if jobs <= 1:
        for config in configs:
            records.append(simulate(config))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for done, record in enumerate(pool.map(simulate, configs), start=1):
                records.append(record)
                if log is not None and done % 10 == 0:
                    log(f"parallel: {done}/{len(configs)} simulated searches")
    order = {a: i for i, a in enumerate(algorithms)}
    records.sort(key=lambda r: (order[r["algorithm"]], r["M"], r["seed"]))
    return records


def _median(values: list[float | None]) -> float | None:
    """The median, an unreached target counting as infinitely late; None when most never reached it."""
    finite = [math.inf if v is None else v for v in values]
    if not finite:
        return None
    middle = statistics.median(finite)
    return None if math.isinf(middle) else middle


def summarize_parallel(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (algorithm, M): medians over the seeds."""
    rows = []
    keys = sorted({(r["algorithm"], r["M"]) for r in records}, key=lambda k: (ALGORITHMS.index(k[0]) if k[0] in ALGORITHMS else 99, k[1]))
    for algorithm, m in keys:
        runs = [r for r in records if r["algorithm"] == algorithm and r["M"] == m]
        closest = [r["closest_running"] for r in runs if r["closest_running"] is not None]
        rows.append({
            "algorithm": algorithm,
            "M": m,
            "seeds": len(runs),
            "utilisation": statistics.median(r["utilisation"] for r in runs),
            "time_to_target": _median([r["time_to_target"] for r in runs]),
            "reached": sum(r["time_to_target"] is not None for r in runs),
            "best_at_budget": statistics.median(r["best_at_budget"] for r in runs),
            "trials": statistics.median(r["trials"] for r in runs),
            "closest_running": min(closest) if closest else None,
        })
    return rows
