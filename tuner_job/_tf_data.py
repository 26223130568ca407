"""A `tf.data` map whose function TensorFlow sets up in about 1 ms per iterator, not 6-8: the one place we touch TensorFlow's internals.

Why. TensorFlow instantiates a `Dataset.map` function again for every
iterator, and by default as a *multi-device* function, which runs the whole
Grappler optimiser over its graph each time (measured on 2 cores: 6-7 ms for
the trial's gather function, 2 ms for a function that doubles a number; a
pipeline with no function: 0.3 ms). Keras makes a new iterator for every
`fit`, so a trial pays it once per fit, and a small dataset's whole fit is
then slower than the old in-memory pipeline's (issue 17).

How. A function carrying the `experimental_ints_on_device` attribute is
instantiated on one device, without Grappler (TensorFlow's own
`tensorflow/core/data/captured_function.cc`; TensorFlow's GPU prefetching map
sets it the same way). A `tf.data` map function runs on the host CPU, so
keeping int32 tensors "on device" changes nothing for it. The function's ops
then run as written: ours is a handful of small index ops and two gathers,
which Grappler had nothing to improve in.

The module builds the same `MapDataset` op as `Dataset.map` through
TensorFlow's private Python classes (pinned: TensorFlow 2.21). If a later
TensorFlow moves them, `map_on_host` falls back to the public
`Dataset.map` (correct, only slower to start) and `SINGLE_DEVICE` is False,
or, if they changed their arguments, `map_on_host` falls back at its first
call with one warning: `tests/test_tf_data.py` fails on either, so an
upgrade cannot lose the speed unnoticed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tensorflow as tf

__all__ = ["SINGLE_DEVICE", "map_on_host"]

_INTS_ON_DEVICE = "experimental_ints_on_device"

try:
    from tensorflow.python.data.ops import dataset_ops, structured_function
    from tensorflow.python.ops import gen_dataset_ops

    class _HostMapDataset(dataset_ops.UnaryDataset):
        """`Dataset.map(fn)` (sequential, cardinality kept), with `fn` instantiated on one device."""

        def __init__(self, input_dataset: tf.data.Dataset, map_func: Callable[..., Any]):
            self._input_dataset = input_dataset
            self._name = None  # `_common_args` reads it
            self._map_func = structured_function.StructuredFunctionWrapper(
                map_func, self._transformation_name(), dataset=input_dataset, defun_kwargs={_INTS_ON_DEVICE: True}
            )
            variant = gen_dataset_ops.map_dataset(
                input_dataset._variant_tensor,
                self._map_func.function.captured_inputs,
                f=self._map_func.function,
                use_inter_op_parallelism=True,
                preserve_cardinality=True,
                **self._common_args,
            )
            super().__init__(input_dataset, variant)

        def _functions(self) -> list[Any]:
            return [self._map_func]

        @property
        def element_spec(self) -> Any:
            return self._map_func.output_structure

        def _transformation_name(self) -> str:
            return "tuner_job map_on_host()"

    SINGLE_DEVICE = True
except (ImportError, AttributeError):  # a TensorFlow that moved them: the public map, slower to start
    SINGLE_DEVICE = False


def map_on_host(dataset: tf.data.Dataset, fn: Callable[..., Any]) -> tf.data.Dataset:
    """`dataset.map(fn)`, one element at a time, with `fn` set up per iterator without Grappler.

    Args:
        dataset: the input dataset.
        fn: a function of one element, traced once as `Dataset.map` traces it.
            It must read only host (CPU) tensors and variables: it runs on one
            device, the host's.

    Returns:
        The mapped dataset (same cardinality), or `dataset.map(fn)` where
        `SINGLE_DEVICE` is False. Its options turn tf.data's default graph
        rewrites off, for the whole pipeline it ends up in: with a captured
        tensor, the rewrite fails on a function instantiated this way
        ("Expected only one fetch node"), and it would copy that tensor anyway.
    """
    global SINGLE_DEVICE
    if not SINGLE_DEVICE:
        return dataset.map(fn)
    try:
        mapped = _HostMapDataset(dataset, fn)
    except TypeError as exc:  # a TensorFlow whose private classes take other arguments
        SINGLE_DEVICE = False
        logging.getLogger(__name__).warning("tf.data: the single-device map is not available (%s); using Dataset.map", exc)
        return dataset.map(fn)
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return mapped.with_options(options)
