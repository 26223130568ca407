"""Image folders read as Keras reads them (issue 11, item 9).

A folder that mixes every case Keras's image loading handles (each format it
lists, each colour mode and bit depth, subfolders, links, files it does not
list) is read by `keras.utils.image_dataset_from_directory` and by our cache:
the same files, the same pixels. Keras gives float32 pixels; we store uint8,
so ours must be Keras's rounded to the nearest integer (half to even), hence
at most 0.5 away: that is the whole tolerance.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuner_job.data import IMAGE_SUFFIXES, list_image_folder, load_image_folder
from tuner_job.errors import DataError

SIZE = (40, 30)  # smaller than some sources, larger than others: both directions of the resize


def _rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mixed_folder(root: Path) -> dict[str, list[str]]:
    """Write the mixed folder; return the files Keras would list that we skip, and the ones neither lists."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b, outside = root / "alpha", root / "beta", root.parent / "outside"
    for folder in (a / "nested" / "deeper", b, outside):
        folder.mkdir(parents=True)
    Image.fromarray(_rgb(rng, 50, 30)).save(a / "rgb.png")
    Image.fromarray(_rgb(rng, 50, 30)).save(a / "UPPER.PNG")
    Image.fromarray(_rgb(rng, 50, 30)[..., 0]).save(a / "gray.png")
    Image.fromarray(_rgb(rng, 50, 30)[..., 0]).convert("1").save(a / "bilevel.png")
    Image.fromarray(_rgb(rng, 50, 30)[..., 0]).convert("LA").save(a / "gray_alpha.png")
    Image.fromarray(np.dstack([_rgb(rng, 50, 30), rng.integers(0, 256, (50, 30), dtype=np.uint8)])).save(a / "rgba.png")
    Image.fromarray(_rgb(rng, 50, 30)).convert("P", palette=Image.ADAPTIVE, colors=16).save(a / "palette.png")
    Image.fromarray(_rgb(rng, 50, 30)).convert("P", palette=Image.ADAPTIVE, colors=16).save(a / "palette_transparent.png", transparency=0)
    Image.fromarray(rng.integers(0, 65536, (50, 30)).astype(np.uint16)).save(a / "gray16.png")
    rgb16 = tf.constant(rng.integers(0, 65536, (50, 30, 3)).astype(np.uint16))
    (a / "rgb16.png").write_bytes(tf.io.encode_png(rgb16).numpy())
    Image.fromarray(_rgb(rng, 600, 200)).save(a / "nested" / "large.png")
    Image.fromarray(_rgb(rng, 12, 9)).save(a / "nested" / "deeper" / "tiny.png")
    Image.fromarray(_rgb(rng, 60, 40)).save(b / "rgb.jpg", quality=90)
    Image.fromarray(_rgb(rng, 60, 40)).save(b / "progressive.JPG", quality=90, progressive=True)
    Image.fromarray(_rgb(rng, 60, 40)[..., 0]).save(b / "gray.jpeg", quality=90)
    Image.fromarray(_rgb(rng, 60, 40)).convert("CMYK").save(b / "cmyk.jpg", quality=90)
    Image.fromarray(_rgb(rng, 60, 40)).save(b / "rgb24.bmp")
    Image.fromarray(_rgb(rng, 60, 40)[..., 0]).save(b / "gray8.bmp")
    Image.fromarray(np.dstack([_rgb(rng, 60, 40), rng.integers(0, 256, (60, 40), dtype=np.uint8)])).save(b / "rgba32.bmp")
    frames = [Image.fromarray(_rgb(rng, 60, 40)).convert("P", palette=Image.ADAPTIVE) for _ in range(3)]
    frames[0].save(b / "animated.gif", save_all=True, append_images=frames[1:])  # Keras takes the first frame
    Image.fromarray(_rgb(rng, 60, 40)).convert("P", palette=Image.ADAPTIVE).save(b / "still.gif")
    # Links as Keras's os.walk sees them: a linked file is listed, a linked folder is not entered.
    Image.fromarray(_rgb(rng, 30, 30)).save(outside / "linked.png")
    Image.fromarray(_rgb(rng, 30, 30)).save(outside / "in_linked_folder.png")
    os.symlink(outside / "linked.png", b / "link.png")
    os.symlink(outside, b / "linked_folder")
    # Files Keras does not list (other formats, other files) ...
    Image.fromarray(_rgb(rng, 20, 20)).save(b / "other.webp")
    Image.fromarray(_rgb(rng, 20, 20)).save(b / "other.tiff")
    (b / "notes.txt").write_text("not an image")
    (b / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    # ... and hidden files Keras lists but we skip: a macOS resource file (Keras fails on it), a hidden image, a hidden folder.
    (b / "._rgb.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    Image.fromarray(_rgb(rng, 20, 20)).save(a / ".hidden.png")
    (a / ".ipynb_checkpoints").mkdir()
    Image.fromarray(_rgb(rng, 20, 20)).save(a / ".ipynb_checkpoints" / "copy.png")
    return {"skipped": ["beta/._rgb.jpg", "alpha/.hidden.png", "alpha/.ipynb_checkpoints/copy.png"]}


def _keras_images(folder: Path) -> dict[str, np.ndarray]:
    import keras

    dataset = keras.utils.image_dataset_from_directory(str(folder), image_size=SIZE, batch_size=None, shuffle=False, label_mode="int", verbose=False)
    return {os.path.relpath(path, folder): image.numpy() for path, (image, _) in zip(dataset.file_paths, dataset, strict=True)}


def _keras_listing(folder: Path) -> list[str]:
    import keras

    dataset = keras.utils.image_dataset_from_directory(str(folder), image_size=SIZE, batch_size=None, shuffle=False, verbose=False)
    return [os.path.relpath(path, folder) for path in dataset.file_paths]


def test_suffixes_are_keras_own() -> None:
    from keras.src.utils.image_dataset_utils import ALLOWLIST_FORMATS

    assert set(IMAGE_SUFFIXES) == set(ALLOWLIST_FORMATS)


def test_listing_is_keras_listing_less_hidden_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "mixed"
    expected = _mixed_folder(folder)
    with caplog.at_level(logging.INFO, logger="tuner_job.data"):
        files = list_image_folder(folder)
    ours = [os.path.relpath(p, folder) for images in files.values() for p in images]
    keras_listing = _keras_listing(folder)
    assert list(files) == ["alpha", "beta"]
    assert sorted(set(keras_listing) - set(ours)) == sorted(expected["skipped"])
    assert ours == [p for p in keras_listing if p not in expected["skipped"]]  # same files, same order
    assert "beta/link.png" in ours and not any("in_linked_folder" in p for p in ours)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "skipped 3 hidden image file(s)" in skipped[0] and "beta/._rgb.jpg" in skipped[0]


def test_cached_pixels_are_keras_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    expected = _mixed_folder(folder)
    for hidden in expected["skipped"]:  # Keras fails on the resource file: compare the rest
        (folder / hidden).unlink()
    keras_images = _keras_images(folder)
    files = list_image_folder(folder)
    paths = [os.path.relpath(p, folder) for images in files.values() for p in images]
    data = load_image_folder(folder, SIZE, 0.3, 1)
    # Put the cache's rows back in file order: the split is seeded, and its rows are the labels' permutation.
    from tuner_job.data import _split

    labels = np.array([i for i, images in enumerate(files.values()) for _ in images])
    train_idx, val_idx = _split(labels, 0.3, 1)
    ours = {paths[i]: data.x_train[row] for row, i in enumerate(train_idx)} | {paths[i]: data.x_val[row] for row, i in enumerate(val_idx)}
    assert set(ours) == set(keras_images)
    assert len(ours) == 22
    for path, theirs in keras_images.items():
        mine = np.asarray(ours[path])
        assert mine.dtype == np.uint8 and mine.shape == (*SIZE, 3), path
        assert np.abs(mine.astype(np.float32) - theirs).max() <= 0.5, path
        assert np.array_equal(mine, np.rint(theirs).astype(np.uint8)), path


def test_an_unreadable_image_is_named_and_hidden_files_are_not(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    for name in ("a", "b"):
        (folder / name / "sub").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name / "ok.png")
    (folder / "a" / "._ok.png").write_bytes(b"\x00\x05\x16\x07 resource fork")  # listed by Keras, which then fails on it
    (folder / "b" / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError) as info:
        load_image_folder(folder, (8, 8), 0.5, 0)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot decode image {folder / 'b' / 'sub' / 'broken.jpg'}: "), message
    assert not (folder / ".cache").exists()
    (folder / "b" / "sub" / "broken.jpg").unlink()
    (folder / "b" / "sub" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"^cannot read image .*gone\.png: No such file or directory$"):
        load_image_folder(folder, (8, 8), 0.5, 0)
