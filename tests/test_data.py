"""The dataset cache: decoded once, shared by every process, never read half-built."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tuner_job.data as data_module
from tuner_job.data import list_image_folder, load_image_folder, load_prepared
from tuner_job.errors import DataError


def _load(folder: str, queue: multiprocessing.Queue[object]) -> None:
    data = load_image_folder(Path(folder), (24, 16), 0.25, 3)
    queue.put((data.x_train.shape, float(np.asarray(data.x_train).sum())))


def test_split_is_seeded_stratified_and_cached(pristine_dataset: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(pristine_dataset, folder)
    data = load_image_folder(folder, (24, 16), 0.25, 3)
    assert data.classes == ("bossbot", "cashbot", "lawbot", "sellbot")
    assert data.input_shape == (24, 16, 3)
    assert len(data.y_train) + len(data.y_val) == 32
    assert sorted(set(np.asarray(data.y_val).tolist())) == [0, 1, 2, 3]  # every class validates
    caches = [p for p in (folder / ".cache").iterdir() if p.is_dir()]
    assert len(caches) == 1 and (caches[0] / "meta.json").is_file()
    again = load_image_folder(folder, (24, 16), 0.25, 3)
    assert np.array_equal(np.asarray(again.x_val), np.asarray(data.x_val))
    load_image_folder(folder, (24, 16), 0.25, 4)  # another seed: another cache
    assert len([p for p in (folder / ".cache").iterdir() if p.is_dir()]) == 2


def test_concurrent_processes_build_one_cache(pristine_dataset: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(pristine_dataset, folder)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load, args=(str(folder), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert len(set(results)) == 1, results
    entries = sorted(p.name for p in (folder / ".cache").iterdir() if not p.name.startswith("prepared-"))
    assert len(entries) == 1 and not entries[0].startswith(".tmp"), entries



def test_a_build_killed_half_way_is_never_read_and_the_next_build_cleans_up(tmp_path: Path) -> None:
    """A real process building the cache is SIGKILLed while it decodes (issue 17: the build writes incrementally, stays atomic)."""
    from PIL import Image

    folder = tmp_path / "ds"
    rng = np.random.default_rng(2)
    for i in range(1200):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(folder / f"c{i % 2}" / f"{i:04d}.png", compress_level=1)
    code = f"from pathlib import Path; from tuner_job.data import load_image_folder; load_image_folder(Path({str(folder)!r}), (96, 128), 0.25, 3)"
    builder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((folder / ".cache").glob(".tmp-*/x_train.npy")) and builder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert builder.poll() is None, "the build ended before it could be killed half-way"
        os.kill(builder.pid, signal.SIGKILL)
    finally:
        builder.kill()
        builder.wait(30)
    (left,) = (folder / ".cache").glob(".tmp-*")
    assert not [p for p in (folder / ".cache").iterdir() if (p / "meta.json").is_file()]  # nothing half-built is visible
    assert list_image_folder(folder)  # the folder itself is untouched
    data = load_image_folder(folder, (96, 128), 0.25, 3)  # builds again, removing what the killed build left
    assert not left.exists() and not list((folder / ".cache").glob(".tmp-*"))
    assert len(data.y_train) + len(data.y_val) == 1200 and np.asarray(data.x_val).any()
    fresh = tmp_path / "fresh"
    shutil.copytree(folder, fresh, ignore=shutil.ignore_patterns(".cache"))
    again = load_image_folder(fresh, (96, 128), 0.25, 3)
    assert np.array_equal(np.asarray(again.x_train), np.asarray(data.x_train)) and np.array_equal(np.asarray(again.y_val), np.asarray(data.y_val))

@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: shutil.rmtree(f), "data folder not found"),
        (lambda f: [p.unlink() for p in (f / "lawbot").iterdir()], "class folder .*lawbot holds no images"),
        (lambda f: (f / "cashbot" / "cashbot_0003.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really"), "cannot decode image .*cashbot_0003.png"),
        (lambda f: [shutil.rmtree(f / c) for c in ("lawbot", "cashbot", "sellbot")], "at least 2 class folders"),
    ],
)
def test_bad_datasets_fail_clearly_and_leave_the_folder_as_it_was(pristine_dataset: Path, tmp_path: Path, damage, expected: str) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(pristine_dataset, folder)
    damage(folder)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError, match=expected) as info:
        load_image_folder(folder, (24, 16), 0.2, 1)
    assert "\n" not in str(info.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_listing_ignores_hidden_and_other_files(pristine_dataset: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(pristine_dataset, folder)
    (folder / "README.txt").write_text("hi")
    (folder / "lawbot" / "notes.txt").write_text("hi")
    (folder / ".cache").mkdir()
    files = list_image_folder(folder)
    assert list(files) == ["bossbot", "cashbot", "lawbot", "sellbot"]
    assert all(p.suffix == ".png" for images in files.values() for p in images)


def test_workers_open_the_prepared_cache_without_listing_the_folder(pristine_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(pristine_dataset, folder)
    listed = []
    real_list = data_module.list_image_folder
    monkeypatch.setattr(data_module, "list_image_folder", lambda f: listed.append(f) or real_list(f))
    first = load_prepared(folder, (24, 16), 0.25, 3)  # nothing prepared yet: lists and builds, as the chief does
    assert listed == [folder]
    chief = load_image_folder(folder, (24, 16), 0.25, 3)
    assert len(listed) == 2
    worker = load_prepared(folder, (24, 16), 0.25, 3)
    assert len(listed) == 2  # not listed again
    assert np.array_equal(np.asarray(worker.x_train), np.asarray(chief.x_train)) and np.array_equal(np.asarray(first.y_val), np.asarray(worker.y_val))
    # The folder changes during the search: workers keep reading what the chief prepared ...
    (folder / "lawbot" / "lawbot_0000.png").unlink()
    assert len(load_prepared(folder, (24, 16), 0.25, 3).y_train) + len(worker.y_val) == 32
    # ... until a chief prepares the new one; other settings have their own record.
    changed = load_image_folder(folder, (24, 16), 0.25, 3)
    assert len(changed.y_train) + len(changed.y_val) == 31
    assert len(load_prepared(folder, (24, 16), 0.25, 3).y_train) == len(changed.y_train)
    other = load_prepared(folder, (24, 16), 0.5, 3)
    assert len(other.y_val) == 16 and len(listed) == 4
    # A record whose cache was deleted: back to listing.
    shutil.rmtree(folder / ".cache" / data_module.read_json(data_module._prepared_file(folder, (24, 16), 0.5, 3))["key"])
    assert len(load_prepared(folder, (24, 16), 0.5, 3).y_val) == 16 and len(listed) == 5
