"""A trial's input pipeline: batches gathered from the memory-mapped dataset cache.

`make_datasets(data, batch_size, seed, initial_epoch)` is cheap (milliseconds,
whatever the dataset's size), so the trial runner builds it for every fit, with
that fit's batch size. Its contract:

- **Memory.** The cache's arrays are never copied into the worker: the
  `tf.data` pipeline reads them through a tensor that aliases the memory map
  (DLPack), and gathers each batch from it. The pages are the kernel's page
  cache, shared by every worker on the node; what a worker holds of its own is
  the batches in flight, O(batch_size x (parallel gathers + prefetch)), and
  the epoch's order (8 bytes per training image).
  The map is copy-on-write (`mmap_mode="c"`), so nothing a worker does can
  change the shared files.
- **Order.** Epoch `e` visits the training images in the order
  `epoch_order(n, batch_size, seed, e)`: a permutation drawn from `(seed, e)`
  alone, each image once, each batch's rows sorted by position in the cache
  (reads in file order; a batch is a set, so the training is the same). A trial
  resumed at epoch `k` (`initial_epoch=k`, or Keras's `BackupAndRestore`)
  replays the uninterrupted run's epoch `k`. The `callback` of the returned
  `TrialInputs` sets the epoch's order when Keras begins the epoch; pass it to
  `fit`.
- **Validation** is read in cache order, batch by batch, from the same map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tuner_job.data import Dataset

__all__ = ["TrialInputs", "epoch_order", "make_datasets", "PARALLEL_GATHERS", "PREFETCH_BATCHES"]

#: Batches gathered at once, and batches kept ready ahead of `fit`: the
#: worker's own input memory is about (PARALLEL_GATHERS + PREFETCH_BATCHES)
#: batches. One gather copies at memory speed (tens of thousands of 600x200
#: images/s), so two of each keep any accelerator fed.
PARALLEL_GATHERS = 2
PREFETCH_BATCHES = 2


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits `n` training images.

    Args:
        n: number of training images.
        batch_size: images per batch (the last batch holds the remainder).
        seed: the search's seed (any int).
        epoch: the epoch, counted from 0 as Keras counts it.

    Returns:
        int64 array of shape (n,): a permutation of range(n) that depends only
        on (n, batch_size, seed, epoch); within each run of `batch_size`
        positions (one batch), sorted ascending.
    """
    if n < 0 or batch_size < 1 or epoch < 0:
        raise ValueError(f"need n >= 0, batch_size >= 1 and epoch >= 0, but got {n=}, {batch_size=}, {epoch=}.")
    order = np.random.default_rng([seed % 2**64, epoch]).permutation(n).astype(np.int64)
    full = n - n % batch_size
    order[:full].reshape(-1, batch_size).sort(axis=1)
    order[full:].sort()
    return order


def _alias(array: np.ndarray) -> tf.Tensor:
    """A CPU tensor over `array`'s memory, without a copy (DLPack needs a writable array)."""
    if not array.flags.writeable:
        raise ValueError("the cache must be mapped copy-on-write (mmap_mode='c') to be shared with TensorFlow without a copy")
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _options() -> tf.data.Options:
    options = tf.data.Options()
    # tf.data's default graph rewrites serialize the pipeline's graph, and with
    # it the captured cache tensor: a full copy of the training set in the
    # worker's memory (measured: +1.1 GB for 3,000 images at 600x200). The
    # pipeline is already what those rewrites would make it (parallel map,
    # prefetch), so they are off.
    options.experimental_optimization.apply_default_optimizations = False
    # Nothing runs before the first batch is asked for, so an iterator that
    # Keras makes ahead of an epoch reads that epoch's order, set in
    # `on_epoch_begin` (TensorFlow's default, stated here because we rely on it).
    options.experimental_warm_start = False
    options.deterministic = True
    return options


def _shuffled_batches(x: tf.Tensor, y: tf.Tensor, order: tf.Variable, batch_size: int) -> tf.data.Dataset:
    """Batch i gathers rows order[i * batch_size:(i + 1) * batch_size] of (x, y)."""
    n = int(x.shape[0])

    def batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        rows = order[step * batch_size : tf.minimum((step + 1) * batch_size, n)]
        return tf.gather(x, rows), tf.gather(y, rows)

    return (
        tf.data.Dataset.range(-(-n // batch_size))
        .map(batch, num_parallel_calls=PARALLEL_GATHERS, deterministic=True)
        .prefetch(PREFETCH_BATCHES)
        .with_options(_options())
    )


def _batches_in_order(x: tf.Tensor, y: tf.Tensor, batch_size: int) -> tf.data.Dataset:
    # No function of ours in this one: TensorFlow takes ~4 ms to set up a
    # function for each new iterator (each epoch), which is most of the time an
    # epoch of a few hundred images takes to read.
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(_options())


@dataclass(frozen=True)
class TrialInputs:
    """What `fit` needs: `fit(train, validation_data=val, callbacks=[..., callback])`."""

    train: tf.data.Dataset  # batches of (uint8 images (b, h, w, c), int32 labels (b,))
    val: tf.data.Dataset
    callback: keras.callbacks.Callback
    steps_per_epoch: int
    validation_steps: int


class _EpochOrder(keras.callbacks.Callback):
    """Sets the order of the epoch Keras is beginning (the permutation of `epoch_order`)."""

    def __init__(self, order: tf.Variable, n: int, batch_size: int, seed: int):
        super().__init__()
        self._order, self._n, self._batch_size, self._seed = order, n, batch_size, seed
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self._order.assign(epoch_order(self._n, self._batch_size, self._seed, epoch))
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch != self.epoch:
            self.set_epoch(epoch)


def make_datasets(data: Dataset, batch_size: int, seed: int, initial_epoch: int = 0) -> TrialInputs:
    """The training and validation pipelines of one fit, over `data`'s memory-mapped cache.

    Args:
        data: the dataset, as `load_image_folder` returns it (arrays mapped
            copy-on-write).
        batch_size: images per batch.
        seed: the search's seed: with the epoch, it fixes each epoch's order.
        initial_epoch: the epoch `fit` starts at (the order is also set by the
            callback at each epoch's start, which covers a resume by
            `BackupAndRestore`).

    Returns:
        `TrialInputs`: `train` yields the epoch's shuffled batches, `val` the
        validation batches in order (both `(uint8 images, int32 labels)`,
        the last batch short), `callback` sets each epoch's order.

    Raises:
        ValueError: a bad batch size or epoch, or arrays not mapped copy-on-write.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, but got {batch_size=}.")
    n_train, n_val = len(data.y_train), len(data.y_val)
    x_train, y_train = _alias(data.x_train), _alias(data.y_train)
    x_val, y_val = _alias(data.x_val), _alias(data.y_val)
    order = tf.Variable(np.zeros(n_train, np.int64), trainable=False, name="epoch_order")
    callback = _EpochOrder(order, n_train, batch_size, seed)
    callback.set_epoch(initial_epoch)
    train = _shuffled_batches(x_train, y_train, order, batch_size)
    val = _batches_in_order(x_val, y_val, batch_size)
    steps, val_steps = -(-n_train // batch_size), -(-n_val // batch_size)
    return TrialInputs(train, val, callback, steps, val_steps)
