"""Input pipeline: a worker reading the dataset cache, against decoding every trial and against numpy.

`python -m bench.input_pipeline --out FILE --workdir DIR [...]` (run in its own
process by `python -m bench --only input`). For each size (default 200, 3,000
and 12,000 images at the article's 600x200):

1. an image folder: `--base-per-class` synthetic images per class
   (`cluster.synth`), hard-linked as often as the size needs (distinct files
   to list, stat and decode; the disk holds only the base images);
2. the cache build, in its own process (`load_image_folder`): seconds and peak
   RssAnon (it must not grow with the dataset);
3. a worker, in its own process (`bench.input_worker`, read from outside via
   `/proc/<pid>/status`): peak RssAnon, start-up, images/s through one epoch,
   and, epoch for epoch in the same process, numpy reading the same batches
   out of the memory map (the floor);
4. at sizes up to `--copy-max`: a worker with the pipeline before issue 17
   (the arrays copied into tf.data): its memory, and its images/s against
   ours epoch for epoch in that process;
5. at sizes up to `--copy-max`: ours, the copy and a `keras.utils.PyDataset`
   over the same memory map, each read by `fit` of a model that does nothing
   (`bench.input_fit`), in turns in one process: images/s over whole fits of
   4 epochs (`--fit-rounds` fits each; a quarter of that, at least 5, above
   1,000 images);
6. at `--decode-at`: `keras.utils.image_dataset_from_directory` made and read
   once per trial (the baseline that decodes every image every trial);
7. a trial's time to its first batch, every size in turns in one process (so
   the machine's load is the same for each).

The folders and caches are deleted at the end (12,000 images at 600x200 is a
4.3 GB cache; the three sizes together need 5.4 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, child_env, python, write_json
from bench.memory import run_sampled


def make_folder(base: Path, folder: Path, images: int) -> None:
    """`images` files in `folder/<class>/`, round-robin over the classes of `base`, hard links to its images."""
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    sources = {c: sorted((base / c).iterdir()) for c in classes}
    for i in range(images):
        name = classes[i % len(classes)]
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        source = sources[name][(i // len(classes)) % len(sources[name])]
        os.link(source, target / f"{name}_{i:06d}{source.suffix}")


def _sampled(args: list[str], timeout: float) -> Any:
    run = run_sampled([python(), *args], env=child_env(), cwd=REPO, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed (rc={run.returncode}):\n{run.output[-3000:]}")
    return run


def build_cache(folder: Path, image_size: tuple[int, int], seed: int, images: int) -> dict[str, Any]:
    code = (
        "import sys; from pathlib import Path; from tuner_job.data import load_image_folder; "
        f"load_image_folder(Path(sys.argv[1]), ({image_size[0]}, {image_size[1]}), 0.2, {seed})"
    )
    run = _sampled(["-c", code, str(folder)], timeout=3600)
    return {"seconds": run.seconds, "images_per_s": images / run.seconds, "peak_rss_anon_bytes": run.peak_rss_anon_bytes,
            "peak_rss_file_bytes": run.peak_rss_file_bytes}


def worker(folders: list[Path], image_size: tuple[int, int], batch_size: int, seed: int, *options: str) -> dict[str, Any]:
    out = folders[0].parent / f"{folders[0].name}-worker.json"
    args = ["-m", "bench.input_worker", "--data", *map(str, folders), "--image-size", *map(str, image_size), "--batch-size", str(batch_size),
            "--seed", str(seed), "--out", str(out), *options]
    run = _sampled(args, timeout=1800)
    result = json.loads(out.read_text())
    result.update(peak_rss_anon_bytes=run.peak_rss_anon_bytes, peak_rss_file_bytes=run.peak_rss_file_bytes, process_seconds=run.seconds)
    return result


def measure(workdir: Path, sizes: list[int], image_size: tuple[int, int], batch_size: int, repeats: int, base_per_class: int,
            copy_max: int, decode_at: int | None, seed: int = 42, log: Any = print, fit_rounds: int = 20) -> dict[str, Any]:
    from cluster.synth import synthesize

    base = workdir / "base"
    started = time.perf_counter()
    synthesize(base, per_class=base_per_class, size=image_size, seed=seed)
    out: dict[str, Any] = {"synth_seconds": time.perf_counter() - started, "sizes": []}
    folders = {images: workdir / f"images-{images}" for images in sizes}
    try:
        for images, folder in folders.items():
            make_folder(base, folder, images)
            log(f"input: {images} images at {image_size[0]}x{image_size[1]}: building the cache")
            out["sizes"].append({"images": images, "build": build_cache(folder, image_size, seed, images)})
        for row in out["sizes"]:
            images, folder = row["images"], folders[row["images"]]
            log(f"input: {images} images: a worker reading the cache, and numpy reading the same batches (the floor)")
            ours = worker([folder], image_size, batch_size, seed, "--pipeline", "ours", "--against", "numpy", "--repeats", str(repeats))
            keep = ("cache_bytes", "peak_rss_anon_bytes", "peak_rss_file_bytes", "rss_anon_after_import_bytes", "rss_anon_base_bytes",
                    "startup_seconds", "images_per_s", "numpy_images_per_s", "fit_seconds")
            row.update({k: ours[k] for k in keep})
            if images <= copy_max:
                log(f"input: {images} images: the pipeline before issue 17 (arrays copied into tf.data), and ours alongside")
                copy = worker([folder], image_size, batch_size, seed, "--pipeline", "copy", "--against", "ours", "--repeats", str(repeats))
                fields = ("peak_rss_anon_bytes", "rss_anon_base_bytes", "first_batch_seconds", "images_per_s", "ours_images_per_s")
                row["copy"] = {k: copy[k] for k in fields}
                rounds = fit_rounds if images <= 1000 else max(5, fit_rounds // 4)
                log(f"input: {images} images: ours, the copy and a PyDataset read by fit, {rounds} fits of 4 epochs each, in turns")
                fitted = worker([folder], image_size, batch_size, seed, "--through-fit", "--repeats", str(rounds))
                row["fit"] = {k: v for k, v in fitted.items() if not k.endswith("_epoch_seconds") or not isinstance(v, list)}
                row["pydataset_images_per_s"] = fitted["pydataset_images_per_s"]
            if images == decode_at:
                log(f"input: {images} images: image_dataset_from_directory, decoding every trial")
                decode = worker([folder], image_size, batch_size, seed, "--decode-baseline", "--repeats", str(repeats))
                row["decode_images_per_s"] = decode["images_per_s"]
        log(f"input: a trial's first batch at {', '.join(map(str, sizes))} images, in turns")
        first = worker(list(folders.values()), image_size, batch_size, seed, "--first-batches", "--repeats", str(max(60, 3 * repeats)))
        for row, measured in zip(out["sizes"], first["sizes"], strict=True):
            row.update(first_batch_seconds=measured["first_batch_seconds"], first_batch_seconds_min=measured["first_batch_seconds_min"])
    finally:
        for folder in (base, *folders.values()):
            shutil.rmtree(folder, ignore_errors=True)
    out.update(summarize(out["sizes"]))
    return out


def summarize(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios the targets are about: vs decode, vs the numpy floor, vs today's pipeline, and flatness."""
    out: dict[str, Any] = {}
    decoded = [r for r in sizes if r.get("decode_images_per_s")]
    if decoded:
        r = decoded[0]
        out["decode"] = {"images": r["images"], "images_per_s": r["decode_images_per_s"]}
        out["speedup_vs_decode"] = r["images_per_s"] / r["decode_images_per_s"]
    # The floor at the larger sizes: at a few hundred images an epoch lasts milliseconds, and
    # tf.data's fixed cost per epoch (an iterator, its threads) is most of it; numpy has none.
    large = sizes[1:] or sizes
    out["floor"] = {
        "images": [r["images"] for r in large],
        "images_per_s": [r["numpy_images_per_s"] for r in large],  # the baseline, size by size, as `decode` gives its own
        "ratio_worst": max(r["numpy_images_per_s"] / r["images_per_s"] for r in large),
    }
    copied = [r for r in sizes if r.get("copy")]
    if copied:
        r = copied[0]
        out["vs_copy"] = {"images": r["images"], "ratio": r["copy"]["ours_images_per_s"] / r["copy"]["images_per_s"]}
    fitted = [r for r in sizes if r.get("fit")]
    if fitted:  # read by fit, whole fits of 4 epochs: ours against the copy and against the better PyDataset
        out["through_fit"] = [
            {"images": r["images"], "vs_copy": r["fit"]["ours_images_per_s"] / r["fit"]["copy_images_per_s"],
             "vs_pydataset": r["fit"]["ours_images_per_s"] / r["fit"]["pydataset_images_per_s"], "pydataset_workers": r["fit"]["pydataset_workers"]}
            for r in fitted
        ]
    if len(sizes) >= 2:
        small, big = sizes[-2], sizes[-1]
        out["flat"] = {
            "images": [small["images"], big["images"]],
            "first_batch_ratio": big["first_batch_seconds"] / small["first_batch_seconds"],
            "first_batch_min_ratio": big["first_batch_seconds_min"] / small["first_batch_seconds_min"],
            "startup_seconds": [small["startup_seconds"], big["startup_seconds"]],
            "peak_rss_anon_ratio": big["peak_rss_anon_bytes"] / small["peak_rss_anon_bytes"],
            "build_peak_rss_anon_ratio": big["build"]["peak_rss_anon_bytes"] / small["build"]["peak_rss_anon_bytes"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.input_pipeline")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True, help="where the image folders and caches are made (and removed)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 3000, 12000], help="images per folder, ascending")
    parser.add_argument("--size", type=int, nargs=2, default=(600, 200), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-per-class", type=int, default=50, help="distinct synthetic images per class (the rest are links)")
    parser.add_argument("--copy-max", type=int, default=3000, help="run the copying pipeline up to this size (it holds 2 copies)")
    parser.add_argument("--decode-at", type=int, default=3000, help="run image_dataset_from_directory at this size")
    parser.add_argument("--fit-rounds", type=int, default=20, help="fits per pipeline read by fit, up to 1,000 images (a quarter above)")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    decode_at = args.decode_at if args.decode_at in sizes else max(s for s in sizes if s <= max(args.decode_at, sizes[0]))
    result = measure(args.workdir, sizes, tuple(args.size), args.batch_size, args.repeats, args.base_per_class, args.copy_max, decode_at,
                     log=lambda text: print(text, file=sys.stderr, flush=True), fit_rounds=args.fit_rounds)
    result["config"] = {"sizes": sizes, "image_size": list(args.size), "batch_size": args.batch_size, "repeats": args.repeats,
                        "base_per_class": args.base_per_class, "copy_max": args.copy_max, "decode_at": decode_at, "validation_split": 0.2,
                        "fit_rounds": args.fit_rounds}
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
