"""Everything a search needs before its oracle serves, each part checked: one place for the chief and the launcher.

A user's mistake is one `TunerJobError` line (exit 2) before anything is
written: an objective whose direction no one can tell, a data folder without
two classes, a hypermodel that does not load, build or compile (any exception
from the user's `build` while the space is discovered is the hypermodel's,
not a crash of ours), a `space` override that names nothing or widens a range,
a changed config on resume (`check_resume`), a missing warm-start run.

- The chief calls `prepare_search` and serves the oracle it returns.
- `tunectl local` and `tunectl study` run `python -m tuner_job --check`
  (`check_search`) before they start any process: the same checks, plus one
  training step of the default model on two blank images, which tells which
  metrics the model logs (the objective must be one of them). A mistake costs
  seconds there, not a chief's start-up and its restarts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner_job import _kt
from tuner_job.config import SearchConfig, hypermodel_file, load_config
from tuner_job.errors import ConfigError, HypermodelError, TunerJobError, error_summary
from tuner_job.layout import RunPaths
from tuner_job.objective import Objective, resolve_objective
from tuner_job.trials import warm_start_trials

__all__ = [
    "FIXED_ON_RESUME",
    "Prepared",
    "build_oracle",
    "load_warm_trials",
    "resume_conflicts",
    "check_resume",
    "saved_config",
    "has_state",
    "prepare_search",
    "logged_metrics",
    "check_search",
]

log = logging.getLogger("tuner_job.chief")

#: Keys a run cannot change once it has trials. The oracle's saved state keeps
#: the old ones (the space, the tuner, the seed, Bayesian's initial points,
#: Hyperband's factor and epochs) or the old trials' scores would not compare
#: with the new ones (objective, data, image size, split); a warm start seeds
#: only a fresh run. The other keys (max_trials, failure limits, timeouts,
#: epochs of a non-Hyperband search, ...) take effect on resume.
FIXED_ON_RESUME = (
    "hypermodel", "space", "tuner", "objective", "objective_direction", "seed", "data", "image_size",
    "validation_split", "bayesian_initial_points", "hyperband_factor", "warm_start",
)  # fmt: skip


@dataclass
class Prepared:
    """What the chief serves: the objective, the class folders, the hypermodel and its oracle (space populated)."""

    objective: Objective
    classes: dict[str, list[Path]]
    hypermodel: Any
    oracle: Any
    warm: list[Any] | None


def build_oracle(config: SearchConfig, hypermodel: Any, objective: Objective) -> Any:
    """The configured oracle, its space narrowed by `space` and populated from the hypermodel.

    Args:
        config: the search.
        hypermodel: the `LoadedHypermodel`; built here (every conditional branch, as KerasTuner does).
        objective: the search's objective (`resolve_objective`).

    Raises:
        ConfigError: a `space` override names no hyperparameter or widens one; a bayesian
            search whose space fixes every hyperparameter.
        HypermodelError: the hypermodel raised, or did not return a compiled model.
    """
    from tuner_job.space import apply_space

    narrowed = None
    if config.space:
        scratch = _kt.make_oracle("random", objective=objective, max_trials=1, epochs=1, seed=0, hyperparameters=None)
        _populate(scratch, hypermodel, config)
        narrowed = apply_space(scratch.hyperparameters, config.space)
    oracle = _kt.make_oracle(
        config.tuner,
        objective=objective,
        max_trials=config.max_trials,
        epochs=config.epochs,
        seed=config.seed,
        hyperparameters=narrowed,
        hyperband_factor=config.hyperband_factor,
        max_retries_per_trial=config.max_retries_per_trial,
        bayesian_initial_points=config.bayesian_initial_points,
        bayesian_liar=config.bayesian_liar,
        asha_min_epochs=config.asha_min_epochs,
        asha_max_total_epochs=config.asha_max_total_epochs,
    )
    _populate(oracle, hypermodel, config)
    if config.tuner == "bayesian" and all(hp.kind == "fixed" for hp in _kt.space_of(oracle.hyperparameters).values()):
        # KerasTuner's Gaussian process has no dimension to fit then, and fails each CreateTrial once it has results.
        raise ConfigError("tuner: bayesian needs a hyperparameter to tune, but the space fixes every one; use tuner: random, or widen `space`")
    return oracle


def _populate(oracle: Any, hypermodel: Any, config: SearchConfig) -> None:
    try:
        _kt.populate_space(oracle, hypermodel)
    except TunerJobError:
        raise
    except Exception as exc:  # the user's build: a bad input, not our crash (a restart would fail alike)
        raise HypermodelError(f"hypermodel {config.hypermodel!r} failed to build: {error_summary(exc)}") from None


def load_warm_trials(config: SearchConfig, shared_dir: Any) -> list[Any]:
    """The COMPLETED trials with a finite score of the run `config.warm_start` names, as `Trial`s.

    Raises:
        ConfigError: that run is this one or does not exist (see `trials.warm_start_trials`).
    """
    assert config.warm_start is not None
    return [_kt.Trial.from_state(doc) for doc in warm_start_trials(shared_dir, config.warm_start, config.run)]


def has_state(paths: RunPaths) -> bool:
    """Whether a previous chief of this run left state (then a launch resumes it)."""
    return (paths.tuner / "oracle.json").is_file() or any(paths.tuner.glob("trial_*/trial.json"))


def _same_hypermodel(saved: str, new: str) -> bool:
    """Whether a resumed run names the hypermodel it started with.

    A run saved by a version that kept a relative `file.py:name` as written
    reads back resolved against its own folder, where no such file is: the
    same file name and name then count as the same hypermodel.
    """
    if saved == new:
        return True
    old_file, new_file = hypermodel_file(saved), hypermodel_file(new)
    if old_file is None or new_file is None or Path(old_file[0]).exists():
        return False
    return Path(old_file[0]).name == Path(new_file[0]).name and old_file[1] == new_file[1]


def resume_conflicts(saved: SearchConfig, new: SearchConfig) -> list[str]:
    """The `FIXED_ON_RESUME` keys on which `new` differs from the run's `saved` config; `space.<name>` for each changed override."""
    changed = []
    for key in FIXED_ON_RESUME:
        if key == "space":
            names = sorted(set(saved.space) | set(new.space))
            changed += [f"space.{name}" for name in names if saved.space.get(name) != new.space.get(name)]
        elif key == "hypermodel":
            changed += [] if _same_hypermodel(saved.hypermodel, new.hypermodel) else [key]
        elif getattr(saved, key) != getattr(new, key):
            changed.append(key)
    if new.tuner == "hyperband" and saved.tuner == "hyperband" and saved.epochs != new.epochs:
        changed.append("epochs")  # Hyperband's max_epochs is in its saved state
    return changed


