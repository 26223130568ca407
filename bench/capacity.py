"""Oracle capacity: simulated workers against the stock KerasTuner chief and ours.

One run = one chief process (`bench.chiefs`) + one client process holding M
simulated workers (`bench.sim_workers`). Every run is bounded in time; the
chief's exit after the last EndTrial is waited for up to `exit_cap` seconds
(the stock chief checks every 20 s) and reported as ">= cap" beyond that.

Figures per run (see `summarize`):
- trials/s over the whole run (first CreateTrial to last EndTrial reply) and in
  the steady window (every worker has had a trial, trials are still handed out:
  from the last worker's first training start to the last training start);
- worker utilisation: time in "training" (the sleep) over M x wall time, for
  the whole run and the steady window;
- workers served (at least one trial), RPC latency p50/p99 per RPC (CreateTrial
  counts the calls that returned a trial; the calls that found the budget spent
  are "CreateTrial (no trial)": ours holds them until the search ends);
- the chief's CPU per trial and its exit delay; the client's own CPU load and
  event-loop lag (the client must not be the bottleneck).

`coordination` runs T = 0 and samples, as trials complete, the wall time and
the chief's CPU time, to give the per-trial cost at 200 ... 5,000 trials.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, child_env, free_port, percentile, python

CHIEFS = ("stock", "ours")
FLOOR = "noop"
SETTLE_PERIODS = 3  # "settled": from 3 trial lengths after the start  # not a chief: a stateless server on the same wire (bench.chiefs)


class RunFailed(RuntimeError):
    pass


def _exit_waiter(proc: subprocess.Popen, box: dict[str, float]) -> threading.Thread:
    def wait() -> None:
        proc.wait()
        box["exited_at"] = time.time()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def run_once(
    chief: str,
    workers: int,
    train_seconds: float,
    trials: int,
    *,
    timeout: float,
    exit_cap: float = 25.0,
    workdir: Path | None = None,
    sample_every: int = 50,
) -> dict[str, Any]:
    """One chief, M workers, `trials` trials; the raw client record plus the chief's exit."""
    if chief not in CHIEFS + (FLOOR,):
        raise ValueError(f"chief must be one of {CHIEFS + (FLOOR,)}, got {chief!r}")
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix=f"bench-{chief}-")) if own_tmp else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    chief_log = open(root / "chief.log", "wb")
    chief_report = root / "chief.json"
    raw_file = root / "client.json"
    chief_proc = subprocess.Popen(
        [python(), "-m", "bench.chiefs", chief, "--dir", str(root / "project"), "--port", str(port), "--max-trials", str(trials),
         "--report", str(chief_report)],
        cwd=REPO, env=child_env(), stdout=chief_log, stderr=subprocess.STDOUT,
    )
    chief_log.close()
    exit_box: dict[str, float] = {}
    waiter = _exit_waiter(chief_proc, exit_box)
    client_log = root / "client.log"
    try:
        with open(client_log, "wb") as handle:
            client = subprocess.run(
                [
                    python(), "-m", "bench.sim_workers", "--address", f"127.0.0.1:{port}", "--workers", str(workers),
                    "--train-seconds", str(train_seconds), "--timeout", str(timeout), "--chief-pid", str(chief_proc.pid),
                    "--sample-every", str(sample_every), "--out", str(raw_file),
                ],
                cwd=REPO, env=child_env(), stdout=handle, stderr=subprocess.STDOUT, timeout=timeout + 180,
            )
        if not raw_file.is_file():
            raise RunFailed(f"{chief} chief, M={workers}: the client wrote no result (rc={client.returncode}):\n"
                            f"{client_log.read_text(errors='replace')[-2000:]}\n"
                            f"--- chief:\n{(root / 'chief.log').read_text(errors='replace')[-2000:]}")
        raw = json.loads(raw_file.read_text())
        last_end = max(raw["ends"]) if raw["ends"] else raw["finished"]
        waiter.join(max(0.0, last_end + exit_cap - time.time()))
        exited = "exited_at" in exit_box
        if not exited:
            chief_proc.kill()
            waiter.join(10)
        raw["chief_exit_seconds"] = (exit_box["exited_at"] - last_end) if exited else None
        raw["chief_exit_capped_at"] = None if exited else exit_cap
        raw["chief_returncode"] = chief_proc.returncode if exited else None
        raw["chief_report"] = json.loads(chief_report.read_text()) if chief_report.is_file() else None
        raw["chief_log_tail"] = (root / "chief.log").read_text(errors="replace")[-1500:] if chief_proc.returncode else ""
        return raw
    finally:
        if chief_proc.poll() is None:
            chief_proc.kill()
            chief_proc.wait(10)
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)


