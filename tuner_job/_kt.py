"""The one module that reaches into `keras_tuner.src` (keras-tuner 1.4.8).

Everything version-specific about KerasTuner lives here, so an upgrade touches
one file: the wire protocol's generated stubs, `Trial`, the oracles, and the
few instance hooks we replace to fix the faults DESIGN.md lists:

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
  they train twice; the server restores them to their owners instead.
- `HyperParameters.copy()` on the oracle's space (once per trial) round-trips
  through Keras' deserializer; the space gets a plain structural copy, and
  `ProtoCache` builds each running trial's hyperparameters proto once.
"""

from __future__ import annotations

import copy
import functools
import types
from typing import Any

import keras_tuner
from keras_tuner.src import protos as _protos
from keras_tuner.src.engine import base_tuner as _base_tuner
from keras_tuner.src.engine import hyperparameters as _hp
from keras_tuner.src.engine import metrics_tracking as _metrics_tracking
from keras_tuner.src.engine import trial as _trial

from tuner_job.layout import WARM_START_LABEL

__all__ = [
    "HyperParameters",
    "Trial",
    "TrialStatus",
    "Oracle",
    "pb",
    "pb_grpc",
    "make_oracle",
    "quiet_oracle",
    "ProtoCache",
    "populate_space",
    "oracle_state",
    "restore_oracle_state",
    "rebuild_oracle_state",
    "value_in_space",
    "seed_completed_trials",
]

HyperParameters = _hp.HyperParameters
Trial = _trial.Trial
TrialStatus = _trial.TrialStatus
Oracle = keras_tuner.Oracle

#: KerasTuner's own gRPC messages and stubs: a stock worker can join our chief.
pb = _protos.get_service()
pb_grpc = _protos.get_service_grpc()


def make_oracle(
    tuner: str,
    *,
    objective: Any,
    max_trials: int,
    epochs: int,
    seed: int,
    hyperparameters: HyperParameters | None,
    hyperband_factor: int = 3,
    max_retries_per_trial: int = 0,
    bayesian_initial_points: int | None = None,
) -> Oracle:
    """One of the four stock oracles, configured from `search.yaml`."""
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
        return keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, num_initial_points=bayesian_initial_points, **common)
    if tuner == "grid":
        return keras_tuner.oracles.GridSearchOracle(max_trials=max_trials, **common)
    if tuner == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=epochs, factor=hyperband_factor, **common)
        # Hyperband sizes itself from max_epochs; max_trials still caps it.
        oracle.max_trials = max_trials
        return oracle
    raise ValueError(f"tuner must be one of random, hyperband, bayesian, grid, but got {tuner=}.")


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


def hp_class(name: str) -> Any:
    """A hyperparameter class by name: Int, Float, Choice, Boolean, Fixed."""
    return getattr(_hp, name)


# Parts of the oracle's state that grow with the search and that the trial
# files and the journal already hold. `oracle.json` leaves them out, so saving
# it costs the same at trial 5,000 as at trial 50; a restart derives them.
_DERIVED = ("start_order", "end_order", "tried_so_far", "id_to_hash")


def oracle_state(oracle: Oracle) -> dict[str, Any]:
    """The oracle's state for `oracle.json`, without what `_DERIVED` names."""
    saved = (oracle.start_order, oracle.end_order, oracle._tried_so_far, oracle._id_to_hash, oracle._run_times)
    in_flight = [t.trial_id for t in oracle.ongoing_trials.values()] + list(oracle._retry_queue)
    oracle.start_order, oracle.end_order, oracle._tried_so_far, oracle._id_to_hash = [], [], set(), {}
    oracle._run_times = {t: saved[4][t] for t in in_flight if t in saved[4]}  # retries already spent
    try:
        state = oracle.get_state()
    finally:
        oracle.start_order, oracle.end_order, oracle._tried_so_far, oracle._id_to_hash, oracle._run_times = saved
    for key in _DERIVED:
        state.pop(key, None)
    return state


def _trial_order(trial_id: str) -> tuple[int, int, str]:
    digits = trial_id.lstrip("w")
    return (0 if trial_id.startswith("w") else 1, int(digits) if digits.isdigit() else 0, trial_id)


def _end_order(trials: dict[str, Trial], ids: list[str], end_order: list[str]) -> list[str]:
    """The journal's end order, then any finished trial it lacks (seeded trials never ended here)."""
    journaled = [t for t in end_order if t in trials]
    seen = set(journaled)
    return journaled + [
        t for t in ids
        if t not in seen and trials[t].status in _terminal() and not str(trials[t].message or "").startswith(WARM_START_LABEL)
    ]


