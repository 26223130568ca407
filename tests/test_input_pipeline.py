"""The worker's input pipeline (issue 17): batches from the memory-mapped cache, in flat memory, in a replayable order."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import REPO
from tuner_job.data import Dataset, load_image_folder
from tuner_job.input_pipeline import PREFETCH_BATCHES, epoch_order, make_datasets
from tuner_job.trial_fit import BatchedData, FitRecord, fit_trial

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import child_env  # noqa: E402
from bench.memory import run_sampled  # noqa: E402

MANY = 4000  # images in the large test folder, half of them for validation ...
SPLIT = 0.5  # ... so that a copy of either half shows
SOURCE = (12, 16)  # the files are tiny, quick to write and decode ...
CACHED = (96, 128)  # ... the cache is not: 4,000 x 36 KiB = 147 MB, far above a worker's pipeline buffers


def _digest(image: Any) -> str:
    return hashlib.blake2b(np.asarray(image, dtype=np.uint8).tobytes(), digest_size=12).hexdigest()


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 4,000 distinct random images in 4 classes, its cache (96x128, half for validation) built."""
    folder = tmp_path_factory.mktemp("many") / "ds"
    rng = np.random.default_rng(5)
    for i in range(MANY):
        target = folder / f"class{i % 4}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*SOURCE, 3), dtype=np.uint8)).save(target / f"img{i:05d}.png", compress_level=1)
    load_image_folder(folder, CACHED, SPLIT, 42)
    return folder


def _epoch(inputs: Any, epoch: int) -> list[list[str]]:
    """The batches of one epoch, read from a new iterator that starts at it (as a fit starting there reads it)."""
    inputs.callback.set_epoch(epoch)
    return [[_digest(image) for image in images.numpy()] for images, _ in inputs.train.take(inputs.steps_per_epoch)]


# ----- the order: a pure function of (n, batch_size, seed, epoch) --------------------------------


