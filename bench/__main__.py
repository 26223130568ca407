"""`python -m bench` (`make bench`): run the benchmarks, print a table, write bench/results.json.

    python -m bench                      # everything, default sizes (about 10 min on 2 cores)
    python -m bench --only capacity      # capacity | coordination | overhead | input | parallel (repeatable)
    python -m bench --quick              # tiny sizes: checks the machinery, not the figures

Every figure is measured against its baseline in the same run: the stock
KerasTuner chief for capacity and coordination, decoding the image folder for
the input pipeline, and numpy reading the same bytes for its floor; stock
KerasTuner's Hyperband and Bayesian oracles for the parallel search. The
demo-search overhead has no baseline to beat, only a target (<= 5% of a
worker's wall time outside `fit`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import capacity as cap
from bench import overhead as ovh
from bench.common import REPO, child_env, python, rounded, write_json
from bench.report import render, targets

SECTIONS = ("capacity", "coordination", "overhead", "input", "parallel")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    p.add_argument("--workers", type=int, nargs="+", default=[8, 64, 256], help="M, simulated workers per capacity run")
    p.add_argument("--train-seconds", type=float, default=1.0, help="T, each simulated trial's training time")
    p.add_argument("--trials-per-worker", type=int, default=8, help="trials per capacity run = M x this")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the no-op server run at the largest M (the harness's floor)")
    p.add_argument("--exit-cap", type=float, default=21.0, help="wait at most this long for a chief to exit after the last trial")
    p.add_argument("--coordination-trials", type=int, default=5000)
    p.add_argument("--coordination-stock-trials", type=int, default=2000, help="the stock chief slows with the search; it runs fewer")
    p.add_argument("--coordination-workers", type=int, default=8)
    p.add_argument("--demo-workers", type=int, default=2)
    p.add_argument("--demo-trials", type=int, default=6)
    p.add_argument("--demo-epochs", type=int, default=4)
    p.add_argument("--demo-per-class", type=int, default=60, help="as `make demo` synthesizes")
    p.add_argument("--input-sizes", type=int, nargs="+", default=[200, 3000, 12000], help="images per folder for the input benchmark")
    p.add_argument("--input-size", type=int, nargs=2, default=(600, 200), metavar=("HEIGHT", "WIDTH"))
    p.add_argument("--parallel-workers", type=int, nargs="+", default=[1, 4, 16, 64], help="M, workers per simulated search")
    p.add_argument("--parallel-seeds", type=int, default=5, help="seeds per (Bayesian oracle, M): minutes each")
    p.add_argument("--parallel-fast-seeds", type=int, default=40, help="seeds per (other algorithm, M): seconds each")
    p.add_argument("--per-worker-epochs", type=int, default=384, help="asha, stock Hyperband and random: budget = this x M epochs")
    p.add_argument("--bayesian-trials", type=int, default=60, help="the two Bayesian oracles' budget, in full trials")
    args = p.parse_args(argv)
    if args.quick:
        args.workers, args.train_seconds, args.trials_per_worker, args.exit_cap = [4], 0.05, 3, 21.0
        args.coordination_trials, args.coordination_stock_trials, args.coordination_workers = 300, 300, 4
        args.demo_workers, args.demo_trials, args.demo_epochs, args.demo_per_class = 1, 2, 1, 8
        args.input_sizes, args.input_size = [64, 128], (60, 20)
        args.parallel_workers, args.parallel_seeds, args.per_worker_epochs, args.bayesian_trials = [1, 4], 1, 60, 12
        args.parallel_fast_seeds = 1
    return args


def _milestones(trials: int) -> list[int]:
    marks = [m for m in (200, 500, 1000, 2000, 3000, 4000, 5000, 10000) if m <= trials]
    return marks if trials in marks else marks + [trials // 100 * 100] if trials >= 200 else [m for m in (100, 200, 300) if m <= trials]


def run_capacity(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    runs = []
    for m in args.workers:
        for chief in cap.CHIEFS:
            trials = m * args.trials_per_worker
            timeout = max(60.0, trials / 20.0 + 30 * args.train_seconds + 30)  # stock at M=256 runs ~60-100 trials/s
            log(f"capacity: {chief} chief, M={m}, T={args.train_seconds:g}s, {trials} trials")
            runs.append(cap.capacity(chief, m, args.train_seconds, trials, timeout=timeout, exit_cap=args.exit_cap))
    if args.floor:
        m = max(args.workers)
        trials = m * args.trials_per_worker
        log(f"capacity: the floor (no-op server, same wire and harness), M={m}, {trials} trials")
        runs.append(cap.capacity(cap.FLOOR, m, args.train_seconds, trials, timeout=max(60.0, trials / 20.0 + 60), exit_cap=args.exit_cap))
    return runs


def run_coordination(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    window = 100
    runs = []
    for chief, trials in (("stock", args.coordination_stock_trials), ("ours", args.coordination_trials)):
        log(f"coordination: {chief} chief, T=0, M={args.coordination_workers}, {trials} trials")
        timeout = max(120.0, trials / 15.0)
        runs.append(cap.coordination(chief, args.coordination_workers, trials, _milestones(trials), window, timeout=timeout, exit_cap=args.exit_cap))
    return runs


def run_overhead(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    log(f"overhead: demo search, {args.demo_workers} workers, {args.demo_trials} trials x {args.demo_epochs} epochs, "
        f"{args.demo_per_class} images/class")
    return ovh.run_demo(workers=args.demo_workers, trials=args.demo_trials, epochs=args.demo_epochs, per_class=args.demo_per_class, timeout=480)


def run_input(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    sizes = ", ".join(map(str, args.input_sizes))
    log(f"input: {sizes} images at {args.input_size[0]}x{args.input_size[1]}: the cache vs image_dataset_from_directory vs numpy")
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        out = Path(tmp) / "input.json"
        command = [python(), "-m", "bench.input_pipeline", "--out", str(out), "--workdir", tmp, "--sizes", *map(str, args.input_sizes),
                   "--size", *map(str, args.input_size)]
        if args.quick:
            command += ["--repeats", "1", "--base-per-class", "4", "--copy-max", str(min(args.input_sizes)), "--fit-rounds", "1"]
        # Its progress lines go straight to our stderr; a 12,000-image run takes a few minutes.
        proc = subprocess.run(command, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, text=True, timeout=3600)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"input benchmark failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}")
        return json.loads(out.read_text())


def run_parallel(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    from bench import parallel

    configs = parallel.plan(
        args.parallel_workers, args.parallel_seeds, fast_seeds=args.parallel_fast_seeds,
        per_worker_epochs=args.per_worker_epochs, bayesian_trials=args.bayesian_trials,
    )
    log(f"parallel: {len(configs)} simulated searches (M = {', '.join(map(str, args.parallel_workers))}; "
        f"{args.parallel_seeds} seeds for the Bayesian oracles, {args.parallel_fast_seeds} for the others)")
    return parallel.run_parallel(configs, log=log)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    sections = args.only or list(SECTIONS)
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
    }
    runners = {"capacity": run_capacity, "coordination": run_coordination, "overhead": run_overhead, "input": run_input, "parallel": run_parallel}
    failed = []
    for section in SECTIONS:
        if section not in sections:
            continue
        try:
            results[section] = runners[section](args, log)
        except Exception as exc:  # report the others anyway
            failed.append(section)
            results[section] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{section} failed: {exc}")
    results["seconds"] = time.monotonic() - started
    provenance = {k: results[k] for k in ("command", "started", "seconds")}
    results["sections"] = {section: provenance for section in sections}
    results["targets"] = targets(results)
    write_json(args.out, rounded(_merged(args.out, results) if args.only else results))
    print(render(results))
    print(f"\nwritten: {args.out} ({results['seconds']:.0f}s)")
    return 1 if failed else 0


def _merged(path: Path, results: dict[str, Any]) -> dict[str, Any]:
    """`--only`: the sections just run replace theirs in the results file; the others stay as they were measured."""
    try:
        merged = json.loads(path.read_text())
    except (OSError, ValueError):
        return results
    if merged.get("quick") != results["quick"]:
        return results  # never mix tiny sizes with real ones
    runs = merged.setdefault("sections", {})
    for section in SECTIONS:
        if section in results:
            merged[section] = results[section]
            runs[section] = {"command": results["command"], "started": results["started"], "seconds": results["seconds"]}
    merged["targets"] = targets(merged)
    return merged


def _cpus() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    raise SystemExit(main())
