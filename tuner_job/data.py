"""The image dataset: `<class>/**/*.png|jpg|...` on the shared volume, decoded once.

The folder is listed as `keras.utils.image_dataset_from_directory` lists it
(`list_image_folder`): the class folders in sorted order, every file under each
(subfolders too, symlinked folders not followed) whose extension Keras accepts
(`IMAGE_SUFFIXES`, any case). One difference, on purpose: hidden files and
folders (names starting with `.`, such as the `._*` files macOS leaves on
shared drives, which Keras would list and then fail to decode) are skipped
and counted in the log.

The first process to need a split (the chief) decodes every image as Keras would
(`tuner_job.image_decode`), writing the arrays incrementally into memory maps
under `<dataset>/.cache/<key>/`: the build holds a few chunks of images,
whatever the dataset's size. Every other process (and every later trial)
memory-maps the result. One process builds while the others wait on a file
lock; the cache appears by an atomic rename of a finished, fsynced folder, so a
half-built cache is never read, and a build killed half-way leaves only a temp
folder that the next build removes. The key covers the file list (paths,
sizes, mtimes), the image size, the split and the seed: change any and a new
cache is built. The chief records which cache it prepared for its settings, and
workers open that one without listing the folder (`load_prepared`).

Listing and loading need numpy only; TensorFlow comes in to decode
(`image_decode`) and to feed the arrays to Keras (`input_pipeline`).
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
from tuner_job.layout import atomic_write_json, read_json

__all__ = ["Dataset", "list_image_folder", "load_image_folder", "load_prepared", "is_prepared", "IMAGE_SUFFIXES"]

log = logging.getLogger("tuner_job.data")

#: The extensions Keras's image loading accepts (its `ALLOWLIST_FORMATS`), matched in any case.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_CACHE_VERSION = 2  # 2: decoded by TensorFlow as Keras does; subfolders listed
_PROGRESS_SECONDS = 10.0
_REPORTED: set[tuple[Path, int]] = set()


@dataclass(frozen=True)
class Dataset:
    """Train and validation arrays and the class names.

    `x_train`, `x_val`: uint8 RGB images, shape `(n, height, width, 3)`,
    values 0..255; `y_train`, `y_val`: int32 class indexes, shape `(n,)`, into
    `classes` (the class folders' names, sorted). All four are memory maps of
    the cache, mapped copy-on-write: reading them shares the kernel's page
    cache, and a write (none of ours does) would stay private to the process.
    """

    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split(os.sep))


def _list_class(class_dir: Path, skipped: list[str]) -> list[Path]:
    """Keras's `index_subdirectory`: os.walk (links not followed), roots sorted, files sorted."""
    images = []
    for root, _, names in sorted(os.walk(class_dir), key=lambda entry: entry[0]):
        for name in sorted(names):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(root) / name
            relative = os.path.relpath(path, class_dir)
            if _hidden(relative):
                skipped.append(f"{class_dir.name}/{relative}")
            else:
                images.append(path)
    return images


def list_image_folder(folder: Path) -> dict[str, list[Path]]:
    """The image files of each class folder, as Keras lists them; hidden files skipped.

    Args:
        folder: the dataset folder, holding one folder per class.

    Returns:
        class name -> image paths, classes sorted by name (their label is
        their position), paths in Keras's order.

    Raises:
        DataError: no such folder, fewer than 2 class folders, or a class
            folder without images.
    """
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    classes = sorted(name for name in os.listdir(folder) if (folder / name).is_dir() and not name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"data folder {folder} must hold at least 2 class folders (<class>/*.png|jpg), found {len(classes)}")
    files: dict[str, list[Path]] = {}
    skipped: list[str] = []
    for name in classes:
        images = _list_class(folder / name, skipped)
        if not images:
            raise DataError(f"class folder {folder / name} holds no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)})")
        files[name] = images
    if skipped and (folder, len(skipped)) not in _REPORTED:
        _REPORTED.add((folder, len(skipped)))  # once per process: the chief lists the folder twice
        examples = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        log.info("skipped %d hidden image file(s) in %s (names starting with '.', e.g. macOS ._* files): %s", len(skipped), folder, examples)
    return files


def _settings(image_size: tuple[int, int], validation_split: float, seed: int) -> str:
    return f"v{_CACHE_VERSION} {tuple(image_size)} {validation_split} {seed}"


def _prepared_file(folder: Path, image_size: tuple[int, int], validation_split: float, seed: int) -> Path:
    """Names the cache last prepared for these settings (written by `load_image_folder`, read by `load_prepared`)."""
    return folder / ".cache" / f"prepared-{hashlib.sha256(_settings(image_size, validation_split, seed).encode()).hexdigest()[:16]}.json"


def _cache_key(folder: Path, files: dict[str, list[Path]], image_size: tuple[int, int], validation_split: float, seed: int) -> str:
    digest = hashlib.sha256(_settings(image_size, validation_split, seed).encode())
    for images in files.values():
        for path in images:
            try:
                stat = path.stat()
            except OSError as exc:  # e.g. a link to nowhere: Keras would list it, then fail to read it
                raise DataError(f"cannot read image {path}: {exc.strerror or type(exc).__name__}") from None
            digest.update(f"{os.path.relpath(path, folder)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


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
    train_idx, val_idx = np.array(train, dtype=np.int64), np.array(val, dtype=np.int64)
    rng.shuffle(train_idx)
    rng.shuffle(val_idx)
    return train_idx, val_idx


class _Progress:
    """A log line every `_PROGRESS_SECONDS` while the images are decoded."""

    def __init__(self, total: int):
        self.total, self.done, self.started, self.last = total, 0, time.monotonic(), time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= _PROGRESS_SECONDS and self.done < self.total:
            self.last = now
            rate = self.done / (now - self.started)
            log.info(
                "decoding images: %d/%d (%.0f%%), %.0f images/s, about %.0fs left",
                self.done, self.total, 100 * self.done / self.total, rate, (self.total - self.done) / rate,
            )


def _write_images(path: Path, paths: list[Path], image_size: tuple[int, int], progress: _Progress) -> None:
    """`path`: a .npy file of the decoded images, (n, height, width, 3) uint8, written chunk by chunk.

    The file is laid out (header, full size) by numpy, then filled by plain
    writes: the build holds a few chunks, and the written pages are the
    kernel's to flush and drop, not mapped into this process.
    """
    from tuner_job.image_decode import decode_chunks

    layout = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(paths), *image_size, 3))
    offset = layout.offset
    del layout
    with open(path, "r+b") as handle:
        handle.seek(offset)
        for chunk in decode_chunks(paths, image_size):
            handle.write(np.ascontiguousarray(chunk).data)
            progress.add(len(chunk))
        if handle.tell() != offset + len(paths) * int(np.prod(image_size)) * 3:
            raise RuntimeError(f"{path}: wrote {handle.tell() - offset} bytes of images, expected {len(paths)} images")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(files: dict[str, list[Path]], image_size: tuple[int, int], validation_split: float, seed: int, target: Path) -> None:
    started = time.monotonic()
    paths = [p for images in files.values() for p in images]
    labels = np.array([i for i, images in enumerate(files.values()) for _ in images], dtype=np.int32)
    train_idx, val_idx = _split(labels, validation_split, seed)
    if len(val_idx) == 0:
        raise DataError(f"validation_split={validation_split} leaves no validation images out of {len(paths)}: add images")
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        progress = _Progress(len(paths))
        for part, index in (("train", train_idx), ("val", val_idx)):
            _write_images(tmp / f"x_{part}.npy", [paths[i] for i in index], image_size, progress)
            np.save(tmp / f"y_{part}.npy", labels[index])
        meta = {"classes": list(files), "image_size": list(image_size), "count": len(paths), "train": len(train_idx), "validation": len(val_idx)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        for file in tmp.iterdir():
            _fsync(file)
        os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.monotonic() - started
    log.info(
        "dataset cache built: %d images (%d train, %d validation), %d classes, %dx%d, %.1fs (%.0f images/s) -> %s",
        len(paths), len(train_idx), len(val_idx), len(files), image_size[0], image_size[1], seconds, len(paths) / max(seconds, 1e-9), target,
    )


def _load(target: Path) -> Dataset:
    meta = json.loads((target / "meta.json").read_text())
    arrays = {name: np.load(target / f"{name}.npy", mmap_mode="c") for name in ("x_train", "y_train", "x_val", "y_val")}
    return Dataset(classes=tuple(meta["classes"]), **arrays)


def _remove_stale_builds(cache_dir: Path, key: str) -> None:
    """Temp folders of builds of this key that died half-way (we hold the key's lock: none is running)."""
    for stale in cache_dir.glob(f".tmp-{key}-*"):
        log.info("removing %s, left by a cache build that did not finish", stale)
        shutil.rmtree(stale, ignore_errors=True)


def load_image_folder(folder: Path, image_size: tuple[int, int], validation_split: float, seed: int) -> Dataset:
    """Train and validation splits of an image folder, from its cache (built once, by one process).

    Args:
        folder: the dataset folder (`<class>/...` images, listed by `list_image_folder`).
        image_size: (height, width) in pixels every image is resized to (as Keras resizes).
        validation_split: the fraction of each class held out, in (0, 1); a
            class of two or more images has at least one image on each side.
        seed: seeds the split.

    Returns:
        The memory-mapped `Dataset` (see its shapes).

    Raises:
        DataError: a bad layout, an unreadable image (named), or a split that
            leaves no validation image. The dataset folder is left as it was.
    """
    files = list_image_folder(folder)
    key = _cache_key(folder, files, tuple(image_size), validation_split, seed)
    cache_dir = folder / ".cache"
    target = cache_dir / key
    if (target / "meta.json").is_file():
        _record_prepared(folder, image_size, validation_split, seed, key)
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
                _remove_stale_builds(cache_dir, key)
                log.info("building the dataset cache: %d images of %s at %dx%d", sum(map(len, files.values())), folder, *image_size)
                _build(files, tuple(image_size), validation_split, seed, target)
    except DataError:
        # Leave the dataset folder as we found it.
        lock_path.unlink(missing_ok=True)
        if created_cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
        raise
    lock_path.unlink(missing_ok=True)
    _record_prepared(folder, image_size, validation_split, seed, key)
    return _load(target)


def _record_prepared(folder: Path, image_size: tuple[int, int], validation_split: float, seed: int, key: str) -> None:
    path = _prepared_file(folder, image_size, validation_split, seed)
    if (read_json(path) or {}).get("key") != key:
        atomic_write_json(path, {"key": key, "written": time.time()})


def load_prepared(folder: Path, image_size: tuple[int, int], validation_split: float, seed: int) -> Dataset:
    """The cache last prepared for these settings (by the chief), opened without listing the folder.

    A worker's start-up then costs the same for 1,000 images as for 100,000
    (listing and stat-ing every file, which `load_image_folder` must do to
    see a change, takes seconds on a network volume), and every worker reads
    the arrays its chief prepared, even if the folder changes during the
    search. When no cache is recorded for these settings (no chief has run
    with them), it is `load_image_folder`. Arguments, result and errors as
    `load_image_folder`'s.
    """
    target = _recorded_cache(folder, image_size, validation_split, seed)
    if target is not None:
        return _load(target)
    return load_image_folder(folder, image_size, validation_split, seed)


def is_prepared(folder: Path, image_size: tuple[int, int], validation_split: float, seed: int) -> bool:
    """Whether a chief has prepared, and so checked, a cache of `folder` for these settings.

    A worker lists the folder to stop at once on a bad layout only when this
    is False (the first start of a search, while its chief decodes): listing
    a large folder on a network volume takes seconds per worker, and the
    chief, which lists it at every start, is the one to say it changed.
    """
    return _recorded_cache(folder, image_size, validation_split, seed) is not None


def _recorded_cache(folder: Path, image_size: tuple[int, int], validation_split: float, seed: int) -> Path | None:
    recorded = read_json(_prepared_file(folder, image_size, validation_split, seed)) or {}
    target = folder / ".cache" / str(recorded.get("key", ""))
    return target if recorded.get("key") and (target / "meta.json").is_file() else None