def restore_oracle_state(oracle: Oracle, state: dict[str, Any], trials: dict[str, Trial], end_order: list[str]) -> None:
    """Load `oracle.json` plus what the trials and the journal hold.

    Unlike stock `reload`, in-flight trials stay with their owners.
    """
    state = copy.deepcopy(state)
    ids = sorted(trials, key=_trial_order)
    ended = _end_order(trials, ids, end_order)
    hashes = {t: oracle._compute_values_hash(trials[t].hyperparameters.values) for t in ids}
    state.setdefault("start_order", ids)
    state.setdefault("end_order", ended)
    state["tried_so_far"] = sorted(set(hashes.values()) | set(state.get("tried_so_far", ())))
    state["id_to_hash"] = {**hashes, **state.get("id_to_hash", {})}
    state["run_times"] = {**{t: 1 for t in ended}, **state.get("run_times", {})}
    oracle.trials = dict(trials)
    oracle.set_state(state)
    _cheap_space_copies(oracle)  # set_state made a new space


def rebuild_oracle_state(oracle: Oracle, trials: dict[str, Trial], end_order: list[str]) -> list[str]:
    """Rebuild a lost `oracle.json` from the trials; return the trials to re-run.

    Finished trials keep their results; trials that were running go back to the
    queue (their owners are unknown without `oracle.json`).
    """
    oracle.trials = dict(trials)
    oracle.start_order = sorted(trials, key=_trial_order)
    oracle.end_order = _end_order(trials, oracle.start_order, end_order)
    running = sorted(t for t, trial in trials.items() if trial.status not in _terminal())
    for trial_id in oracle.start_order:
        oracle._record_values(trials[trial_id])
        oracle._run_times[trial_id] = max(oracle._run_times[trial_id], 1 if trial_id in oracle.end_order else 0)
    oracle._seed_state = oracle.seed + 1000 * len(trials)
    oracle._retry_queue = list(running)
    oracle.ongoing_trials = {}
    return running


def _hp_active(hp: Any, values: dict[str, Any]) -> bool:
    return all(condition.is_active(values) for condition in getattr(hp, "conditions", None) or ())


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a Choice of [0, 1, True] must not merge them.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b


def value_in_space(hp: Any, value: Any) -> bool:
    """Whether `value` is one the (possibly narrowed) hyperparameter `hp` can take.

    Int and Float: within [min_value, max_value] (an Int also a whole number);
    Choice, Boolean and Fixed: membership.
    """
    if isinstance(hp, (_hp.Int, _hp.Float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = float(hp.min_value), float(hp.max_value)
        tolerance = 1e-9 * max(1.0, abs(low), abs(high))
        if isinstance(hp, _hp.Int) and float(value) != int(value):
            return False
        return low - tolerance <= float(value) <= high + tolerance
    if isinstance(hp, _hp.Boolean):
        return isinstance(value, bool)
    if isinstance(hp, _hp.Choice):
        return any(_same(value, v) for v in hp.values)
    if isinstance(hp, _hp.Fixed):
        return _same(value, hp.value)
    return False


def warm_values(oracle: Oracle, values: dict[str, Any]) -> dict[str, Any] | None:
    """`values` restricted to the oracle's space, or None when one falls outside it.

    `tuner/...` entries are ignored; a conditional hyperparameter is checked
    only where its conditions hold.
    """
    kept: dict[str, Any] = {}
    for hp in oracle.hyperparameters.space:
        if hp.name.startswith("tuner/") or not _hp_active(hp, values):
            continue
        if hp.name not in values or not value_in_space(hp, values[hp.name]):
            return None
        kept[hp.name] = values[hp.name]
    return kept


def seed_completed_trials(oracle: Oracle, trials: list[tuple[str, Trial, str]]) -> list[Trial]:
    """Add earlier trials to a fresh oracle as COMPLETED observations.

    `trials` holds `(new_id, old_trial, message)`; those whose values fall
    inside the oracle's space are added under `new_id` with the old metrics
    and score, and recorded as tried (no point is paid for twice). They are
    not in `end_order` (this run did not end them); the caller raises
    `max_trials` by their count. Returns the added trials.
    """
    added = []
    for new_id, old, message in trials:
        values = warm_values(oracle, dict(old.hyperparameters.values))
        if values is None:
            continue
        hyperparameters = oracle.hyperparameters.copy()
        hyperparameters.values = values
        trial = Trial(hyperparameters=hyperparameters, trial_id=new_id, status=TrialStatus.COMPLETED, message=message)
        trial.metrics = old.metrics
        trial.score = old.score
        trial.best_step = old.best_step
        oracle.trials[new_id] = trial
        oracle.start_order.append(new_id)
        oracle._record_values(trial)
        oracle._run_times[new_id] = 1
        added.append(trial)
    return added


def _terminal() -> tuple[str, ...]:
    return (TrialStatus.COMPLETED, TrialStatus.FAILED)
