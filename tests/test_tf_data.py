"""`_tf_data.map_on_host`: `Dataset.map` with its function set up on one device (issue 17's per-fit cost).

The speed is the benchmark's to show (`python -m bench --only input`: a whole
fit at 200 images against the old pipeline); these check that the fast path
is the one taken with the pinned TensorFlow, and that it maps exactly as
`Dataset.map` does, a host variable read afresh by each new iterator included.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tuner_job import _tf_data
from tuner_job._tf_data import map_on_host


def test_the_pinned_tensorflow_takes_the_single_device_path() -> None:
    """If a TensorFlow upgrade moved the private classes, this fails rather than the fits quietly starting 6 ms slower."""
    assert _tf_data.SINGLE_DEVICE, "tensorflow moved its private tf.data classes: map_on_host fell back to Dataset.map"
    dataset = map_on_host(tf.data.Dataset.range(3), lambda step: step * 2)
    while not hasattr(dataset, "_map_func"):  # under the options it sets
        dataset = dataset._input_dataset
    attributes = dataset._map_func.function.function_def.attr
    assert attributes["experimental_ints_on_device"].b, dict(attributes)


def test_it_maps_as_dataset_map_does_and_reads_a_host_variable_per_iterator() -> None:
    table = tf.constant(np.arange(40, dtype=np.int32).reshape(10, 4))
    with tf.device("/CPU:0"):
        offset = tf.Variable(0, dtype=tf.int64)

    def gather(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        rows = tf.sort((tf.range(step, step + 3) + offset) % 10)
        return tf.gather(table, rows), rows

    ours = map_on_host(tf.data.Dataset.range(7), gather).prefetch(2)
    theirs = tf.data.Dataset.range(7).map(gather)
    assert ours.element_spec == theirs.element_spec
    assert ours.cardinality().numpy() == 7
    for value in (0, 5):
        offset.assign(value)  # before the iterator exists: what `_EpochSetter` does
        got = [(a.numpy().tolist(), b.numpy().tolist()) for a, b in ours]
        want = [(a.numpy().tolist(), b.numpy().tolist()) for a, b in theirs]
        assert got == want and len(got) == 7
    assert got[0][1] == [5, 6, 7]


def test_an_error_in_the_function_reaches_the_reader() -> None:
    def checked(step: tf.Tensor) -> tf.Tensor:
        with tf.control_dependencies([tf.debugging.assert_less(step, tf.constant(1, tf.int64))]):
            return tf.identity(step)

    dataset = map_on_host(tf.data.Dataset.range(3), checked)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(dataset)


def test_a_tensorflow_whose_private_classes_changed_falls_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def changed(*args: object, **kwargs: object) -> None:
        raise TypeError("__init__() got an unexpected keyword argument 'f'")

    monkeypatch.setattr(_tf_data, "_HostMapDataset", changed)
    monkeypatch.setattr(_tf_data, "SINGLE_DEVICE", True)
    dataset = map_on_host(tf.data.Dataset.range(3), lambda step: step * 2)
    assert [int(v) for v in dataset] == [0, 2, 4]
    assert not _tf_data.SINGLE_DEVICE and "single-device map is not available" in caplog.text
