"""A real worker's memory while it trains (issue 17's measurement behind docs/kubernetes.md's sizing).

    python -m bench.worker_memory                              # 3,000 and 12,000 images at 600x200 (~6 min, 5.4 GB of disk)
    python -m bench.worker_memory --sizes 64 --size 60 20      # a quick check of the machinery
    python -m bench.worker_memory --sizes 3000 --source ../main --out before.json   # another checkout's tuner_job, same harness

For each size, on a synthetic image folder (`bench.input_pipeline.make_folder`:
distinct base images, hard-linked): a chief (`python -m tuner_job`, which
builds the dataset cache) and one worker, the built-in `toonvision`
hypermodel, one trial of one epoch, batch 32, on this machine's CPU. Both
processes' RssAnon and RssFile are polled from `/proc/<pid>/status`
(`bench.memory`) for the whole run. It prints a table and writes
`bench/worker_memory.json`.

On a GPU node the model's activations live on the GPU and the worker's own
memory is the TensorFlow runtime, the batches in flight and the CUDA
libraries' host side; on CPU, as here, it includes the activations.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO, child_env, free_port, python, rounded, write_json
from bench.input_pipeline import make_folder
from bench.memory import rss_anon_bytes, rss_file_bytes


def _poll(pids: dict[str, int], peaks: dict[str, dict[str, int]], stop: threading.Event) -> None:
    while not stop.wait(0.02):
        for name, pid in pids.items():
            anon, file = rss_anon_bytes(pid), rss_file_bytes(pid)
            if anon is not None:
                peak = peaks[name]
                peak["rss_anon_bytes"] = max(peak["rss_anon_bytes"], anon)
                peak["rss_file_bytes"] = max(peak["rss_file_bytes"], file or 0)


def train_once(root: Path, folder: Path, image_size: tuple[int, int], batch_size: int, timeout: float, source: Path | None = None) -> dict[str, Any]:
    """A chief and one worker over `folder`: one trial, one epoch. Peak memory of each, exit codes, seconds."""
    shared = root / "shared"
    (shared / "data").mkdir(parents=True)
    os.symlink(folder, shared / "data" / "images")
    config = {"run": "memory", "data": "data/images", "image_size": list(image_size), "hypermodel": "toonvision", "tuner": "random",
              "max_trials": 1, "epochs": 1, "batch_size": batch_size, "seed": 42}
    (root / "search.yaml").write_text(yaml.safe_dump(config))
    common = dict(KERASTUNER_ORACLE_PORT=str(free_port()), TUNER_CONFIG=str(root / "search.yaml"), TUNER_SHARED_DIR=str(shared))
    procs: dict[str, subprocess.Popen] = {}
    started = time.monotonic()
    for name in ("chief", "tuner0"):
        with open(root / f"{name}.log", "wb") as log:
            env = child_env(KERASTUNER_TUNER_ID=name, KERASTUNER_ORACLE_IP="127.0.0.1", **common)
            if source is not None:  # the processes run that checkout's code
                env["PYTHONPATH"] = str(source)
            procs[name] = subprocess.Popen([python(), "-m", "tuner_job"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    peaks = {name: {"rss_anon_bytes": 0, "rss_file_bytes": 0} for name in procs}
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=({n: p.pid for n, p in procs.items()}, peaks, stop), daemon=True)
    poller.start()
    try:
        for proc in procs.values():
            proc.wait(max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop.set()
        poller.join(5)
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    codes = {name: proc.returncode for name, proc in procs.items()}
    worker_log = (root / "tuner0.log").read_text(errors="replace")
    epoch = [line for line in worker_log.splitlines() if " epoch 1/1 " in line]
    return {"exit_codes": codes, "seconds": time.monotonic() - started, "chief": peaks["chief"], "worker": peaks["tuner0"],
            "epoch_log": epoch[-1].strip() if epoch else None, "logs": None if set(codes.values()) == {0} else worker_log[-2000:]}


def measure(workdir: Path, sizes: list[int], image_size: tuple[int, int], batch_size: int, base_per_class: int, timeout: float,
            source: Path | None = None) -> dict[str, Any]:
    from cluster.synth import synthesize

    base = workdir / "base"
    synthesize(base, per_class=base_per_class, size=image_size, seed=42)
    runs = []
    try:
        for images in sizes:
            folder = workdir / f"images-{images}"
            make_folder(base, folder, images)
            print(f"worker memory: {images} images at {image_size[0]}x{image_size[1]}: chief (builds the cache) and one worker, 1 trial x 1 epoch",
                  file=sys.stderr, flush=True)
            run = train_once(workdir / f"run-{images}", folder, image_size, batch_size, timeout, source)
            runs.append({"images": images, "cache_bytes": images * image_size[0] * image_size[1] * 3, **run})
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"config": {"sizes": sizes, "image_size": list(image_size), "batch_size": batch_size, "hypermodel": "toonvision",
                       "trials": 1, "epochs": 1, "validation_split": 0.2, "source": str(source or REPO)}, "runs": runs}


def render(result: dict[str, Any]) -> str:
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    lines = ["| images | cache MiB | worker peak RssAnon MiB | worker peak RssFile MiB | chief peak RssAnon MiB | exit codes | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        codes = ", ".join(f"{k} {v}" for k, v in r["exit_codes"].items())
        lines.append(f"| {r['images']} | {mib(r['cache_bytes'])} | {mib(r['worker']['rss_anon_bytes'])} | {mib(r['worker']['rss_file_bytes'])} | "
                     f"{mib(r['chief']['rss_anon_bytes'])} | {codes} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 12000])
    parser.add_argument("--size", type=int, nargs=2, default=(600, 200), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--base-per-class", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per size")
    parser.add_argument("--source", type=Path, help="run the chief and worker from this checkout (default: this one)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "worker_memory.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-worker-memory-") as tmp:
        source = args.source.resolve() if args.source else None
        result = measure(Path(tmp), args.sizes, tuple(args.size), args.batch_size, args.base_per_class, args.timeout, source)
    result["command"] = "python -m bench.worker_memory " + " ".join(argv if argv is not None else sys.argv[1:])
    result["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(args.out, rounded(result))
    print(render(result))
    failed = [r["images"] for r in result["runs"] if set(r["exit_codes"].values()) != {0}]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
