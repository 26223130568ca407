"""Input pipeline: images/s for one epoch, from our dataset cache vs decoding the folder.

`python -m bench.input_pipeline --out FILE [...]` (TensorFlow; run in its own
process by `python -m bench`). On a synthetic image folder at the seed's size
(600x200 by default):

- cache: what a worker does for a trial: `load_image_folder` (the cache is
  built once beforehand, and that one-off build is timed separately),
  `as_tf_datasets`, then iterate one epoch (train + validation);
- decode (baseline): `keras.utils.image_dataset_from_directory` over the
  folder (train + validation subsets, same split, size and batch), then iterate
  one epoch: every trial decodes every image again.

Each way is timed `repeats` times (after one untimed warm-up of each, so the
page cache is warm for both); the median counts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import write_json


def measure(folder: Path, image_size: tuple[int, int], batch_size: int, validation_split: float, seed: int, repeats: int) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from tuner_job.data import as_tf_datasets, list_image_folder, load_image_folder

    images = sum(len(v) for v in list_image_folder(folder).values())

    started = time.perf_counter()
    load_image_folder(folder, image_size, validation_split, seed)
    cache_build = time.perf_counter() - started

    def count(dataset: Any) -> int:
        n = 0
        for x, _ in dataset:
            n += int(x.shape[0])
        return n

    def from_cache() -> int:
        data = load_image_folder(folder, image_size, validation_split, seed)
        train, val = as_tf_datasets(data, batch_size, seed)
        return count(train) + count(val)

    def decode() -> int:
        train, val = keras.utils.image_dataset_from_directory(
            str(folder), image_size=tuple(image_size), batch_size=batch_size, validation_split=validation_split,
            subset="both", seed=seed, label_mode="int", verbose=False,
        )
        return count(train.prefetch(tf.data.AUTOTUNE)) + count(val.prefetch(tf.data.AUTOTUNE))

    runs: dict[str, list[float]] = {"cache": [], "decode": []}
    seen: dict[str, int] = {}
    for _name, fn in (("cache", from_cache), ("decode", decode)):
        fn()  # warm-up: imports, page cache
    for _ in range(repeats):
        for name, fn in (("cache", from_cache), ("decode", decode)):
            t = time.perf_counter()
            seen[name] = fn()
            runs[name].append(time.perf_counter() - t)
    out: dict[str, Any] = {"images": images, "cache_build_seconds": cache_build}
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        out[name] = {"images_read": seen[name], "seconds": seconds, "median_seconds": median, "images_per_s": seen[name] / median}
    out["speedup"] = out["cache"]["images_per_s"] / out["decode"]["images_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.input_pipeline")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True, help="where the synthetic image folder is made")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--size", type=int, nargs=2, default=(600, 200), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from cluster.synth import synthesize

    folder = args.workdir / "toonvision"
    started = time.perf_counter()
    synthesize(folder, per_class=args.per_class, size=tuple(args.size), seed=42)
    synth_seconds = time.perf_counter() - started
    result = measure(folder, tuple(args.size), args.batch_size, 0.2, 42, args.repeats)
    result["config"] = {"per_class": args.per_class, "image_size": list(args.size), "batch_size": args.batch_size, "validation_split": 0.2,
                        "repeats": args.repeats}
    result["synth_seconds"] = synth_seconds
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
