"""A trial's input pipeline: batches gathered from the memory-mapped dataset cache.

`make_datasets(data, batch_size, seed, initial_epoch)` is cheap (milliseconds,
whatever the dataset's size), so the trial runner builds it for every batch
size it trains at. Its contract:

- **Memory.** The cache's arrays are never copied into the worker: the
  `tf.data` pipeline reads them through a tensor that aliases the memory map
  (DLPack), and gathers each batch from it. The pages are the kernel's page
  cache, shared by every worker on the node; what a worker holds of its own is
  the batches in flight, O(batch_size x (parallel gathers + prefetch)).
  The map is copy-on-write (`mmap_mode="c"`), so nothing a worker does can
  change the shared files.
- **Order.** Epoch `e` visits the training images in the order
  `epoch_order(n, batch_size, seed, e)`: a permutation drawn from `(seed, e)`
  alone, each image once, each batch's rows sorted by position in the cache
  (reads in file order; a batch is a set, so the training is the same). Each
  batch's rows are computed on their own, in the pipeline, by a stateless
  random-access permutation (the op of `tf.random.experimental.index_shuffle`,
  keyed by the seed and the epoch: O(batch) work, no per-epoch array, nothing
  a prefetch could read out of date).
- **One iterator per fit.** `train` repeats without end: step `s` of a fit
  that starts at epoch `k` is batch `s % steps_per_epoch` of epoch
  `k + s // steps_per_epoch`, so `fit` must be given
  `steps_per_epoch=inputs.steps_per_epoch` (`trial_fit` always passes it).
  Keras then keeps one iterator for the whole fit; a dataset that ends each
  epoch makes Keras start a new iterator per epoch, and TensorFlow sets up the
  gather function again for each (8-10 ms, about what reading an epoch of 200
  images at 600x200 takes). The `callback` of the returned `TrialInputs` tells
  the pipeline the fit's first epoch (at the first `on_epoch_begin`, before
  Keras makes the iterator): a trial resumed at epoch `k` (`initial_epoch=k`,
  or Keras's `BackupAndRestore`) replays the uninterrupted run's epoch `k`.
- **Validation** is read in cache order, batch by batch, from the same map:
  no function of ours, so its iterator per epoch costs under a millisecond.
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
_MAX_EPOCH = 2**32 - 1  # the permutation's key holds the epoch in 32 bits


def _shuffled(positions: tf.Tensor, n: int, seed: int, epoch: Any) -> tf.Tensor:
    """The rows at `positions` (int64) of epoch `epoch`'s permutation of range(n).

    `index_shuffle` is a bijection of [0, n-1] keyed by three 32-bit words
    (the op reads the low 32 bits of each): the seed's two halves and the epoch.
    """
    words = seed % 2**64
    key = tf.stack([tf.constant(words & 0xFFFFFFFF, tf.int64), tf.constant(words >> 32, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.raw_ops.RandomIndexShuffle(index=positions, seed=key, max_index=tf.constant(n - 1, tf.int64), rounds=4)


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits `n` training images (what the pipeline reads).

    Args:
        n: number of training images.
        batch_size: images per batch (the last batch holds the remainder).
        seed: the search's seed (any int; all 64 low bits count).
        epoch: the epoch, counted from 0 as Keras counts it (below 2**32).

    Returns:
        int64 array of shape (n,): a permutation of range(n) that depends only
        on (n, batch_size, seed, epoch); within each run of `batch_size`
        positions (one batch), sorted ascending.

    Raises:
        ValueError: n < 0, batch_size < 1, or epoch outside [0, 2**32).
    """
    if n < 0 or batch_size < 1 or not 0 <= epoch <= _MAX_EPOCH:
        raise ValueError(f"need n >= 0, batch_size >= 1 and 0 <= epoch < 2**32, but got {n=}, {batch_size=}, {epoch=}.")
    if n == 0:
        return np.zeros(0, np.int64)
    order = _shuffled(tf.range(n, dtype=tf.int64), n, seed, epoch).numpy()
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
    options.deterministic = True
    return options


