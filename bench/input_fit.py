"""The input pipelines as `fit` reads them: ours, the one before issue 17, and a `keras.utils.PyDataset`, in turns in one process.

Issue 17 asked for `tf.data` "or Keras's `PyDataset` with workers, whichever
measures better". Here each is read by `fit` of a model that does nothing
with its batches (its `train_step` and `test_step` only count the images), so
what is timed is Keras reading the data and nothing else: its iterators (ours:
one per fit, with `steps_per_epoch`; the copy and the PyDataset: one per
epoch), its call per step, and, for the PyDataset, its worker threads.

- `ours`: `make_datasets` (`bench.input_worker.our_pipeline`);
- `copy`: the pipeline before issue 17 (the arrays copied into `tf.data`);
- `pydataset_w1`, `pydataset_w2`: `MemmapBatches`, the same batches (same
  `epoch_order`, same bytes) gathered by numpy from the same memory map in 1
  or 2 worker threads (`pydataset_images_per_s` is the better of the two).
  Threads, not processes: a process sends each batch (11 MB at 600x200) back
  through a pipe; measured here at 200 images, 2 processes read 235 images/s,
  2 threads 730, 1 thread 2,160 (Keras starts and stops its workers each epoch).

Each pipeline fits `epochs` epochs (the demo's 4) in its turn, `rounds`
times, after a warm-up fit (Keras traces its step functions there).
`<name>_images_per_s` is a fit's images (training + validation, every epoch)
over the median `fit` call (`<name>_fit_seconds`): what a fit sets up once
(ours: its iterator, the gather function set up, ~1 ms) and what it leaves
behind (the copy: the iterator Keras made for an epoch that never comes, its
shuffle buffer filling) are counted in. `<name>_first_epoch_seconds` and
`<name>_later_epoch_seconds` (medians) show a fit's epochs apart.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bench.input_worker import PIPELINES
from tuner_job.input_pipeline import PREFETCH_BATCHES, epoch_order

__all__ = ["MemmapBatches", "through_fit"]


class MemmapBatches(keras.utils.PyDataset):
    """Batches gathered by numpy from the memory-mapped cache: with `seed`, epoch e in `epoch_order`'s order; without, in order.

    Args:
        x: images, (n, height, width, 3) uint8 (the memory map).
        y: labels, (n,) int32.
        batch_size: images per batch (the last one short).
        seed: the search's seed (training), or None (validation: in order).
        kwargs: `workers`, `use_multiprocessing`, `max_queue_size` (PyDataset's).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch = 0
        self.order = None if seed is None else epoch_order(len(y), batch_size, seed, 0)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = index * self.batch_size, min((index + 1) * self.batch_size, len(self.y))
        if self.order is None:
            return np.array(self.x[start:end]), np.array(self.y[start:end])
        rows = self.order[start:end]
        return self.x[rows], self.y[rows]  # fancy indexing copies

    def on_epoch_end(self) -> None:
        if self.seed is not None:
            self.epoch += 1
            self.order = epoch_order(len(self.y), self.batch_size, self.seed, self.epoch)


def pydataset_pipeline(data: Any, batch_size: int, seed: int, workers: int = 2) -> dict[str, Any]:
    """`fit`'s arguments for `MemmapBatches` over `data`, read by `workers` threads (queue: PREFETCH_BATCHES + workers)."""
    options = {"workers": workers, "use_multiprocessing": False, "max_queue_size": PREFETCH_BATCHES + workers}
    return {
        "x": MemmapBatches(data.x_train, data.y_train, batch_size, seed, **options),
        "validation_data": MemmapBatches(data.x_val, data.y_val, batch_size, None, **options),
        "callbacks": [],
        "steps_per_epoch": None,
    }


class _Null(keras.Model):
    """A model that reads its batches and does nothing with them."""

    def call(self, x: Any) -> Any:
        return x

    def train_step(self, data: Any) -> dict[str, Any]:
        return {"images": tf.shape(data[0])[0]}

    def test_step(self, data: Any) -> dict[str, Any]:
        return {"images": tf.shape(data[0])[0]}


class _EpochTimes(keras.callbacks.Callback):
    def __init__(self, seconds: list[float]):
        super().__init__()
        self.seconds = seconds

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:  # after validation
        self.seconds.append(time.perf_counter() - self.started)


def through_fit(data: Any, batch_size: int, seed: int, epochs: int = 4, rounds: int = 5) -> dict[str, Any]:
    """Images/s of each pipeline read by `fit` (see the module doc), in turns: `{"<name>_images_per_s": ..., ...}`."""
    pydatasets = {f"pydataset_w{w}": (lambda d, b, s, w=w: pydataset_pipeline(d, b, s, w)) for w in (1, 2)}
    makers = {**PIPELINES, **pydatasets}
    fits = {name: make(data, batch_size, seed) for name, make in makers.items()}
    models = {name: _Null() for name in fits}
    for model in models.values():
        model.compile()
    seconds: dict[str, list[list[float]]] = {name: [] for name in fits}  # per fit, its epochs

    walls: dict[str, list[float]] = {name: [] for name in fits}  # per fit, the fit() call

    def fit(name: str, n_epochs: int) -> list[float]:
        times: list[float] = []
        args = dict(fits[name])
        args["callbacks"] = [*args["callbacks"], _EpochTimes(times)]
        started = time.perf_counter()
        models[name].fit(**args, epochs=n_epochs, verbose=0)
        walls[name].append(time.perf_counter() - started)
        return times

    for name in fits:
        fit(name, 1)  # warm-up: Keras traces its step functions
    gc.collect()
    gc.freeze()  # a full collection walks TensorFlow's objects (~100 ms): not the pipelines' cost, and it fell on any of them
    for name in fits:
        walls[name].clear()
    for _ in range(max(1, rounds)):
        for name in fits:
            seconds[name].append(fit(name, epochs))
    images = len(data.y_train) + len(data.y_val)
    out: dict[str, Any] = {"epochs": epochs, "rounds": rounds, "images_per_epoch": images}
    for name, fits_seconds in seconds.items():
        out[f"{name}_images_per_s"] = epochs * images / statistics.median(walls[name])
        out[f"{name}_fit_seconds"] = statistics.median(walls[name])
        out[f"{name}_first_epoch_seconds"] = statistics.median(times[0] for times in fits_seconds)
        out[f"{name}_later_epoch_seconds"] = statistics.median(t for times in fits_seconds for t in times[1:])
        out[f"{name}_epoch_seconds"] = fits_seconds
    best = max(pydatasets, key=lambda name: out[f"{name}_images_per_s"])
    out.update(pydataset_images_per_s=out[f"{best}_images_per_s"], pydataset_workers=int(best.removeprefix("pydataset_w")))
    return out
