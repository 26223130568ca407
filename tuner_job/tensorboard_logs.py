"""TensorBoard's HParams data: one row per trial of every run, scored as the oracle scored it.

Keras's TensorBoard callback writes each epoch's metrics (`<trial>/train`,
`<trial>/validation`, tag `epoch_<metric>`): the Scalars dashboard's curves.
The HParams table shows, for each session, the *last* value of the metrics
the experiment names, so it names none of those (the last epoch is not the
one the oracle ranked). Instead, when a trial completes, its worker writes the
trial's score (the objective at its best epoch, the value the oracle ranks
by) as `score`, and each metric of that epoch as `best_epoch/<metric>`, into
the trial's own folder; the experiment names those.

Sessions are named `<run>/trial_<id>`: TensorBoard puts the sessions of one
name in one row, so with bare `trial_<id>` the trials of several runs in one
logdir (stages, a narrowed run) would share rows and average their metrics.

TensorBoard takes the experiment (hyperparameters and metrics) from one run
of the logdir, an arbitrary one when several wrote it. So each chief writes
the union of the spaces and objectives of every run on the volume at its
start: a later run's experiment covers the earlier ones, and a narrowed run's
space lies inside its source's anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner_job.layout import RunPaths
from tuner_job.objective import Objective
from tuner_job.space_model import Hyperparameter, same_value

__all__ = ["SCORE_TAG", "BEST_EPOCH_PREFIX", "EXTRA_METRICS", "session_name", "write_trial_hparams", "write_trial_score",
           "write_experiment_config"]  # fmt: skip

#: The trial's score (the objective at its best epoch), in the trial's folder.
SCORE_TAG = "score"
#: Every metric of the best epoch, as `best_epoch/<metric>`.
BEST_EPOCH_PREFIX = "best_epoch/"
#: Metrics the HParams table offers besides the score (Keras' defaults; absent ones show empty).
EXTRA_METRICS = ("val_loss", "val_accuracy", "loss", "accuracy")


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def session_name(run: str, trial_id: str) -> str:
    """The HParams session (and row) of a trial: `<run>/trial_<id>`."""
    return f"{run}/trial_{trial_id}"


def write_trial_hparams(log_dir: Path, run: str, trial_id: str, values: dict[str, Any]) -> None:
    """One trial's hyperparameter values, as the HParams session `session_name(run, trial_id)` in `log_dir`."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hparams_api.hparams({k: _scalar(v) for k, v in values.items()}, trial_id=session_name(run, trial_id))
    writer.close()


def write_trial_score(log_dir: Path, score: float, metrics: dict[str, float], step: int) -> None:
    """A completed trial's score and its best epoch's metrics, where the HParams table reads them.

    Args:
        log_dir: the trial's folder (`RunPaths.trial_logs`), where its session starts.
        score: the objective's value the oracle ranks the trial by.
        metrics: every metric of the best epoch (`{"val_loss": 0.41, ...}`).
        step: the best epoch (0-based), the step the scalars are written at.
    """
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.scalar(SCORE_TAG, float(score), step=step)
        for name, value in metrics.items():
            tf.summary.scalar(BEST_EPOCH_PREFIX + name, float(value), step=step)
    writer.close()


# ----- the experiment: every run's space, merged ---------------------------------------


def _domain(hp: Hyperparameter) -> tuple[Any, ...]:
    """("discrete", values) or ("int" | "float", min, max)."""
    if hp.kind in ("choice", "boolean", "fixed"):
        return ("discrete", tuple(_scalar(v) for v in hp.values))
    return (hp.kind, hp.min, hp.max)