def test_epoch_order_is_a_seeded_permutation_per_epoch() -> None:
    n, batch = 103, 8
    orders = [epoch_order(n, batch, 42, epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(n))  # each image once
        batches = [order[i : i + batch] for i in range(0, n, batch)]
        assert all(np.all(np.diff(b) > 0) for b in batches)  # rows in cache order within a batch
        assert len(batches[-1]) == n % batch
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert np.array_equal(epoch_order(n, batch, 42, 1), orders[1])  # the same in any process, at any time
    assert not np.array_equal(epoch_order(n, batch, 43, 1), orders[1])
    sets = [{frozenset(order[i : i + batch].tolist()) for i in range(0, n, batch)} for order in orders]
    assert sets[0] != sets[1]  # shuffled across batches, not only within
    assert epoch_order(5, 8, -1, 0).tolist() == sorted(epoch_order(5, 8, -1, 0).tolist())  # negative seeds work; one batch


# ----- the pipeline over a real cache ------------------------------------------------------------


def test_every_training_image_once_per_epoch_and_epochs_shuffled_differently(many_images: Path) -> None:
    data = load_image_folder(many_images, CACHED, SPLIT, 42)
    train_rows = sorted(_digest(image) for image in data.x_train)
    assert len(set(train_rows)) == len(train_rows) == 2000  # distinct images: a digest names a row
    inputs = make_datasets(data, 64, seed=42)
    assert inputs.steps_per_epoch == 32 and inputs.validation_steps == 32
    epochs = [_epoch(inputs, e) for e in range(3)]
    for batches in epochs:
        assert sorted(d for b in batches for d in b) == train_rows
        assert [len(b) for b in batches] == [64] * 31 + [2000 - 31 * 64]
    flat = [[d for b in batches for d in b] for batches in epochs]
    assert flat[0] != flat[1] and flat[1] != flat[2] and flat[0] != flat[2]
    assert _epoch(inputs, 1) == epochs[1]  # epoch 1 again: the same order
    # Validation: in cache order, every image once, labels with their images.
    val_images, val_labels = zip(*[(x.numpy(), y.numpy()) for x, y in inputs.val], strict=True)
    assert np.array_equal(np.concatenate(val_images), np.asarray(data.x_val))
    assert np.array_equal(np.concatenate(val_labels), np.asarray(data.y_val))
    # Training labels travel with their images.
    label_of = {_digest(x): int(y) for x, y in zip(data.x_train, data.y_train, strict=True)}
    for images, labels in inputs.train.take(3):
        assert [label_of[_digest(x)] for x in images.numpy()] == labels.numpy().tolist()


def test_one_iterator_reads_the_epochs_one_after_the_other(many_images: Path) -> None:
    """The endless twin: batch s of an iterator started at epoch k is batch s % steps of epoch k + s // steps."""
    data = load_image_folder(many_images, CACHED, SPLIT, 42)
    inputs = make_datasets(data, 96, seed=7, initial_epoch=5)
    steps = inputs.steps_per_epoch
    assert steps == 21  # 2,000 = 20 x 96 + 80: the last batch of each epoch is short
    assert len(list(inputs.train)) == steps  # `train` itself is one epoch: a loop over it ends
    rows = [_digest(x) for images, _ in inputs.train_endless.take(3 * steps) for x in images.numpy()]
    expected = [_digest(data.x_train[i]) for epoch in (5, 6, 7) for i in epoch_order(2000, 96, 7, epoch)]
    assert rows == expected


def test_make_datasets_starts_at_initial_epoch_and_rejects_a_read_only_map(many_images: Path) -> None:
    data = load_image_folder(many_images, CACHED, SPLIT, 42)
    inputs = make_datasets(data, 50, seed=3, initial_epoch=4)
    first, _ = next(iter(inputs.train))
    assert [_digest(x) for x in first.numpy()] == [_digest(data.x_train[i]) for i in epoch_order(2000, 50, 3, 4)[:50]]
    mapped_read_only = np.load(many_images / ".cache" / _only_cache(many_images) / "x_train.npy", mmap_mode="r")
    read_only = Dataset(data.classes, mapped_read_only, data.y_train, data.x_val, data.y_val)
    with pytest.raises(ValueError, match="copy-on-write"):
        make_datasets(read_only, 50, seed=3)
    with pytest.raises(ValueError, match="batch_size"):
        make_datasets(data, 0, seed=3)


def _only_cache(folder: Path) -> str:
    (entry,) = [p.name for p in (folder / ".cache").iterdir() if p.is_dir()]
    return entry


# ----- memory: a worker-like process holds no copy of the arrays ---------------------------------


def _worker(folder: Path, pipeline: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{pipeline}.json"
    run = run_sampled(
        [sys.executable, "-m", "bench.input_worker", "--data", str(folder), "--image-size", *map(str, CACHED), "--validation-split", str(SPLIT),
         "--batch-size", "32", "--pipeline", pipeline, "--repeats", "1", "--out", str(out)],
        env=child_env(), cwd=REPO, timeout=240,
    )
    assert run.returncode == 0, run.output[-3000:]
    result = json.loads(out.read_text())
    result["peak_rss_anon_bytes"] = run.peak_rss_anon_bytes
    result["samples"] = run.samples
    return result


@pytest.mark.slow
def test_a_training_worker_holds_no_copy_of_the_cache(many_images: Path, tmp_path: Path) -> None:
    """Peak RssAnon of a worker-like process (read from /proc/<pid>/status while it reads and trains an epoch).

    The bound, half of either split's size, is far above what the pipeline may
    hold ((1 being gathered + 2 prefetched) x 32 images x 36 KiB = 3.5 MB) and below a
    copy of the training or the validation images; the pipeline before issue
    17 (`copy`: from_tensor_slices and a full shuffle buffer), run the same
    way, exceeds it.
    """
    ours = _worker(many_images, "ours", tmp_path)
    assert ours["train_bytes"] == ours["validation_bytes"] == MANY // 2 * int(np.prod(CACHED)) * 3
    assert ours["images_read"] == MANY and ours["samples"] > 20
    bound = ours["train_bytes"] // 2
    assert (1 + PREFETCH_BATCHES) * 32 * int(np.prod(CACHED)) * 3 < bound // 5
    grew = ours["peak_rss_anon_bytes"] - ours["rss_anon_base_bytes"]
    assert grew < bound, f"the worker's anonymous memory grew by {grew / 1e6:.0f} MB, reading a {ours['cache_bytes'] / 1e6:.0f} MB cache"
    control = _worker(many_images, "copy", tmp_path)
    control_grew = control["peak_rss_anon_bytes"] - control["rss_anon_base_bytes"]
    assert control_grew > ours["cache_bytes"], f"the copying pipeline grew by only {control_grew / 1e6:.0f} MB: the bound proves nothing"


# ----- fit: one iterator per fit; a resumed trial replays the uninterrupted order -----------------


class _Interrupt(Exception):
    pass


class _Hypermodel:
    """A hypermodel's `fit`, as the worker calls it (`fit_trial`): passing everything on, or only some of it."""

    def __init__(self, how: str):
        self.how = how

    def fit(self, hp: Any, model: Any, x: Any, **kwargs: Any) -> Any:
        if self.how == "passes":  # KerasTuner's default fit, and the README's advice
            return model.fit(x, **kwargs)
        some = {k: kwargs[k] for k in ("validation_data", "epochs", "initial_epoch", "verbose")}
        if self.how == "drops":  # only the callbacks it knows (the worker's last one is the pipeline's)
            return model.fit(x, callbacks=kwargs["callbacks"][:-1], **some)
        assert self.how == "maps"  # trains on a dataset it made from ours
        return model.fit(x.map(lambda images, labels: (images, labels)), callbacks=kwargs["callbacks"], **some)


def _recording_fit(batched: BatchedData, data: Dataset, epochs: int, backup: Path, stop_at: tuple[int, int] | None = None,
                   initial_epoch: int = 0, how: str = "passes") -> tuple[dict[int, list[str]], int]:
    """Train a small model as the trial runner does (`fit_trial`, BackupAndRestore); what each epoch trained on, and training iterators made."""
    import keras
    import tensorflow as tf

    seen: dict[int, list[str]] = {}
    state = {"epoch": None}

    class Record(keras.layers.Layer):
        def call(self, x: Any, training: Any = None) -> Any:
            if training:
                seen.setdefault(state["epoch"], []).extend(_digest(image) for image in x.numpy())
            return x

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            state["epoch"] = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if stop_at == (state["epoch"], batch):
                raise _Interrupt()

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input(data.input_shape), Record(), keras.layers.Flatten(), keras.layers.Dense(data.num_classes, activation="softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    callbacks = [keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch", delete_checkpoint=False), Watch()]
    iterators, make_iterator = [], tf.data.Dataset.__iter__

    def counting(dataset: Any) -> Any:  # the real __iter__, counted (validation's apart: Keras makes one per epoch)
        if dataset is not batched(4).val:
            iterators.append(dataset)
        return make_iterator(dataset)

    tf.data.Dataset.__iter__ = counting
    try:
        fit_trial(_Hypermodel(how), None, model, batched, 4, FitRecord(4), epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0)
    except _Interrupt:
        pass
    finally:
        tf.data.Dataset.__iter__ = make_iterator
    return seen, len(iterators)


@pytest.mark.parametrize("how", ["passes", "drops", "maps"])
def test_a_fit_reads_each_epoch_in_its_order_from_one_iterator_and_a_resumed_trial_replays_it(shared: Path, tmp_path: Path, how: str) -> None:
    """One `TrialInputs` for every fit, as a worker keeps one per batch size; the hypermodel's `fit` passing everything on, or not."""
    folder = shared / "data" / "toonvision"
    data = load_image_folder(folder, (24, 16), 0.25, 3)
    assert len({_digest(x) for x in data.x_train}) == len(data.y_train) == 24
    batched = BatchedData(lambda batch_size: make_datasets(data, batch_size, seed=11))
    expected = {e: [_digest(data.x_train[i]) for i in epoch_order(24, 4, 11, e)] for e in range(4)}
    assert len({tuple(v) for v in expected.values()}) == 4  # four epochs, four orders (each a permutation: test_epoch_order_...)

    whole, iterators = _recording_fit(batched, data, 4, tmp_path / "whole", how=how)
    assert whole == expected  # 6 steps per epoch: each image once, in epoch_order's order
    # One iterator for the 4 epochs when model.fit is given ours; a dataset made from it ends each epoch (Keras: new ones per epoch).
    assert iterators >= 4 if how == "maps" else iterators == 1

    # Killed after batch 2 of epoch 2 (its last backup: the end of epoch 1); the trial resumes.
    backup = tmp_path / "resumed"
    cut, _ = _recording_fit(batched, data, 4, backup, stop_at=(2, 2), how=how)
    assert cut == {0: expected[0], 1: expected[1], 2: expected[2][: 3 * 4]}
    resumed, _ = _recording_fit(batched, data, 4, backup, how=how)
    assert resumed == {2: expected[2], 3: expected[3]}  # BackupAndRestore resumed at epoch 2, with the uninterrupted run's order

    # The trial runner resumes from its own backup, and Hyperband continues a trial, with fit(initial_epoch=k): the same orders.
    continued, iterators = _recording_fit(batched, data, 4, tmp_path / "continued", initial_epoch=2, how=how)
    assert continued == {2: expected[2], 3: expected[3]}
    assert iterators >= 2 if how == "maps" else iterators == 1


def test_a_training_loop_of_its_own_reads_one_epoch_per_pass(shared: Path) -> None:
    """A hypermodel `fit` that loops over `x` itself (KerasTuner's custom-training-loop guide) gets a dataset that ends.

    Each pass is one epoch, each image once; calling the callbacks' `on_epoch_begin`, as a loop that keeps
    the worker's callbacks does, gives each pass its epoch's order.
    """
    import keras

    folder = shared / "data" / "toonvision"
    data = load_image_folder(folder, (24, 16), 0.25, 3)
    batched = BatchedData(lambda batch_size: make_datasets(data, batch_size, seed=11))

    class OwnLoop:
        def fit(self, hp: Any, model: Any, x: Any, callbacks: Any = None, epochs: int = 1, **kwargs: Any) -> Any:
            assert int(x.cardinality()) > 0  # it ends (an endless one would loop here for ever)
            passes = []
            for epoch in range(epochs):
                for callback in callbacks:
                    callback.on_epoch_begin(epoch)
                passes.append([_digest(image) for images, _ in x for image in images.numpy()])
            return passes

    model = keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(), keras.layers.Dense(data.num_classes)])
    passes = fit_trial(OwnLoop(), None, model, batched, 4, FitRecord(4), epochs=3, callbacks=[], verbose=0)
    assert passes == [[_digest(data.x_train[i]) for i in epoch_order(24, 4, 11, e)] for e in range(3)]