def saved_config(paths: RunPaths) -> SearchConfig | None:
    """The config the run last started with (`runs/<run>/search.yaml`), or None.

    None also when the file is gone or another version wrote it (nothing to
    compare against: the launch's config is then written over it).
    """
    try:
        return load_config(paths.config) if paths.config.is_file() else None
    except ConfigError:
        return None


def check_resume(config: SearchConfig, paths: RunPaths, fresh: bool) -> None:
    """Refuse to resume a run with a config that its saved state would silently ignore.

    A run with trials resumes with its own space, tuner and objective: a
    changed one would govern nothing (the oracle reloads the old space) or mix
    scores that do not compare. So such a launch stops with one line naming
    the keys and the ways forward. Nothing to check for a fresh run, a run
    without state, or one whose config file is gone.

    Raises:
        ConfigError: `FIXED_ON_RESUME` keys differ from the run's `search.yaml`.
    """
    saved = None if fresh or not has_state(paths) else saved_config(paths)
    if saved is None:
        return
    changed = resume_conflicts(saved, config)
    if changed:
        raise ConfigError(
            f"run {config.run!r} already has trials, and its saved state would ignore the changed {', '.join(changed)} "
            f"(see {paths.config}): start it over with --fresh, or give the new config another run name "
            f"(with warm_start: {config.run} to seed it with the trials that fall inside the new space)"
        )


