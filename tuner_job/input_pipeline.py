"""A trial's input pipeline: batches gathered from the memory-mapped dataset cache.

`make_datasets(data, batch_size, seed, initial_epoch)` is cheap (milliseconds,
whatever the dataset's size), so the trial runner builds it for every batch
size it trains at. Its contract:

- **Memory.** The cache's arrays are never copied into the worker: the
  `tf.data` pipeline reads them through a tensor that aliases the memory map
  (DLPack), and gathers each batch from it. The pages are the kernel's page
  cache, shared by every worker on the node; what a worker holds of its own is
  the batches in flight, O(batch_size x (prefetch + 1)).
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
- **One iterator per fit.** `train` is one epoch (the epoch the `callback`
  of the returned `TrialInputs` set at the epoch's start), as a user's `fit`
  or training loop expects; `train_endless` runs on from epoch to epoch: step
  `s` of a fit that starts at epoch `k` is batch `s % steps_per_epoch` of
  epoch `k + s // steps_per_epoch`. `trial_fit` hands `model.fit` the endless
  one, with `steps_per_epoch`, whenever it is given `train` itself: Keras then
  keeps one iterator for the whole fit, where a dataset that ends makes it
  start one per epoch, and TensorFlow sets up the gather function again for
  each. That set-up is ~1 ms because the function is instantiated on one
  device, without Grappler (`_tf_data.map_on_host`); as a plain
  `Dataset.map` it was 6-8 ms, about what reading an epoch of 200 images at
  600x200 takes.
- **One gather at a time**, in the prefetch's thread, ahead of `fit`: on 2
  cores a second gather thread made a fit slower (it competes with Keras's
  own loop), and one gathers ~55,000 images/s at 600x200, more than any
  training step reads.
  Either way a trial resumed at epoch `k` (`initial_epoch=k`, or Keras's
  `BackupAndRestore`) replays the uninterrupted run's epoch `k`.
- **Validation** is read in cache order, batch by batch, from the same map:
  no function of ours, so its iterator per epoch costs under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tuner_job._tf_data import map_on_host
from tuner_job.data import Dataset

__all__ = ["TrialInputs", "epoch_order", "make_datasets", "PREFETCH_BATCHES"]

#: Batches kept ready ahead of `fit`: the worker's own input memory is about
#: PREFETCH_BATCHES + 1 batches (the one being gathered). One gather copies at
#: memory speed (tens of thousands of 600x200 images/s), so two ready batches
#: keep any accelerator fed.
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


#: TensorFlow's kernels assume their buffers are aligned to this many bytes
#: (a misaligned one aborts the process). A `.npy` file's data is (its header
#: is padded to 64 bytes), and a memory map starts on a page.
TENSOR_ALIGNMENT = 64


def _alias(array: np.ndarray) -> tf.Tensor:
    """A CPU tensor over `array`'s memory, without a copy (DLPack needs a writable, aligned array)."""
    if not array.flags.writeable:
        raise ValueError("the cache must be mapped copy-on-write (mmap_mode='c') to be shared with TensorFlow without a copy")
    if array.ctypes.data % TENSOR_ALIGNMENT:
        raise ValueError(f"an array shared with TensorFlow must start on a {TENSOR_ALIGNMENT}-byte boundary (use aligned_copy)")
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def aligned_copy(array: np.ndarray) -> np.ndarray:
    """A writable copy of `array` whose data starts on a `TENSOR_ALIGNMENT` boundary (for in-memory data)."""
    buffer = np.empty(array.nbytes + TENSOR_ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % TENSOR_ALIGNMENT
    out = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def _options() -> tf.data.Options:
    options = tf.data.Options()
    # tf.data's default graph rewrites serialize the pipeline's graph, and with
    # it the captured cache tensor: a full copy of the training set in the
    # worker's memory (measured: +1.1 GB for 3,000 images at 600x200). The
    # pipeline is already what those rewrites would make it (parallel map,
    # prefetch), so they are off.
    options.experimental_optimization.apply_default_optimizations = False
    # Nothing runs before the first batch is asked for, so an iterator Keras
    # makes for an epoch of `train` reads the epoch set in `on_epoch_begin`
    # (TensorFlow's default, stated here because we rely on it).
    options.experimental_warm_start = False
    # Every size here is fixed (one gather at a time, PREFETCH_BATCHES ready):
    # nothing for tf.data's autotuner to tune, so no model of the pipeline is
    # built per iterator and no thread of its wakes up during the fit.
    options.autotune.enabled = False
    options.deterministic = True
    return options


def _shuffled_batches(x: tf.Tensor, y: tf.Tensor, epoch: tf.Variable, batch_size: int, seed: int, endless: bool) -> tf.data.Dataset:
    """Endless: step s is batch s % steps of epoch `epoch` + s // steps. Else: the `steps` batches of epoch `epoch`.

    Each batch's rows are sorted. `epoch` is read when a batch is made, and
    set before the iterator that reads it exists (see `_EpochSetter`).
    """
    n = int(x.shape[0])
    steps = -(-n // batch_size)

    def batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        number, i = epoch + step // steps, step % steps
        positions = tf.range(i * batch_size, tf.minimum((i + 1) * batch_size, n), dtype=tf.int64)
        rows = tf.sort(_shuffled(positions, n, seed, number))
        return tf.gather(x, rows), tf.gather(y, rows)

    # range().repeat(): the step count without a function of its own (`Dataset.counter` has one, ~2 ms per iterator).
    steps_made = tf.data.Dataset.range(2**62).repeat() if endless else tf.data.Dataset.range(steps)
    return map_on_host(steps_made, batch).prefetch(PREFETCH_BATCHES).with_options(_options())


def _batches_in_order(x: tf.Tensor, y: tf.Tensor, batch_size: int) -> tf.data.Dataset:
    # No function of ours in this one, so Keras's new iterator each epoch costs
    # nothing to set up (even on one device a function costs ~1 ms per iterator: see the module doc).
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(_options())


@dataclass(frozen=True)
class TrialInputs:
    """What `fit` needs: `fit(train, validation_data=val, callbacks=[..., callback])`.

    `train_endless` is what `trial_fit` hands `model.fit` in place of `train`
    (with `steps_per_epoch`), so that Keras reads the whole fit from one iterator.
    """

    train: tf.data.Dataset  # one epoch of batches of (uint8 images (b, h, w, c), int32 labels (b,))
    val: tf.data.Dataset  # one pass over the validation images, in order
    callback: keras.callbacks.Callback
    steps_per_epoch: int
    validation_steps: int
    train_endless: tf.data.Dataset  # the epochs' batches one after the other, from the fit's first epoch


class _EpochSetter(keras.callbacks.Callback):
    """Tells the pipelines which epoch Keras is beginning, before it makes the iterator that reads it.

    `train` reads the epoch set at each epoch's start (Keras makes an iterator
    per epoch for a dataset that ends); `train_endless` reads the fit's first
    epoch, set once per fit (Keras keeps one iterator when given
    `steps_per_epoch`, made after the first `on_epoch_begin`, and after
    `BackupAndRestore` has chosen the epoch).
    """

    def __init__(self, epoch: tf.Variable, first_epoch: tf.Variable):
        super().__init__()
        self._epoch, self._first_epoch = epoch, first_epoch
        self._starting = True

    def set_epoch(self, epoch: int) -> None:
        """The next iterator made over `train` or `train_endless` starts at the first batch of epoch `epoch`."""
        if not 0 <= epoch <= _MAX_EPOCH:
            raise ValueError(f"epoch must be in [0, 2**32), but got {epoch}.")
        self._epoch.assign(epoch)
        self._first_epoch.assign(epoch)

    def on_train_begin(self, logs: Any = None) -> None:
        self._starting = True

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if self._starting:
            self.set_epoch(epoch)
            self._starting = False
        else:
            self._epoch.assign(epoch)


def make_datasets(data: Dataset, batch_size: int, seed: int, initial_epoch: int = 0) -> TrialInputs:
    """The training and validation pipelines over `data`'s memory-mapped cache, for every fit at `batch_size`.

    Args:
        data: the dataset, as `load_image_folder` returns it (arrays mapped
            copy-on-write).
        batch_size: images per batch.
        seed: the search's seed: with the epoch, it fixes each epoch's order.
        initial_epoch: the epoch an iterator made outside `fit` starts at (in
            `fit`, the callback sets it).

    Returns:
        `TrialInputs`: `train` yields one epoch's shuffled batches (the epoch
        the callback last set), `train_endless` the epochs' batches one after
        the other (give `fit` `steps_per_epoch`), `val` the validation batches
        in order (all `(uint8 images, int32 labels)`, an epoch's last batch
        short), `callback` sets the epoch.

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
    with tf.device("/CPU:0"):  # read by the gather function, which runs on the host alone (`map_on_host`)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        first_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="first_epoch")
    callback = _EpochSetter(epoch, first_epoch)
    callback.set_epoch(initial_epoch)
    train = _shuffled_batches(x_train, y_train, epoch, batch_size, seed, endless=False)
    endless = _shuffled_batches(x_train, y_train, first_epoch, batch_size, seed, endless=True)
    val = _batches_in_order(x_val, y_val, batch_size)
    steps, val_steps = -(-n_train // batch_size), -(-n_val // batch_size)
    return TrialInputs(train, val, callback, steps, val_steps, endless)