def _shuffled_batches(x: tf.Tensor, y: tf.Tensor, first_epoch: tf.Variable, batch_size: int, seed: int) -> tf.data.Dataset:
    """Step s: batch s % steps of epoch first_epoch + s // steps, its rows sorted; without end."""
    n = int(x.shape[0])
    steps = -(-n // batch_size)

    def batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # `first_epoch` is set before the fit's iterator exists and not again during the fit.
        epoch, i = first_epoch + step // steps, step % steps
        positions = tf.range(i * batch_size, tf.minimum((i + 1) * batch_size, n), dtype=tf.int64)
        rows = tf.sort(_shuffled(positions, n, seed, epoch))
        return tf.gather(x, rows), tf.gather(y, rows)

    # range().repeat(): the step count without a function of its own (`Dataset.counter` has one, ~2 ms per iterator).
    return (
        tf.data.Dataset.range(2**62)
        .repeat()
        .map(batch, num_parallel_calls=PARALLEL_GATHERS, deterministic=True)
        .prefetch(PREFETCH_BATCHES)
        .with_options(_options())
    )


def _batches_in_order(x: tf.Tensor, y: tf.Tensor, batch_size: int) -> tf.data.Dataset:
    # No function of ours in this one, so Keras's new iterator each epoch costs
    # nothing to set up (a function costs ~10 ms per iterator: see the module doc).
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(_options())


@dataclass(frozen=True)
class TrialInputs:
    """What `fit` needs: `fit(train, validation_data=val, steps_per_epoch=steps_per_epoch, callbacks=[..., callback])`."""

    train: tf.data.Dataset  # batches of (uint8 images (b, h, w, c), int32 labels (b,)), repeating without end
    val: tf.data.Dataset  # one pass over the validation images, in order
    callback: keras.callbacks.Callback
    steps_per_epoch: int
    validation_steps: int


class _FirstEpoch(keras.callbacks.Callback):
    """Tells the pipeline the epoch a fit starts at, before Keras makes the fit's iterator."""

    def __init__(self, first_epoch: tf.Variable):
        super().__init__()
        self._first_epoch = first_epoch
        self._starting = True

    def set_epoch(self, epoch: int) -> None:
        """The next iterator made over `train` starts at the first batch of epoch `epoch`."""
        if not 0 <= epoch <= _MAX_EPOCH:
            raise ValueError(f"epoch must be in [0, 2**32), but got {epoch}.")
        self._first_epoch.assign(epoch)

    def on_train_begin(self, logs: Any = None) -> None:
        self._starting = True

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        # Keras makes the fit's iterator after its first on_epoch_begin (and after
        # BackupAndRestore has chosen the epoch), then keeps it: set it once, here.
        if self._starting:
            self.set_epoch(epoch)
            self._starting = False


def make_datasets(data: Dataset, batch_size: int, seed: int, initial_epoch: int = 0) -> TrialInputs:
    """The training and validation pipelines over `data`'s memory-mapped cache, for every fit at `batch_size`.

    Args:
        data: the dataset, as `load_image_folder` returns it (arrays mapped
            copy-on-write).
        batch_size: images per batch.
        seed: the search's seed: with the epoch, it fixes each epoch's order.
        initial_epoch: the epoch an iterator made outside `fit` starts at (in
            `fit`, the callback sets the fit's first epoch).

    Returns:
        `TrialInputs`: `train` yields the epochs' shuffled batches one after
        the other (give `fit` its `steps_per_epoch`), `val` the validation
        batches in order (both `(uint8 images, int32 labels)`, an epoch's last
        batch short), `callback` tells `train` each fit's first epoch.

    Raises:
        ValueError: a bad batch size or epoch, no training images, or arrays
            not mapped copy-on-write.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, but got {batch_size=}.")
    n_train, n_val = len(data.y_train), len(data.y_val)
    if n_train == 0:
        raise ValueError("the dataset has no training images")
    x_train, y_train = _alias(data.x_train), _alias(data.y_train)
    x_val, y_val = _alias(data.x_val), _alias(data.y_val)
    first_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="first_epoch")
    callback = _FirstEpoch(first_epoch)
    callback.set_epoch(initial_epoch)
    train = _shuffled_batches(x_train, y_train, first_epoch, batch_size, seed)
    val = _batches_in_order(x_val, y_val, batch_size)
    steps, val_steps = -(-n_train // batch_size), -(-n_val // batch_size)
    return TrialInputs(train, val, callback, steps, val_steps)
