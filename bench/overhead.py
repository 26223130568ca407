"""Trial overhead: where a worker's wall time goes in the demo search (real TensorFlow).

Runs the demo search as `make demo` does (`examples/demo.yaml`: synthetic
120x40 images, 60 per class, 6 trials x 4 epochs, random search) with our chief (`python -m tuner_job`) and W workers
(`bench.instrumented_worker`, the same worker with timers). Per worker:

- start-up: process start -> its first trial handed out, split into
  imports/set-up, waiting for the chief, loading the data;
- after that (first trial handed out -> its last trial reported): the share
  spent outside `model.fit`, split into asking the oracle, building and
  compiling, the HParams summary, reporting (UpdateTrial/EndTrial + clean-up),
  and the rest (loop, logging); and, for information, the saving done inside
  `fit` (the epoch's backup and TensorBoard at each epoch end).

Also the chief's exit delay after the last trial's EndTrial (attempt events).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO, child_env, free_port, python
from tuner_job.contract import CHIEF_ID, process_env, worker_id


def _union(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of intervals clipped to [lo, hi]."""
    total, end = 0.0, lo
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def analyse_worker(timings: dict[str, Any]) -> dict[str, Any]:
    events = [(c, a, b) for c, a, b in timings["events"]]
    by: dict[str, list[tuple[float, float]]] = {}
    for c, a, b in events:
        by.setdefault(c, []).append((a, b))
    asks = sorted(by.get("ask", []))
    finishes = sorted(by.get("finish", []))
    if not asks or not finishes:
        return {"trials": 0}
    t0 = timings["t0"]
    first_trial = asks[0][1]
    chief_wait = sum(b - a for a, b in by.get("chief", []) if b <= first_trial)
    data_load = sum(b - a for a, b in by.get("data", []) if b <= first_trial)
    lo, hi = first_trial, finishes[-1][1]
    window = hi - lo
    fit = _union(by.get("fit", []), lo, hi)
    parts = {
        "ask": _union(by.get("ask", []), lo, hi),
        "build_compile": _union(by.get("build", []), lo, hi),
        "hparams_summary": _union(by.get("hparams", []), lo, hi),
        "report_and_cleanup": _union(by.get("finish", []), lo, hi),
    }
    parts["other"] = max(0.0, window - fit - sum(parts.values()))
    saving_in_fit = _union(by.get("saving", []), lo, hi)
    lease_in_fit = _union(by.get("lease", []), lo, hi)
    return {
        "trials": len(asks),
        "startup_seconds": first_trial - t0,
        "startup_parts": {"wait_for_chief": chief_wait, "data": data_load, "imports_and_rest": first_trial - t0 - chief_wait - data_load},
        "window_seconds": window,
        "fit_seconds": fit,
        "outside_fit_seconds": window - fit,
        "outside_fit_share": (window - fit) / window if window > 0 else None,
        "outside_fit_parts": parts,
        "inside_fit": {"saving_seconds": saving_in_fit, "lease_rpc_seconds": lease_in_fit},
        "process_seconds": timings["exit"] - t0,
    }


def run_demo(
    workers: int = 2, trials: int = 6, epochs: int = 4, per_class: int = 60, size: tuple[int, int] = (120, 40), timeout: float = 400,
    workdir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    from cluster.synth import synthesize

    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="bench-overhead-")) if own_tmp else Path(workdir)
    try:
        shared = root / "shared"
        synthesize(shared / "data" / "toonvision", per_class=per_class, size=size, seed=42)
        config = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
        config.update(max_trials=trials, epochs=epochs, image_size=list(size))
        config_file = root / "search.yaml"
        config_file.write_text(yaml.safe_dump(config))
        port = free_port()
        procs: dict[str, subprocess.Popen] = {}
        started: dict[str, float] = {}
        for name in [CHIEF_ID] + [worker_id(i) for i in range(workers)]:
            log = open(root / f"{name}.log", "wb")
            started[name] = time.time()
            contract = process_env(name, "127.0.0.1", port, str(config_file), str(shared))
            if name == CHIEF_ID:
                cmd = [python(), "-m", "tuner_job", "--fresh"]
                env = child_env(**contract)
            else:
                cmd = [python(), "-m", "bench.instrumented_worker"]
                env = child_env(BENCH_T0=repr(started[name]), BENCH_TIMINGS=str(root / f"{name}.timings.json"), **contract)
            procs[name] = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        deadline = time.monotonic() + timeout
        exited: dict[str, float] = {}
        while len(exited) < len(procs) and time.monotonic() < deadline:
            for name, proc in procs.items():
                if name not in exited and proc.poll() is not None:
                    exited[name] = time.time()
            time.sleep(0.02)
        timed_out = len(exited) < len(procs)
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        codes = {name: proc.returncode for name, proc in procs.items()}
        run_dir = shared / "runs" / config["run"]
        attempts = []
        for file in sorted((run_dir / "attempts").glob("*.jsonl")):
            attempts += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        ends = [e["time"] for e in attempts if e.get("event") == "end"]
        per_worker = {}
        for name in procs:
            if name == "chief":
                continue
            timings_file = root / f"{name}.timings.json"
            per_worker[name] = analyse_worker(json.loads(timings_file.read_text())) if timings_file.is_file() else {"trials": 0}
        results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
        statuses = [t.get("status") for t in results.get("trials", [])]
        window = sum(w.get("window_seconds", 0) for w in per_worker.values())
        outside = sum(w.get("outside_fit_seconds", 0) for w in per_worker.values())
        parts: dict[str, float] = {}
        for w in per_worker.values():
            for k, v in w.get("outside_fit_parts", {}).items():
                parts[k] = parts.get(k, 0.0) + v
        logs = {name: (root / f"{name}.log").read_text(errors="replace")[-1500:] for name in procs if codes[name] != 0 or timed_out}
        return {
            "config": {"workers": workers, "trials": trials, "epochs": epochs, "per_class": per_class, "image_size": list(size),
                       "config": config, "timeout": timeout},
            "timed_out": timed_out,
            "exit_codes": codes,
            "trials_completed": statuses.count("COMPLETED"),
            "trials_reported": len(statuses),
            "workers": per_worker,
            "outside_fit_share": outside / window if window > 0 else None,
            "outside_fit_parts_share": {k: v / window for k, v in parts.items()} if window > 0 else {},
            "startup_seconds": max((w["startup_seconds"] for w in per_worker.values() if "startup_seconds" in w), default=None),
            "chief_exit_seconds": (exited["chief"] - max(ends)) if ends and "chief" in exited else None,
            "logs": logs,
        }
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)
