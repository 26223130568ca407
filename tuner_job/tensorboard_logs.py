"""TensorBoard's HParams data: the experiment's space once, each trial's values once.

Keras's TensorBoard callback writes the metrics (`<trial>/train`,
`<trial>/validation`, tag `epoch_<metric>`); this module writes what the HParams
dashboard needs to put them in one table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_trial_hparams", "write_experiment_config"]


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def write_trial_hparams(log_dir: Path, trial_id: str, values: dict[str, Any]) -> None:
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    with tf.summary.create_file_writer(str(log_dir)).as_default():
        hparams_api.hparams({k: _scalar(v) for k, v in values.items()}, trial_id=f"trial_{trial_id}")


def write_experiment_config(logs_dir: Path, space: Any, metrics: list[str]) -> None:
    """The HParams experiment: every tuned hyperparameter and the metrics to show."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    hparams = []
    for hp in space.space:
        name = hp.name
        if name.startswith("tuner/"):
            continue
        config = hp.get_config()
        if "values" in config:
            domain = hparams_api.Discrete([_scalar(v) for v in config["values"]])
        elif "min_value" in config:
            kind = hparams_api.IntInterval if type(hp).__name__ == "Int" else hparams_api.RealInterval
            domain = kind(type(config["min_value"])(config["min_value"]), type(config["min_value"])(config["max_value"]))
        else:
            domain = None
        hparams.append(hparams_api.HParam(name, domain))
    metric_objs = []
    for metric in metrics:
        group = "validation" if metric.startswith("val_") else "train"
        tag = "epoch_" + metric.removeprefix("val_")
        metric_objs.append(hparams_api.Metric(tag, group=group, display_name=metric))
    with tf.summary.create_file_writer(str(logs_dir)).as_default():
        hparams_api.hparams_config(hparams=hparams, metrics=metric_objs)
