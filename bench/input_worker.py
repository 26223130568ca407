"""`python -m bench.input_worker`: what a worker does with the dataset, timed, for the input benchmark and tests.

Run as its own process, so that its memory can be read from outside
(`/proc/<pid>/status`, see `bench.memory`). On an image folder whose cache is
already built:

1. start-up: `load_prepared` (as a worker: maps the cache its chief prepared);
2. warm-up: the same pipeline over the first few dozen images, one epoch and
   one `fit` of a small model (TensorFlow's thread pools and Keras's compiled
   functions are made here, so what follows is the pipeline's own memory);
   `rss_anon_base_bytes` is read after it;
3. the pipeline for the whole set is made and its first batch taken;
4. one epoch (training + validation) consumed in a compiled loop, as `fit`
   consumes it, without a model (`images_per_s`, median of `--repeats`);
   with `--against`, after each, the same epoch read another way: `numpy`
   copying the same batches out of the memory map in one thread (the floor),
   or another pipeline (both in one process, under the same load);
5. one epoch of `fit` of a small model (so the memory is a training worker's).

`--pipeline ours` is `tuner_job.input_pipeline.make_datasets`; `--pipeline
copy` is the pipeline before issue 17 (`from_tensor_slices` over the arrays and
a shuffle buffer the size of the training set), kept here as the control.
`--first-batches` times a trial's first batch for several folders in turns;
`--decode-baseline` times `keras.utils.image_dataset_from_directory` made anew
and read for one epoch, as every trial would without a cache. `--through-fit`
times ours, the copy and a `keras.utils.PyDataset` over the same memory map
as `fit` reads them (`bench.input_fit`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import write_json
from bench.memory import rss_anon_bytes


def copy_pipeline(data: Any, batch_size: int, seed: int) -> dict[str, Any]:
    """The pipeline before issue 17: the arrays copied into tf.data, a full-size shuffle buffer; `fit`'s arguments."""
    import numpy as np
    import tensorflow as tf

    train = (
        tf.data.Dataset.from_tensor_slices((np.asarray(data.x_train), np.asarray(data.y_train)))
        .shuffle(len(data.y_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = tf.data.Dataset.from_tensor_slices((np.asarray(data.x_val), np.asarray(data.y_val))).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return {"x": train, "validation_data": val, "callbacks": [], "steps_per_epoch": None}


def our_pipeline(data: Any, batch_size: int, seed: int) -> dict[str, Any]:
    """`make_datasets`, as `model.fit` is given it (`trial_fit`): the endless training dataset, with `steps_per_epoch`."""
    from tuner_job.input_pipeline import make_datasets

    inputs = make_datasets(data, batch_size, seed)
    return {"x": inputs.train_endless, "validation_data": inputs.val, "callbacks": [inputs.callback], "steps_per_epoch": inputs.steps_per_epoch}


#: `name -> (data, batch_size, seed) -> fit's keyword arguments` (x, validation_data, callbacks, steps_per_epoch).
PIPELINES = {"ours": our_pipeline, "copy": copy_pipeline}


def _small_model(input_shape: tuple[int, ...], classes: int) -> Any:
    import keras

    pool = max(1, min(input_shape[0], input_shape[1]) // 4)
    model = keras.Sequential([
        keras.Input(input_shape), keras.layers.Rescaling(1 / 255), keras.layers.AveragePooling2D(pool),
        keras.layers.Flatten(), keras.layers.Dense(classes, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _median(values: list[float]) -> float:
    return statistics.median(values)


def numpy_epoch(data: Any, batch_size: int, seed: int, epoch: int) -> int:
    """The floor: the same batches (same order, same bytes) copied out of the memory map by numpy, one thread."""
    import numpy as np

    from tuner_job.input_pipeline import epoch_order

    order = epoch_order(len(data.y_train), batch_size, seed, epoch)
    seen = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        images, _ = data.x_train[rows], data.y_train[rows]  # fancy indexing copies
        seen += len(images)
    for start in range(0, len(data.y_val), batch_size):
        images, _ = np.array(data.x_val[start : start + batch_size]), np.array(data.y_val[start : start + batch_size])
        seen += len(images)
    return seen


def epoch_reader(fit_args: dict[str, Any]) -> Any:
    """`() -> images read`: one epoch (train, then validation) read as `fit` reads it, in a compiled loop, without a model.

    As Keras does: a dataset given with `steps_per_epoch` (ours) is read from
    one iterator, `steps_per_epoch` batches an epoch; one without (the copy)
    through a new iterator each epoch; validation, a new iterator each epoch.
    """
    import tensorflow as tf

    @tf.function
    def consume(dataset: Any) -> Any:
        return dataset.reduce(tf.constant(0, tf.int64), lambda total, batch: total + tf.cast(tf.shape(batch[0])[0], tf.int64))

    train, val, steps = fit_args["x"], fit_args["validation_data"], fit_args["steps_per_epoch"]
    if steps is None:
        return lambda: int(consume(train)) + int(consume(val))
    iterator = iter(train)

    @tf.function
    def take(iterator: Any) -> Any:
        total = tf.constant(0, tf.int64)
        for _ in tf.range(steps):
            total += tf.cast(tf.shape(next(iterator)[0])[0], tf.int64)
        return total

    return lambda: int(take(iterator)) + int(consume(val))


def run(folder: Path, image_size: tuple[int, int], batch_size: int, seed: int, pipeline: str, fit: bool, repeats: int, against: str | None,
        validation_split: float = 0.2) -> dict[str, Any]:
    """One worker's day with `pipeline`; `against` ("numpy" or another pipeline) is timed epoch for epoch alongside it."""
    from tuner_job.data import Dataset, load_prepared

    make = PIPELINES[pipeline]
    out: dict[str, Any] = {"pipeline": pipeline, "rss_anon_after_import_bytes": rss_anon_bytes()}
    started = time.perf_counter()
    data = load_prepared(folder, image_size, validation_split, seed)
    out["startup_seconds"] = time.perf_counter() - started
    out["images"] = len(data.y_train) + len(data.y_val)
    out["cache_bytes"] = int(data.x_train.nbytes + data.x_val.nbytes)
    out["train_bytes"], out["validation_bytes"] = int(data.x_train.nbytes), int(data.x_val.nbytes)

    k = min(4 * batch_size, len(data.y_train))
    small = Dataset(data.classes, data.x_train[:k], data.y_train[:k], data.x_val[:batch_size], data.y_val[:batch_size])
    warm = make(small, batch_size, seed)
    epoch_reader(warm)()
    if fit:
        _small_model(data.input_shape, data.num_classes).fit(**warm, epochs=1, verbose=0)
    out["rss_anon_base_bytes"] = rss_anon_bytes()

    started = time.perf_counter()
    fit_args = make(data, batch_size, seed)
    next(iter(fit_args["x"]))
    out["first_batch_seconds"] = time.perf_counter() - started  # once: see first_batches() for the comparison across sizes

    read_epoch = epoch_reader(fit_args)  # its set-up, once per fit (ours: the iterator), is not an epoch's
    other: Any = None
    if against == "numpy":
        other = lambda: numpy_epoch(data, batch_size, seed, 0)  # noqa: E731
    elif against:
        other = epoch_reader(PIPELINES[against](data, batch_size, seed))
        other()  # its warm-up (the copy fills its shuffle buffer)
    read_epoch()  # the compiled loops traced
    times: dict[str, list[float]] = {"ours": [], "other": []}
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        seen = read_epoch()
        times["ours"].append(time.perf_counter() - started)
        if against:
            started = time.perf_counter()
            other_seen = other()
            times["other"].append(time.perf_counter() - started)
    out.update(images_read=seen, epoch_seconds=times["ours"], images_per_s=seen / _median(times["ours"]))
    if against:
        out[f"{against}_images_read"] = other_seen
        out[f"{against}_epoch_seconds"] = times["other"]
        out[f"{against}_images_per_s"] = other_seen / _median(times["other"])
    del read_epoch, other  # their iterators (ours: endless, its batches in flight) end here, as a fit's end with it
    if fit:
        started = time.perf_counter()
        _small_model(data.input_shape, data.num_classes).fit(**fit_args, epochs=1, verbose=0)
        out["fit_seconds"] = time.perf_counter() - started
    out["rss_anon_end_bytes"] = rss_anon_bytes()
    return out


def first_batches(folders: list[Path], image_size: tuple[int, int], batch_size: int, seed: int, repeats: int) -> dict[str, Any]:
    """A trial's time to its first batch (`make_datasets`, then one batch) for each folder, taken in turns.

    Taking the folders in turn, in one process, puts every size under the
    same machine load, so their ratio shows how the cost grows with the
    dataset and not what else ran at the time.
    """
    from tuner_job.data import load_image_folder
    from tuner_job.input_pipeline import make_datasets

    datasets = [load_image_folder(folder, image_size, 0.2, seed) for folder in folders]
    for data in datasets:  # warm-up
        next(iter(make_datasets(data, batch_size, seed).train_endless))
    seconds: list[list[float]] = [[] for _ in folders]
    for _ in range(max(1, repeats)):
        for i, data in enumerate(datasets):
            started = time.perf_counter()
            next(iter(make_datasets(data, batch_size, seed).train_endless))
            seconds[i].append(time.perf_counter() - started)
    return {
        "sizes": [
            {"images": len(data.y_train) + len(data.y_val), "first_batch_seconds": _median(s), "first_batch_seconds_min": min(s), "seconds": s}
            for data, s in zip(datasets, seconds, strict=True)
        ]
    }


def decode_baseline(folder: Path, image_size: tuple[int, int], batch_size: int, seed: int, repeats: int) -> dict[str, Any]:
    """`keras.utils.image_dataset_from_directory`, made anew and read for one epoch, as a trial without a cache would."""
    import keras
    import tensorflow as tf

    def epoch() -> int:
        train, val = keras.utils.image_dataset_from_directory(
            str(folder), image_size=tuple(image_size), batch_size=batch_size, validation_split=0.2,
            subset="both", seed=seed, label_mode="int", verbose=False,
        )
        return sum(int(tf.shape(x)[0]) for dataset in (train, val) for x, _ in dataset)

    epoch()  # warm-up: imports, the files in the page cache
    seconds = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        seen = epoch()
        seconds.append(time.perf_counter() - started)
    return {"pipeline": "decode", "images_read": seen, "epoch_seconds": seconds, "images_per_s": seen / _median(seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.input_worker")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="the image folder(s), their caches already built")
    parser.add_argument("--image-size", type=int, nargs=2, required=True, metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), default="ours")
    parser.add_argument("--against", choices=["numpy", *sorted(PIPELINES)], help="time this too, epoch for epoch with the pipeline")
    parser.add_argument("--no-fit", dest="fit", action="store_false", help="skip the model.fit steps")
    parser.add_argument("--decode-baseline", action="store_true", help="time image_dataset_from_directory instead (no cache)")
    parser.add_argument("--first-batches", action="store_true", help="time a trial's first batch for each --data folder, in turns")
    parser.add_argument("--through-fit", action="store_true", help="time ours, the copy and a PyDataset read by fit, in turns (bench.input_fit)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    size = tuple(args.image_size)
    if args.first_batches:
        result = first_batches(args.data, size, args.batch_size, args.seed, args.repeats)
    elif args.through_fit:
        from bench.input_fit import through_fit
        from tuner_job.data import load_prepared

        data = load_prepared(args.data[0], size, args.validation_split, args.seed)
        result = through_fit(data, args.batch_size, args.seed, rounds=args.repeats)
    elif args.decode_baseline:
        result = decode_baseline(args.data[0], size, args.batch_size, args.seed, args.repeats)
    else:
        result = run(args.data[0], size, args.batch_size, args.seed, args.pipeline, args.fit, args.repeats, args.against, args.validation_split)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
