"""KerasTuner's internals, part 1: the oracles, trials, protos and hooks (keras-tuner 1.4.8).

`_kt*.py` are the only modules that reach into `keras_tuner.src` or an
oracle's private attributes, so an upgrade touches them alone (a test
checks it): this one for the wire protocol's generated stubs, `Trial`, the
oracles, metric-direction inference, the space as plain data and the few
instance hooks we replace; `_kt_state` for the oracle's saved state, restart
recovery and its retry queue; `_kt_wire` for the protos without TensorFlow.
The hooks fix the faults DESIGN.md lists:

- `Oracle.save()` rewrites all of `oracle.json` in place, twice per trial, and
  `end_trial` calls it *before* it pops the ongoing trial (a restart then re-runs
  the last finished trial). We make it a no-op and persist through `StateStore`
  after each call returns, atomically and batched.
- `Oracle._save_trial()` writes `trial.json` in place; we route it to the store.
- `Oracle._check_consecutive_failures()` re-scans `end_order` (O(N)) and raises
  inside the `EndTrial` handler (keras-team/keras-tuner#1000-style hang); the
  server counts failures itself and ends the search cleanly.
- `Oracle._display` prints a table that sorts every trial, and its state holds a
  timestamp per trial that `save()` formats every time; we silence it.
- `Oracle.reload()` re-queues every in-flight trial, so after a chief restart
  they train twice; `_kt_state.resume` restores them to their owners instead.
- `HyperParameters.copy()` on the oracle's space (once per trial) round-trips
  through Keras' deserializer; the space gets a plain structural copy, and
  `ProtoCache` builds each running trial's hyperparameters proto once.
- `BayesianOptimizationOracle.populate_space` hands out the Gaussian
  process's optimum without asking whether a trial already had it, and the
  other oracles' check hashes the values' text, so grid noise
  (0.7000000000000001 against 0.7) slips through: a warm-started point was
  trained again. `no_repeated_points` checks every proposal against every
  trial (`space_model.point_key`) and draws a random new point instead.
"""

from __future__ import annotations

import copy
import functools
import itertools
import types
from typing import Any

import keras_tuner
from keras_tuner.src import protos as _protos
from keras_tuner.src.engine import base_tuner as _base_tuner
from keras_tuner.src.engine import hyperparameters as _hp
from keras_tuner.src.engine import metrics_tracking as _metrics_tracking
from keras_tuner.src.engine import trial as _trial

from tuner_job._kt_asha import AshaOracle
from tuner_job._kt_bayesian import ParallelBayesianOracle
from tuner_job.objective import Objective
from tuner_job.space_model import Hyperparameter, parse_space, point_key

__all__ = [
    "HyperParameters",
    "Trial",
    "TrialStatus",
    "Oracle",
    "pb",
    "pb_grpc",
    "make_oracle",
    "objective_of",
    "infer_metric_direction",
    "quiet_oracle",
    "ProtoCache",
    "populate_space",
    "no_repeated_points",
    "hp_class",
    "space_of",
    "describe_hp",
    "serve_stock_chief",
    "budget_spent",
    "trial_budget",
]

HyperParameters = _hp.HyperParameters
Trial = _trial.Trial
TrialStatus = _trial.TrialStatus
Oracle = keras_tuner.Oracle

#: KerasTuner's own gRPC messages and stubs: a stock worker can join our chief.
pb = _protos.get_service()
pb_grpc = _protos.get_service_grpc()


def infer_metric_direction(name: str) -> str | None:
    """KerasTuner's direction for a metric name: "min", "max", or None when it cannot tell.

    `val_` and `weighted_` prefixes are dropped; losses are "min"; accuracy,
    AUC, precision, recall and the like are "max"; any other Keras metric or
    loss is "min"; a name Keras does not know (a custom metric) is None.
    """
    return _metrics_tracking.infer_metric_direction(name)


def objective_of(oracle: Oracle) -> Objective:
    """The oracle's objective as ours (name and direction)."""
    return Objective(oracle.objective.name, oracle.objective.direction)


