"""Every kind of hyperparameter reaches TensorBoard's HParams with its type and domain (issue 11, item 11).

The fault: a `Boolean` hyperparameter showed as `DATA_TYPE_UNSET` with no
domain. Here the experiment config the chief writes and the session a worker
writes are read back from the event files, as TensorBoard reads them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from tuner_job import _kt  # noqa: E402
from tuner_job.layout import RunPaths  # noqa: E402
from tuner_job.objective import Objective  # noqa: E402
from tuner_job.tensorboard_logs import write_experiment_config, write_trial_hparams  # noqa: E402


def _hparams_plugin_data(folder: Path) -> list:
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = []
    for file in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(file)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    found.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content))
    return found


def test_a_boolean_hyperparameter_has_its_type_and_domain(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import api_pb2

    hp = _kt.HyperParameters()
    hp.Boolean("augment")
    hp.Int("filters", 4, 16, step=4)
    hp.Float("rate", 0.0, 0.9, step=0.1)
    hp.Choice("kernel", [3, 5])
    hp.Fixed("blocks", 2)
    paths = RunPaths(tmp_path, "r")
    write_experiment_config(paths, _kt.space_of(hp), Objective("val_loss", "min"))
    [data] = _hparams_plugin_data(paths.logs)
    infos = {info.name: info for info in data.experiment.hparam_infos}
    augment = infos["augment"]
    assert augment.type == api_pb2.DATA_TYPE_BOOL, api_pb2.DataType.Name(augment.type)
    assert sorted(v.bool_value for v in augment.domain_discrete.values) == [False, True]
    interval = infos["filters"].domain_interval
    assert infos["filters"].type == api_pb2.DATA_TYPE_FLOAT64 and (interval.min_value, interval.max_value) == (4, 16)
    assert infos["kernel"].type == api_pb2.DATA_TYPE_FLOAT64 and [v.number_value for v in infos["kernel"].domain_discrete.values] == [3, 5]
    assert all(info.type != api_pb2.DATA_TYPE_UNSET for info in infos.values()), infos

    write_trial_hparams(paths.trial_logs("0"), paths.run, "0", {"augment": True, "filters": 8, "rate": 0.3, "kernel": 5, "blocks": 2})
    [session] = _hparams_plugin_data(paths.trial_logs("0"))
    values = session.session_start_info.hparams
    assert values["augment"].bool_value is True and values["filters"].number_value == 8