def prepare_search(config: SearchConfig, paths: RunPaths, fresh: bool) -> Prepared:
    """Check the search and make its oracle; nothing is written.

    Args:
        config: the search (one run of it).
        paths: the run's folders (its data folder must exist: the chief waits for it first).
        fresh: the run starts over (no resume check; the warm start is loaded).

    Raises:
        ConfigError, DataError, HypermodelError: see the module doc.
    """
    from tuner_job.data import list_image_folder
    from tuner_job.hypermodels import load_hypermodel

    objective = resolve_objective(config.objective, config.objective_direction)
    check_resume(config, paths, fresh)
    classes = list_image_folder(paths.shared_dir / config.data)
    hypermodel = load_hypermodel(config.hypermodel, (*config.image_size, 3), len(classes))
    oracle = build_oracle(config, hypermodel, objective)
    warm = None
    if config.warm_start and (fresh or not has_state(paths)):
        warm = load_warm_trials(config, paths.shared_dir)
    return Prepared(objective, classes, hypermodel, oracle, warm)


def logged_metrics(hypermodel: Any, hp: Any, input_shape: tuple[int, int, int], num_classes: int, objective: str = "val_loss") -> list[str]:
    """The metric names the model built from `hp` logs: one training step on two blank images, with validation.

    A hypermodel with its own `fit` is trained by it (one epoch), and what it
    reports counts (a float it returns is `objective`'s value, as KerasTuner reads it).

    Raises:
        HypermodelError: that step raised (the model cannot train on the dataset's images and labels).
    """
    import numpy as np

    model = hypermodel.build(hp)
    images = np.zeros((2, *input_shape), dtype="uint8")  # what the worker's pipeline gives: uint8 RGB
    labels = np.arange(2, dtype="int32") % max(1, num_classes)
    try:
        if getattr(hypermodel, "overrides_fit", False):
            return _logged_by_own_fit(hypermodel, hp, model, images, labels, objective)
        history = model.fit(images, labels, validation_data=(images, labels), epochs=1, batch_size=2, verbose=0)
    except Exception as exc:
        raise HypermodelError(
            f"hypermodel {hypermodel.spec!r}: one training step at its default hyperparameters failed: {error_summary(exc)}"
        ) from None
    return sorted(history.history)


def _logged_by_own_fit(hypermodel: Any, hp: Any, model: Any, images: Any, labels: Any, objective: str) -> list[str]:
    """What a hypermodel's own `fit` reports, called as a worker calls it (`fit_trial`) for one epoch on `images`.

    The names its callbacks' `on_epoch_end` saw, and those of what it
    returned (a History, a dict of metrics, or the objective's value).
    """
    import keras

    from tuner_job.data import Dataset
    from tuner_job.input_pipeline import aligned_copy, make_datasets
    from tuner_job.trial_fit import BatchedData, FitRecord, fit_trial, history_from_result

    class Seen(keras.callbacks.Callback):
        names: set[str] = set()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.names.update(logs or {})

    seen = Seen()
    seen.set_model(model)
    data = Dataset(("a", "b"), aligned_copy(images), aligned_copy(labels), aligned_copy(images), aligned_copy(labels))
    batched = BatchedData(lambda batch_size: make_datasets(data, batch_size, seed=0))
    result = fit_trial(hypermodel, hp, model, batched, 2, FitRecord(2), epochs=1, initial_epoch=0, callbacks=[seen], verbose=0)
    for logs in history_from_result(result, objective).values():
        seen.names.update(logs)
    return sorted(seen.names)


def check_search(config: SearchConfig, shared_dir: Path, fresh: bool = False) -> str:
    """Every check `prepare_search` makes, plus the objective among the logged metrics; returns a summary line.

    A staged search is checked as its first stage (the later ones are
    narrowed from it while it runs).

    Raises:
        TunerJobError: the first mistake found, in one line.
    """
    if config.stages:
        from tuner_job.stages import stage_config

        config = stage_config(config, 1, shared_dir)[0]
    paths = RunPaths(shared_dir, config.run)
    prepared = prepare_search(config, paths, fresh)
    logged = logged_metrics(
        prepared.hypermodel, prepared.oracle.get_space(), (*config.image_size, 3), len(prepared.classes), prepared.objective.name
    )
    prepared.objective.require_logged(logged)
    space = _kt.space_of(prepared.oracle.hyperparameters)
    return (
        f"checked: {len(prepared.classes)} classes, hypermodel {config.hypermodel!r} builds with {len(space)} hyperparameters, "
        f"objective {prepared.objective.describe()} among its metrics"
    )