def make_oracle(
    tuner: str,
    *,
    objective: Objective | str,
    max_trials: int,
    epochs: int,
    seed: int,
    hyperparameters: HyperParameters | None,
    hyperband_factor: int = 3,
    max_retries_per_trial: int = 0,
    bayesian_initial_points: int | None = None,
    bayesian_liar: str = "believer",
    asha_min_epochs: int = 1,
    asha_max_total_epochs: int | None = None,
) -> Oracle:
    """The oracle `search.yaml` names: a stock one, or ours for asha and a parallel-aware bayesian.

    `objective` is ours (its direction decided by `objective.resolve_objective`),
    or a metric name for KerasTuner to infer the direction of. `bayesian_liar`
    "off" gives KerasTuner's own Bayesian oracle; "believer", "worst", "mean" or
    "best" ours, with that provisional score for running trials. For asha,
    `max_trials` counts new configurations (None: unbounded).

    Raises:
        ValueError: an unknown `tuner`, or a name whose direction KerasTuner cannot infer.
    """
    if isinstance(objective, Objective):
        objective = keras_tuner.Objective(objective.name, direction=objective.direction)
    common = dict(
        objective=objective,
        seed=seed,
        hyperparameters=hyperparameters,
        tune_new_entries=True,
        allow_new_entries=True,
        max_retries_per_trial=max_retries_per_trial,
        # Counted by the server instead: the stock check raises inside EndTrial.
        max_consecutive_failed_trials=None,
    )
    if tuner == "random":
        return no_repeated_points(keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common))
    if tuner == "bayesian" and bayesian_liar == "off":
        return no_repeated_points(
            keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, num_initial_points=bayesian_initial_points, **common)
        )
    if tuner == "bayesian":
        return no_repeated_points(
            ParallelBayesianOracle(lie=bayesian_liar, max_trials=max_trials, num_initial_points=bayesian_initial_points, **common)
        )
    if tuner == "asha":
        return no_repeated_points(
            AshaOracle(
                max_epochs=epochs, min_epochs=asha_min_epochs, factor=hyperband_factor,
                max_configs=max_trials, max_total_epochs=asha_max_total_epochs, **common,
            )  # fmt: skip
        )
    if tuner == "grid":
        # The grid walks each point once by construction, in its own linked order: a random point would break the walk.
        return keras_tuner.oracles.GridSearchOracle(max_trials=max_trials, **common)
    if tuner == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=epochs, factor=hyperband_factor, **common)
        # Hyperband sizes itself from max_epochs; max_trials still caps it.
        oracle.max_trials = max_trials
        return no_repeated_points(oracle)
    raise ValueError(f"tuner must be one of random, hyperband, bayesian, grid, asha, but got {tuner=}.")


def budget_spent(oracle: Oracle) -> bool:
    """The oracle can make no new trial now (retries and running trials aside).

    For the stock oracles: `max_trials` trials exist. For asha: no new
    configuration fits the budget and no promotion is due (one may become due
    when a running trial ends).
    """
    if isinstance(oracle, AshaOracle):
        return oracle.budget_spent()
    return oracle.max_trials is not None and len(oracle.trials) >= oracle.max_trials


def trial_budget(oracle: Oracle) -> int | None:
    """The search's `max_trials` as the oracle counts it (asha: new configurations)."""
    return oracle.max_configs if isinstance(oracle, AshaOracle) else oracle.max_trials


class _QuietDisplay:
    """Stands in for `Oracle._display`: no per-trial table, constant state."""

    verbose = 0

    def on_trial_begin(self, trial: Trial) -> None:
        pass

    def on_trial_end(self, trial: Trial) -> None:
        pass

    def get_state(self) -> dict[str, Any]:
        return {"search_start": None, "trial_start": {}, "trial_number": {}}

    def set_state(self, state: dict[str, Any]) -> None:
        pass


def quiet_oracle(oracle: Oracle, on_trial_saved: Any) -> Oracle:
    """Replace the oracle's persistence, display and failure check (see module doc)."""
    oracle.save = lambda: None
    oracle._save_trial = on_trial_saved
    oracle._display = _QuietDisplay()
    oracle._check_consecutive_failures = lambda: None
    _cheap_space_copies(oracle)
    return oracle


class _CheapCopyHyperParameters(HyperParameters):
    """The oracle's space: `copy()` without a serialization round trip.

    Stock `copy()` is `from_config(get_config())`, which resolves every
    hyperparameter class through Keras' deserializer (`inspect.signature`
    each time); `create_trial` pays it once per trial. This copy gives the
    same result (a plain `HyperParameters`, fresh hyperparameter objects, the
    values) for a fraction of the cost.
    """

    def copy(self) -> HyperParameters:
        new = HyperParameters()
        for hp in self._space:
            hp = copy.copy(hp)
            new._hps[hp.name].append(hp)
            new._space.append(hp)
        new.values = dict(self.values)
        return new


def _cheap_space_copies(oracle: Oracle) -> None:
    if type(oracle.hyperparameters) is HyperParameters:
        oracle.hyperparameters.__class__ = _CheapCopyHyperParameters


