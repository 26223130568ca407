"""TensorBoard's HParams data: the experiment's space once, each trial's values once.

Keras's TensorBoard callback writes the metrics (`<trial>/train`,
`<trial>/validation`, tag `epoch_<metric>`); this module writes what the HParams
dashboard needs to put them in one table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner_job.objective import Objective
from tuner_job.space_model import Hyperparameter

__all__ = ["write_trial_hparams", "write_experiment_config"]


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def write_trial_hparams(log_dir: Path, trial_id: str, values: dict[str, Any]) -> None:
    """One trial's hyperparameter values, as an HParams session `trial_<id>` in `log_dir`."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    with tf.summary.create_file_writer(str(log_dir)).as_default():
        hparams_api.hparams({k: _scalar(v) for k, v in values.items()}, trial_id=f"trial_{trial_id}")


#: Metrics the HParams table offers besides the objective (Keras' defaults; absent ones show empty).
EXTRA_METRICS = ("val_loss", "val_accuracy", "loss", "accuracy")


def write_experiment_config(logs_dir: Path, space: dict[str, Hyperparameter], objective: Objective) -> None:
    """The HParams experiment: every hyperparameter of `space` with its domain, and the metrics to show.

    Args:
        logs_dir: the run's `logs/` folder.
        space: the oracle's space as plain data (`_kt.space_of`).
        objective: shown first, described with its direction ("higher is better").
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    hparams = []
    for hp in space.values():
        if hp.kind in ("choice", "boolean", "fixed"):
            domain = hparams_api.Discrete([_scalar(v) for v in hp.values])
        elif hp.kind == "int":
            domain = hparams_api.IntInterval(int(hp.min), int(hp.max))  # type: ignore[arg-type]
        else:
            domain = hparams_api.RealInterval(float(hp.min), float(hp.max))  # type: ignore[arg-type]
        hparams.append(hparams_api.HParam(hp.name, domain))
    metrics = []
    for metric in dict.fromkeys([objective.name, *EXTRA_METRICS]):
        group = "validation" if metric.startswith("val_") else "train"
        tag = "epoch_" + metric.removeprefix("val_")
        description = f"the objective: {objective.describe()}" if metric == objective.name else None
        metrics.append(hparams_api.Metric(tag, group=group, display_name=metric, description=description))
    with tf.summary.create_file_writer(str(logs_dir)).as_default():
        hparams_api.hparams_config(hparams=hparams, metrics=metrics)
