"""Decode and resize images exactly as Keras's own image loading does.

`keras.utils.image_dataset_from_directory` reads each file with TensorFlow:
`tf.io.decode_image(channels=3, expand_animations=False)` (so grayscale, RGBA,
palette, 16-bit PNG, CMYK and greyscale JPEG, BMP and the first frame of a GIF
all become 8-bit RGB, the same way), then `tf.image.resize(method="bilinear")`
(no antialiasing) to float32. We run the same operations, so our cached
pixels are Keras's, rounded to the nearest integer (half to even) to be stored
as uint8: at most 0.5 away, which is 0.002 after the usual `Rescaling(1/255)`.
Pillow is not used: its bilinear filter widens with the scale factor when it
shrinks an image (an antialias), and its mode conversions differ from
TensorFlow's, so a model tuned on Pillow's pixels would see others at
inference time.

TensorFlow is imported by `decode_chunks` only: the dataset listing
(`tuner_job.data`) stays TensorFlow-free for the launcher.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tuner_job.errors import DataError

__all__ = ["decode_chunks", "CHUNK"]

#: Images decoded per step of the cache build: the build holds a few chunks,
#: whatever the dataset's size.
CHUNK = 64


def _decoder(image_size: tuple[int, int]):
    import tensorflow as tf

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, image_size, method="bilinear")
        return tf.saturate_cast(tf.round(image), tf.uint8)

    return load


def _reason(exc: BaseException) -> str:
    """TensorFlow's message on one line, without its node names (`{{function_node ...}}`, `[[...]]`, `[Op:...] name:`)."""
    text = getattr(exc, "message", None) or str(exc)
    text = re.sub(r"\[\[.*?\]\]|\{\{.*?\}\}|\[Op:[^\]]*\](\s*name:\s*\S*)?", "", text, flags=re.DOTALL)
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text or 'unreadable'}"


def _culprit(paths: list[Path], load, batch_error: BaseException) -> DataError:
    """The first of `paths` that fails on its own, as a one-line DataError."""
    import tensorflow as tf

    for path in paths:
        try:
            load(tf.constant(str(path)))
        except (tf.errors.OpError, ValueError) as exc:
            return DataError(f"cannot decode image {path}: {_reason(exc)}")
    first, last = paths[0], paths[-1]
    return DataError(f"cannot decode the images {first} .. {last}: {_reason(batch_error)}")


def decode_chunks(paths: list[Path], image_size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Decode and resize `paths`, in order, `CHUNK` images at a time (a few chunks in memory at once).

    Args:
        paths: image files (any format TensorFlow's `decode_image` reads).
        image_size: (height, width) in pixels.

    Yields:
        uint8 arrays of shape (k, height, width, 3), k <= CHUNK, that together
        hold every image of `paths` in order.

    Raises:
        DataError: a file cannot be read or decoded; the message names it.
    """
    import tensorflow as tf

    if not paths:
        return
    load = _decoder(tuple(image_size))
    dataset = (
        tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(CHUNK)
        .prefetch(1)
    )
    iterator = iter(dataset)
    done = 0
    while done < len(paths):
        try:
            chunk = next(iterator).numpy()
        except (tf.errors.OpError, ValueError) as exc:
            raise _culprit(paths[done : done + CHUNK], load, exc) from None
        done += len(chunk)
        yield chunk