class ProtoCache:
    """Each running trial's hyperparameters as a proto, built once.

    CreateTrial, UpdateTrial and GetTrial answer with the whole trial, and its
    hyperparameters do not change while it runs; EndTrial sends them back, and
    when they are what was sent, they need no decoding. An entry is valid while
    the trial holds the same `HyperParameters` object (`end_trial` replaces it).
    """

    def __init__(self) -> None:
        self._protos: dict[str, tuple[HyperParameters, Any]] = {}

    def _hp_proto(self, trial: Trial) -> Any:
        entry = self._protos.get(trial.trial_id)
        if entry is None or entry[0] is not trial.hyperparameters:
            entry = (trial.hyperparameters, trial.hyperparameters.to_proto())
            self._protos[trial.trial_id] = entry
        return entry[1]

    def to_proto(self, trial: Trial) -> Any:
        """`trial.to_proto()`, with the hyperparameters from the cache."""
        score = None if trial.score is None else _protos.get_proto().Trial.Score(value=trial.score, step=trial.best_step)
        return _protos.get_proto().Trial(
            trial_id=trial.trial_id,
            hyperparameters=self._hp_proto(trial),
            score=score,
            status=TrialStatus.to_proto(trial.status),
            metrics=trial.metrics.to_proto(),
        )

    def from_proto(self, proto: Any, known: Trial | None) -> Trial:
        """`Trial.from_proto(proto)`; `known`'s hyperparameters when the proto's are the ones sent."""
        entry = self._protos.get(proto.trial_id)
        if known is not None and entry is not None and entry[0] is known.hyperparameters and proto.hyperparameters == entry[1]:
            hyperparameters = known.hyperparameters
        else:
            hyperparameters = HyperParameters.from_proto(proto.hyperparameters)
        trial = Trial(hyperparameters, trial_id=proto.trial_id, status=TrialStatus.from_proto(proto.status))
        if proto.HasField("score"):
            trial.score = proto.score.value
            trial.best_step = proto.score.step
        trial.metrics = _metrics_tracking.MetricsTracker.from_proto(proto.metrics)
        return trial

    def forget(self, trial_id: str) -> None:
        self._protos.pop(trial_id, None)


def populate_space(oracle: Oracle, hypermodel: Any) -> None:
    """Build the hypermodel until every conditional scope was seen (as `BaseTuner` does)."""
    shim = types.SimpleNamespace(oracle=oracle, hypermodel=_base_tuner.hm_module.get_hypermodel(hypermodel))
    shim._activate_all_conditions = functools.partial(_base_tuner.BaseTuner._activate_all_conditions, shim)
    _base_tuner.BaseTuner._populate_initial_space(shim)


def no_repeated_points(oracle: Oracle) -> Oracle:
    """Make `oracle` never propose a point a trial of it already has (seeded, restored or its own).

    Each proposal is checked against every trial's values (`point_key`: grid
    noise and `tuner/` keys aside); a repeat is replaced by a random new point
    (the oracle's own sampler, re-drawn while it repeats), and when none can
    be found the oracle stops, as KerasTuner's random search does when its
    space is exhausted. A Hyperband promotion (`tuner/trial_id`) continues an
    earlier trial on purpose and is not a repeat. Checking costs a set lookup:
    the trials are indexed as they appear.
    """
    propose = oracle.populate_space
    seen: set[Any] = set()
    indexed: dict[str, Any] = {"trials": None, "count": 0}

    def index_new_trials() -> None:
        trials = oracle.trials
        if indexed["trials"] is not trials or len(trials) < indexed["count"]:  # a restore replaced them
            seen.clear()
            indexed.update(trials=trials, count=0)
        for trial in itertools.islice(reversed(trials.values()), len(trials) - indexed["count"]):
            seen.add(point_key(trial.hyperparameters.values))
        indexed["count"] = len(trials)

    def populate_space(trial_id: str) -> dict[str, Any]:
        index_new_trials()
        response = propose(trial_id)
        values = response.get("values")
        if response.get("status") != TrialStatus.RUNNING or not values or values.get("tuner/trial_id") is not None:
            return response
        if point_key(values) not in seen:
            return response
        bookkeeping = {k: v for k, v in values.items() if k.startswith("tuner/")}
        for _ in range(oracle._max_collisions + 1):
            candidate = oracle._random_values()
            if candidate is None:
                break
            if point_key(candidate) not in seen:
                return {"status": TrialStatus.RUNNING, "values": {**candidate, **bookkeeping}}
        return {"status": TrialStatus.STOPPED, "values": None}

    oracle.populate_space = populate_space
    return oracle


def hp_class(name: str) -> Any:
    """A hyperparameter class by name: Int, Float, Choice, Boolean, Fixed."""
    return getattr(_hp, name)


def describe_hp(hp: Any) -> Hyperparameter | None:
    """A KerasTuner hyperparameter as the plain model (`space_model.Hyperparameter`); None for `tuner/...`."""
    return Hyperparameter.from_config({"class_name": type(hp).__name__, "config": hp.get_config()})


def space_of(hyperparameters: HyperParameters) -> dict[str, Hyperparameter]:
    """A `HyperParameters`' space as the plain model, by name (what a `trial.json` holds)."""
    return parse_space({"class_name": type(hp).__name__, "config": hp.get_config()} for hp in hyperparameters.space)


def serve_stock_chief(oracle: Oracle, directory: str, project: str) -> None:
    """Serve `oracle` as a stock KerasTuner chief does (the benchmark's baseline); returns when it stops.

    Reads the address from `KERASTUNER_ORACLE_IP` / `KERASTUNER_ORACLE_PORT`.
    """
    from keras_tuner.src.distribute import oracle_chief

    oracle._set_project_dir(directory, project)
    oracle_chief.start_server(oracle)