def _numbers(values: tuple[Any, ...]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _merge(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """The smallest domain holding both (None: no domain can, e.g. strings and a range)."""
    if a is None or b is None:
        return None
    if a[0] == b[0] == "discrete":
        values = a[1] + tuple(v for v in b[1] if not any(same_value(v, w) for w in a[1]))
        same_type = _numbers(values) or len({type(v) for v in values}) == 1
        return ("discrete", values) if same_type else None
    points = [x for d in (a, b) for x in (d[1] if d[0] == "discrete" else d[1:])]
    if not _numbers(tuple(points)):
        return None
    integral = all(d[0] in ("int", "discrete") for d in (a, b)) and all(isinstance(x, int) or float(x).is_integer() for x in points)
    return ("int" if integral else "float", min(points), max(points))


def _other_runs(paths: RunPaths) -> list[tuple[dict[str, Hyperparameter], Objective | None]]:
    """The spaces and objectives of the other runs on the volume, as their trials record them.

    From each run's journal (one file, whose lines are the ended trials'
    documents), not its trials' files: a chief starts on a volume of many runs
    of thousands of trials. A run without a journal is read trial by trial.
    """
    from tuner_job.space_model import space_from_trials
    from tuner_job.trials import read_journal, read_objective, read_trials

    found = []
    for tuner in sorted(paths.runs_dir.glob("*/tuner")):
        other = RunPaths(paths.shared_dir, tuner.parent.name)
        if other.run == paths.run:
            continue
        try:
            trials = read_journal(other.journal).entries or read_trials(other).trials
            space = space_from_trials(trials.values())
            objective: Objective | None = read_objective(other, trials)
        except Exception:  # a run another version wrote, or half-deleted: it only widens the table
            continue
        found.append((space, objective))
    return found


def write_experiment_config(paths: RunPaths, space: dict[str, Hyperparameter], objective: Objective) -> None:
    """The HParams experiment of run `paths.run`: every hyperparameter with its domain, and the metrics shown.

    Args:
        paths: the run; the experiment goes to its `logs/` folder.
        space: the oracle's space as plain data (`_kt.space_of`).
        objective: the run's objective: the `score` column describes it.

    The hyperparameters and objectives of the other runs on the volume are
    merged in (see the module doc), so that whichever run's experiment
    TensorBoard reads, every row shows every column.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    domains: dict[str, tuple[Any, ...] | None] = {name: _domain(hp) for name, hp in space.items()}
    objectives = [objective.name]
    for other_space, other_objective in _other_runs(paths):
        for name, hp in other_space.items():
            domains[name] = _merge(domains[name], _domain(hp)) if name in domains else _domain(hp)
        if other_objective is not None and other_objective.name not in objectives:
            objectives.append(other_objective.name)
    hparams = []
    for name, domain in domains.items():
        if domain is None:
            hparams.append(hparams_api.HParam(name))
        elif domain[0] == "discrete":
            hparams.append(hparams_api.HParam(name, hparams_api.Discrete(list(domain[1]))))
        elif domain[0] == "int":
            hparams.append(hparams_api.HParam(name, hparams_api.IntInterval(int(domain[1]), int(domain[2]))))
        else:
            hparams.append(hparams_api.HParam(name, hparams_api.RealInterval(float(domain[1]), float(domain[2]))))
    if len(objectives) == 1:
        score_name = f"{objective.name} (score)"
        score_text = f"the objective {objective.describe()} at the trial's best epoch: the value the oracle ranks trials by"
    else:
        score_name = "score"
        score_text = f"each run's objective ({', '.join(objectives)}) at the trial's best epoch: the value its oracle ranks by"
    metrics = [hparams_api.Metric(SCORE_TAG, display_name=score_name, description=score_text)]
    for name in dict.fromkeys([*objectives, *EXTRA_METRICS]):
        if len(objectives) > 1 or name != objective.name:
            metrics.append(hparams_api.Metric(BEST_EPOCH_PREFIX + name, display_name=f"{name} (best epoch)",
                                              description=f"{name} at the trial's best epoch (by its objective)"))  # fmt: skip
    writer = tf.summary.create_file_writer(str(paths.logs))
    with writer.as_default():
        hparams_api.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()