def _clip(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


def _exit_parts(raw: dict[str, Any]) -> dict[str, float] | None:
    """Where the chief's exit time went: last EndTrial reply -> search over -> serving stopped -> process gone."""
    report = raw.get("chief_report") or {}
    if not raw.get("ends") or raw.get("chief_exit_seconds") is None or not report.get("serving_stopped_at"):
        return None
    last = max(raw["ends"])
    exited = last + raw["chief_exit_seconds"]
    parts = {"serving_stopped": report["serving_stopped_at"] - last, "process_exit": exited - report["serving_stopped_at"]}
    if report.get("search_finished_at"):
        parts["search_finished"] = report["search_finished_at"] - last
        parts["search_finished_to_exit"] = exited - report["search_finished_at"]
    return parts


def summarize(raw: dict[str, Any], trials: int) -> dict[str, Any]:
    """The figures of one capacity run, from the client's raw record."""
    workers = raw["workers"]
    train = raw["train"]
    starts = [a for w in train for a, _ in w]
    ended = len(raw["ends"])
    t0 = raw["started"]
    t_end = max(raw["ends"]) if raw["ends"] else raw["finished"]
    wall = max(1e-9, t_end - t0)
    busy = sum(b - a for w in train for a, b in w)
    served = sum(1 for w in train if w)
    out: dict[str, Any] = {
        "trials_requested": trials,
        "trials_ended": ended,
        "workers_served": served,
        "wall_seconds": wall,
        "trials_per_s": ended / wall,
        "utilisation": busy / (workers * wall),
        "steady": None,
        "settled": None,
        "latency_ms": {
            name: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v) if v else None}
            for name, v in raw["latency_ms"].items()
        },
        "idle_answers": raw["idle_answers"],
        "chief_exit_seconds": raw.get("chief_exit_seconds"),
        "chief_exit_parts": _exit_parts(raw),
        "chief_exit_capped_at": raw.get("chief_exit_capped_at"),
        "timed_out": raw["timed_out"],
        "errors": raw["errors"],
        "client_cpu_share": raw["client_cpu_seconds"] / wall,  # cores the client used
        "client_loop_lag_ms": {"p50": percentile(raw["loop_lag_ms"], 50), "p99": percentile(raw["loop_lag_ms"], 99)},
        "client_ready_seconds": raw["ready_seconds"],
    }
    cpu = [s for s in raw["samples"] if s[2] is not None]
    if len(cpu) >= 2 and cpu[-1][0] > cpu[0][0]:
        out["chief_cpu_ms_per_trial"] = 1000.0 * (cpu[-1][2] - cpu[0][2]) / (cpu[-1][0] - cpu[0][0])
    train_seconds = raw.get("train_seconds") or 0.0
    settle = raw["started"] + SETTLE_PERIODS * train_seconds
    if raw.get("latency_at") and starts and train_seconds > 0 and max(starts) > settle:
        # After the start: every worker asked at the same instant, and the
        # queue that burst makes takes a few trial lengths to spread out.
        hi = max(starts)
        late = {name: [ms for ms, at in zip(raw["latency_ms"][name], raw["latency_at"][name], strict=True) if at >= settle]
                for name in raw["latency_at"] if name in raw["latency_ms"]}
        out["settled"] = {
            "from_seconds": settle - raw["started"],
            "utilisation": _clip([iv for w in train for iv in w], settle, hi) / (workers * (hi - settle)),
            "latency_ms": {name: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)} for name, v in late.items() if v},
        }
    if served == workers and starts:
        lo = max(w[0][0] for w in train)  # every worker busy from here on
        hi = max(starts)  # the last trial handed out
        if hi - lo > 0:
            started_in = sum(1 for a in starts if lo <= a < hi)
            out["steady"] = {
                "window_seconds": hi - lo,
                "trials_per_s": started_in / (hi - lo),
                "utilisation": _clip([iv for w in train for iv in w], lo, hi) / (workers * (hi - lo)),
            }
    return out


def capacity(chief: str, workers: int, train_seconds: float, trials: int, timeout: float, exit_cap: float) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    raw = run_once(chief, workers, train_seconds, trials, timeout=timeout, exit_cap=exit_cap)
    config = {"chief": chief, "workers": workers, "train_seconds": train_seconds, "trials": trials, "timeout": timeout, "exit_cap": exit_cap}
    return {"config": config,
            **summarize(raw, trials), "load_average_1m": [load_before, os.getloadavg()[0]]}


def coordination(chief: str, workers: int, trials: int, milestones: list[int], window: int, timeout: float, exit_cap: float) -> dict[str, Any]:
    """T = 0: the per-trial cost (wall ms and chief CPU ms) over the `window` trials ending at each milestone."""
    every = math.gcd(window, *milestones)  # the chief's CPU is sampled at every milestone and window start
    load_before = os.getloadavg()[0]
    raw = run_once(chief, workers, 0.0, trials, timeout=timeout, exit_cap=exit_cap, sample_every=max(1, every))
    summary = summarize(raw, trials)
    ends = sorted(raw["ends"])
    samples = {n: (t, cpu) for n, t, cpu in raw["samples"]}
    points = []
    for m in milestones:
        if m > len(ends) or m - window < 1:
            continue
        wall_ms = 1000.0 * (ends[m - 1] - ends[m - window - 1]) / window
        cpu_ms = None
        if m in samples and (m - window) in samples and samples[m][1] is not None and samples[m - window][1] is not None:
            cpu_ms = 1000.0 * (samples[m][1] - samples[m - window][1]) / window
        points.append({"trials": m, "wall_ms_per_trial": wall_ms, "chief_cpu_ms_per_trial": cpu_ms})
    return {
        "config": {"chief": chief, "workers": workers, "train_seconds": 0.0, "trials": trials, "window": window, "timeout": timeout},
        "points": points,
        "trials_ended": summary["trials_ended"],
        "workers_served": summary["workers_served"],
        "trials_per_s": summary["trials_per_s"],
        "chief_exit_seconds": summary["chief_exit_seconds"],
        "chief_exit_capped_at": summary["chief_exit_capped_at"],
        "timed_out": summary["timed_out"],
        "errors": summary["errors"],
        "latency_ms": summary["latency_ms"],
        "load_average_1m": [load_before, os.getloadavg()[0]],
    }
