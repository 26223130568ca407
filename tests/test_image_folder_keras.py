"""Image folders are read as Keras reads them: the same files, the same pixels (issue 11, item 9).

The folder mixes what `keras.utils.image_dataset_from_directory` accepts: PNG at
1, 8 and 16 bits (grey, grey+alpha, palette, RGB, RGBA), JPEG in colour and
grey, BMP, an animated GIF, an upper-case suffix, a nested folder, and sizes
that need resizing both ways. Pillow's `convert("RGB")`, which the loader used
before, turns a 16-bit grey PNG white and did not list BMP or GIF at all.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
from PIL import Image  # noqa: E402

from tuner_job.data import list_image_folder, load_image_folder  # noqa: E402

SIZE = (20, 12)  # (height, width)


def _ramp(height: int, width: int, channels: int, peak: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, peak, height * width).reshape(height, width, 1)
    noise = rng.integers(0, max(peak // 8, 2), size=(height, width, channels))
    return np.clip(base + noise, 0, peak)


def _write_mixed_folder(root: Path) -> None:
    import tensorflow as tf

    a, b = root / "alpha", root / "beta"
    (a / "nested" / "deeper").mkdir(parents=True)
    b.mkdir()
    Image.fromarray(_ramp(30, 18, 3, 255, 1).astype(np.uint8), "RGB").save(a / "rgb8.png")
    Image.fromarray(_ramp(9, 7, 4, 255, 2).astype(np.uint8), "RGBA").save(a / "rgba8.png")
    Image.fromarray(_ramp(40, 40, 1, 255, 3)[..., 0].astype(np.uint8), "L").save(a / "grey8.png")
    Image.fromarray(_ramp(25, 15, 2, 255, 4).astype(np.uint8), "LA").save(a / "nested" / "grey_alpha.png")
    Image.fromarray(_ramp(16, 16, 1, 255, 5)[..., 0] > 128).save(a / "nested" / "deeper" / "one_bit.png")
    grey16 = _ramp(22, 13, 1, 65535, 6).astype(np.uint16)
    (a / "grey16.png").write_bytes(tf.io.encode_png(tf.constant(grey16)).numpy())
    rgb16 = _ramp(18, 11, 3, 65535, 7).astype(np.uint16)
    (b / "rgb16.png").write_bytes(tf.io.encode_png(tf.constant(rgb16)).numpy())
    Image.fromarray(_ramp(30, 20, 3, 255, 8).astype(np.uint8), "RGB").convert("P", palette=Image.ADAPTIVE, colors=16).save(b / "palette.png")
    Image.fromarray(_ramp(33, 21, 3, 255, 9).astype(np.uint8), "RGB").save(b / "colour.jpg", quality=90)
    Image.fromarray(_ramp(17, 29, 1, 255, 10)[..., 0].astype(np.uint8), "L").save(b / "grey.JPEG", quality=85)
    Image.fromarray(_ramp(14, 10, 3, 255, 11).astype(np.uint8), "RGB").save(b / "bitmap.bmp")
    frames = [Image.fromarray(_ramp(12, 12, 3, 255, s).astype(np.uint8), "RGB").convert("P") for s in (12, 13)]
    frames[0].save(b / "animated.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(_ramp(20, 12, 3, 255, 14).astype(np.uint8), "RGB").save(b / "UPPER.PNG")
    (b / "notes.txt").write_text("not an image, and not an image suffix: ignored by both")


def _keras_images(root: Path) -> dict[str, np.ndarray]:
    import keras

    ds = keras.utils.image_dataset_from_directory(root, image_size=SIZE, batch_size=None, shuffle=False, interpolation="bilinear")
    images = [np.asarray(x) for x, _ in ds.as_numpy_iterator()]
    return {Path(p).relative_to(root).as_posix(): image for p, image in zip(ds.file_paths, images, strict=True)}


def test_the_loader_lists_and_decodes_what_keras_does(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "mixed"
    _write_mixed_folder(root)
    expected = _keras_images(root)
    assert len(expected) == 13

    # What Keras would list and then fail on: skipped, and counted.
    (root / "alpha" / "._rgb8.png").write_bytes(b"\x00\x05\x16\x07Mac OS X resource fork")
    (root / "beta" / ".hidden.jpg").write_bytes(b"not a jpeg")
    (root / "beta" / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / "beta" / "UPPER.PNG", root / "beta" / ".ipynb_checkpoints" / "UPPER-checkpoint.png")

    with caplog.at_level(logging.INFO, logger="tuner_job.data"):
        listed = list_image_folder(root)
    assert list(listed) == ["alpha", "beta"]
    assert any("skipped 3 hidden" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert sorted(p.relative_to(root).as_posix() for ps in listed.values() for p in ps) == sorted(expected)

    data = load_image_folder(root, SIZE, 0.25, 5)
    assert data.input_shape == (*SIZE, 3)
    ours = dict(zip(data.train_files, np.asarray(data.x_train), strict=True)) | dict(zip(data.val_files, np.asarray(data.x_val), strict=True))
    assert sorted(ours) == sorted(expected)
    for name, keras_image in expected.items():
        # Keras keeps the resized floats; the cache keeps them rounded to uint8.
        assert np.abs(ours[name].astype(np.float32) - keras_image).max() <= 0.5 + 1e-3, name
    labels = dict(zip(data.train_files, np.asarray(data.y_train), strict=True)) | dict(zip(data.val_files, np.asarray(data.y_val), strict=True))
    assert {name: int(label) for name, label in labels.items()} == {name: int(name.startswith("beta")) for name in expected}
    assert ours["alpha/grey16.png"].mean() < 200  # the old loader's 16-bit grey came out white


def test_an_image_with_an_allowed_suffix_that_cannot_be_decoded_is_one_line(tmp_path: Path) -> None:
    from tuner_job.errors import DataError

    root = tmp_path / "bad"
    _write_mixed_folder(root)
    (root / "beta" / "broken.gif").write_bytes(b"GIF89a truncated")
    with pytest.raises(DataError, match=r"cannot decode image .*broken\.gif") as info:
        load_image_folder(root, SIZE, 0.25, 5)
    assert "\n" not in str(info.value)
    assert not (root / ".cache").exists()
