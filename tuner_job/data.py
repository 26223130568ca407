"""The image dataset: `<class>/**/*.png|jpg|jpeg|bmp|gif` on the shared volume, decoded once.

The first process to need a split decodes every image, resizes it, and writes
the arrays under `<dataset>/.cache/<key>/`; every other process (and every
later trial) memory-maps them. One process builds while the others wait on a
file lock; the cache appears by an atomic rename, so a half-built cache is
never read. The key covers the file list (names, sizes, mtimes), the image
size, the split and the seed: change any and a new cache is built.

Images are read as `keras.utils.image_dataset_from_directory` reads them: the
same files (its extensions, any case, class subfolders walked), decoded by
`tf.io.decode_image` (every bit depth and colour mode it handles, 3 channels,
the first frame of a GIF) and resized by `tf.image.resize` (bilinear), so a
model sees what it would see under Keras, to within the rounding to uint8.
Hidden files and folders (macOS `._*` resource forks, `.ipynb_checkpoints`),
which Keras would list and then fail on, are skipped and counted in the log.
Listing needs only the standard library; TensorFlow is imported when a cache
is built (`load_image_folder`) or read as a `tf.data.Dataset` (`as_tf_datasets`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner_job.errors import DataError

__all__ = ["Dataset", "list_image_folder", "load_image_folder", "IMAGE_SUFFIXES"]

log = logging.getLogger("tuner_job.data")

# keras.utils.image_dataset_from_directory's ALLOWLIST_FORMATS, compared lower-case as it does.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_CACHE_VERSION = 2


@dataclass(frozen=True)
class Dataset:
    """Train and validation arrays and the class names.

    `x_train`, `x_val`: uint8 RGB images, shape `(n, height, width, 3)`,
    values 0..255 (memory-mapped from the cache). `y_train`, `y_val`: int32
    class indexes, shape `(n,)`, into `classes` (the class folders' names, sorted).
    `train_files`, `val_files`: each image's path relative to the data folder,
    in the arrays' order (which images validate, and where a pixel came from).
    """

    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    train_files: tuple[str, ...] = ()
    val_files: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def list_image_folder(folder: Path) -> dict[str, list[Path]]:
    """The image files of each class folder, by class name, in Keras's order.

    Classes are the folder's non-hidden subfolders, sorted. A class's images
    are the files under its folder, at any depth, whose name ends in one of
    `IMAGE_SUFFIXES` (any case), sorted by folder and then by name, as
    `keras.utils.image_dataset_from_directory` lists them. Hidden files and
    folders (a name starting with ".") are skipped, with a count in the log.

    Raises:
        DataError: the folder is missing, has fewer than 2 class folders, or a class folder holds no image.
    """
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"data folder {folder} must hold at least 2 class folders (<class>/*.png|jpg), found {len(classes)}")
    files: dict[str, list[Path]] = {}
    hidden = 0
    for class_dir in classes:
        images: list[Path] = []
        walked = []
        for root, dirs, names in os.walk(class_dir):
            hidden += sum(1 for d in dirs if d.startswith("."))
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # not walked into
            walked.append((root, names))
        for root, names in sorted(walked, key=lambda entry: entry[0]):  # Keras's order: by folder, then by name
            for name in sorted(names):
                if not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                if name.startswith("."):
                    hidden += 1
                else:
                    images.append(Path(root) / name)
        if not images:
            raise DataError(f"class folder {class_dir} holds no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)})")
        files[class_dir.name] = images
    if hidden:
        log.info("skipped %d hidden image files and folders (names starting with '.', such as macOS '._*' files) under %s", hidden, folder)
    return files


def _cache_key(files: dict[str, list[Path]], image_size: tuple[int, int], validation_split: float, seed: int) -> str:
    digest = hashlib.sha256(f"v{_CACHE_VERSION} {image_size} {validation_split} {seed}".encode())
    for name, images in files.items():
        for path in images:
            stat = path.stat()
            digest.update(f"{name}/{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _decode(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """One image as Keras's image loading makes it, rounded to uint8 `(height, width, 3)`."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.OpError) as exc:
        reason = (exc.message or "unreadable").splitlines()[0]
        raise DataError(f"cannot decode image {path}: {reason}") from None
    resized = tf.image.resize(image, image_size, method="bilinear")
    return np.clip(np.rint(resized.numpy()), 0, 255).astype(np.uint8)


def _split(labels: np.ndarray, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified split: every class is in both halves when it can be."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        rng.shuffle(index)
        n_val = int(round(len(index) * validation_split))
        n_val = min(max(n_val, 1), len(index) - 1) if len(index) > 1 else 0
        val.extend(index[:n_val])
        train.extend(index[n_val:])
    train_idx, val_idx = np.array(train), np.array(val)
    rng.shuffle(train_idx)
    rng.shuffle(val_idx)
    return train_idx, val_idx


def _build(folder: Path, files: dict[str, list[Path]], image_size: tuple[int, int], validation_split: float, seed: int, target: Path) -> None:
    started = time.monotonic()
    paths = [p for images in files.values() for p in images]
    labels = np.array([i for i, images in enumerate(files.values()) for _ in images], dtype=np.int32)
    images = np.stack([_decode(p, image_size) for p in paths])
    train_idx, val_idx = _split(labels, validation_split, seed)
    if len(val_idx) == 0:
        raise DataError(f"validation_split={validation_split} leaves no validation images out of {len(paths)}: add images")
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, array in (("x_train", images[train_idx]), ("y_train", labels[train_idx]), ("x_val", images[val_idx]), ("y_val", labels[val_idx])):
            np.save(tmp / f"{name}.npy", array)
        names = [p.relative_to(folder).as_posix() for p in paths]
        meta = {
            "classes": list(files), "image_size": list(image_size), "count": len(paths),
            "train_files": [names[i] for i in train_idx], "val_files": [names[i] for i in val_idx],
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "dataset cache built: %d images (%d train, %d validation), %d classes, %dx%d, %.1fs -> %s",
        len(paths), len(train_idx), len(val_idx), len(files), image_size[0], image_size[1], time.monotonic() - started, target,
    )


def _load(target: Path) -> Dataset:
    meta = json.loads((target / "meta.json").read_text())
    arrays = {name: np.load(target / f"{name}.npy", mmap_mode="r") for name in ("x_train", "y_train", "x_val", "y_val")}
    return Dataset(classes=tuple(meta["classes"]), train_files=tuple(meta["train_files"]), val_files=tuple(meta["val_files"]), **arrays)


def load_image_folder(folder: Path, image_size: tuple[int, int], validation_split: float, seed: int) -> Dataset:
    """Train and validation splits of an image folder, from its cache (built once, by one process).

    Args:
        folder: `<class>/**/*.png|jpg|jpeg|bmp|gif` (`list_image_folder`; hidden
            folders such as `.cache` are not classes).
        image_size: (height, width) in pixels every image is resized to, as Keras
            does (`tf.image.resize`, bilinear), then rounded to uint8.
        validation_split: the fraction of each class held out, in (0, 1); a
            class of two or more images has at least one image on each side.
        seed: seeds the split.

    Returns:
        The `Dataset` (see its shapes).

    Raises:
        DataError: a bad layout, an image that cannot be decoded, or no validation image.
    """
    files = list_image_folder(folder)
    key = _cache_key(files, tuple(image_size), validation_split, seed)
    cache_dir = folder / ".cache"
    target = cache_dir / key
    if (target / "meta.json").is_file():
        return _load(target)
    created_cache_dir = not cache_dir.exists()
    cache_dir.mkdir(exist_ok=True)
    lock_path = cache_dir / f"{key}.lock"
    try:
        with open(lock_path, "w") as lock:
            waited = time.monotonic()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process to build the dataset cache %s", target)
                fcntl.flock(lock, fcntl.LOCK_EX)
                log.info("dataset cache ready after %.1fs", time.monotonic() - waited)
            if not (target / "meta.json").is_file():
                _build(folder, files, tuple(image_size), validation_split, seed, target)
    except DataError:
        # Leave the dataset folder as we found it.
        lock_path.unlink(missing_ok=True)
        if created_cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
        raise
    lock_path.unlink(missing_ok=True)
    return _load(target)


def as_tf_datasets(data: Dataset, batch_size: int, seed: int):
    """`tf.data` pipelines over the cached arrays: shuffled train, ordered validation.

    Args:
        data: the arrays (`load_image_folder`).
        batch_size: images per batch; the last batch may be smaller.
        seed: seeds the training shuffle (reshuffled every epoch).

    Returns:
        `(train, val)`: each yields `(images, labels)` batches, images uint8
        `(batch, height, width, 3)` (the model rescales them), labels int32 `(batch,)`.
    """
    import tensorflow as tf

    train = (
        tf.data.Dataset.from_tensor_slices((np.asarray(data.x_train), np.asarray(data.y_train)))
        .shuffle(len(data.y_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = tf.data.Dataset.from_tensor_slices((np.asarray(data.x_val), np.asarray(data.y_val))).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return train, val