# ----- the demo trains as before: same pixels, val_loss within the noise of the shuffle ----------


def _demo_val_loss(data: Dataset, pipeline: str, seed: int) -> float:
    """Final val_loss of the demo's fit (examples/demo.yaml: default hyperparameters, batch 8, 4 epochs), its weights seeded alike."""
    import keras
    import keras_tuner as kt

    from bench.input_worker import PIPELINES
    from tuner_job.hypermodels import build_toonvision

    keras.utils.set_random_seed(42)
    model = build_toonvision(kt.HyperParameters(), input_shape=data.input_shape, num_classes=data.num_classes)
    history = model.fit(**PIPELINES[pipeline](data, 8, seed), epochs=4, verbose=0)
    return float(history.history["val_loss"][-1])


@pytest.mark.slow
def test_the_demo_trains_as_it_did_before(tmp_path: Path) -> None:
    """The demo's data (`make demo`: 60 images per class at 120x40), trained on the pipeline before issue 17 and on ours.

    The pixels are the same (the demo's images are already at the search's
    size, so decoding is the PNG's pixels in either decoder), and only the
    order of the batches differs: ours draws it from (seed, epoch) instead of
    a shuffle buffer. So ours must land within the spread that the shuffle's
    seed alone gives the old pipeline.
    """
    from cluster.synth import synthesize

    folder = tmp_path / "toonvision"
    synthesize(folder, per_class=60, size=(120, 40), seed=42)
    data = load_image_folder(folder, (120, 40), 0.2, 42)
    pillow = sorted(_digest(Image.open(p).convert("RGB")) for p in folder.glob("*/*.png"))  # what the cache held before (Pillow)
    assert sorted(_digest(x) for x in (*data.x_train, *data.x_val)) == pillow
    seeds = (1, 2, 3)
    before = [_demo_val_loss(data, "copy", seed) for seed in seeds]
    ours = [_demo_val_loss(data, "ours", seed) for seed in seeds]
    assert max(before) < 1.2 and max(ours) < 1.2, (before, ours)  # both learn (chance is ln 4 = 1.39)
    spread = max(before) - min(before)
    low, high = min(before) - spread, max(before) + spread
    assert all(low <= loss <= high for loss in ours), f"val_loss: ours {ours}, before {before} (seeds {seeds})"
    assert abs(np.mean(ours) - np.mean(before)) <= spread, (before, ours)
