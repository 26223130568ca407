"""Every trial of a run as rows: the leaderboard, `results.json`, `leaderboard.csv`.

Reads only files on the shared volume (KerasTuner's `trial_*/trial.json`, the
workers' attempt logs and the error files), so it works for a finished run, a
running one, and from the launcher without TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuner_job.layout import WARM_START_LABEL, RunPaths, atomic_write_json, atomic_write_text, read_json

__all__ = ["TrialRecord", "collect_trials", "rank", "write_results", "leaderboard_text"]

_TERMINAL = ("COMPLETED", "FAILED", "INVALID")


@dataclass
class TrialRecord:
    trial_id: str
    status: str
    worker: str | None
    hyperparameters: dict[str, Any]
    metrics: dict[str, float]
    score: float | None
    best_step: int | None
    seconds: float | None
    epochs_trained: int = 0
    attempts: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _best_metrics(trial: dict[str, Any]) -> dict[str, float]:
    """Each metric's value at the trial's best step (its last value otherwise)."""
    best_step = trial.get("best_step")
    out: dict[str, float] = {}
    for name, history in (trial.get("metrics") or {}).get("metrics", {}).items():
        observations = history.get("observations") or []
        if not observations:
            continue
        chosen = next((o for o in observations if o.get("step") == best_step), observations[-1])
        value = chosen.get("value")
        if isinstance(value, list):
            value = sum(value) / len(value) if value else None
        if value is not None:
            out[name] = float(value)
    return out


def _read_attempts(paths: RunPaths) -> dict[str, list[dict[str, Any]]]:
    """Attempt events per trial id, from every worker's JSON-lines file."""
    events: dict[str, list[dict[str, Any]]] = {}
    if not paths.attempts.is_dir():
        return events
    for file in sorted(paths.attempts.glob("*.jsonl")):
        for line in file.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a worker killed mid-line leaves a torn last line
            events.setdefault(str(event.get("trial")), []).append(event)
    return events


def _seeded_from(trial: dict[str, Any]) -> str | None:
    """The "warm-start:<run>" label of a trial an earlier run seeded (the chief puts it in the message)."""
    message = trial.get("message")
    return message if isinstance(message, str) and message.startswith(WARM_START_LABEL) else None


def collect_trials(paths: RunPaths) -> list[TrialRecord]:
    """All trials of the run, in trial-id order."""
    attempts = _read_attempts(paths)
    records = []
    for trial_file in sorted(paths.tuner.glob("trial_*/trial.json")):
        trial = read_json(trial_file)
        if not trial or "trial_id" not in trial:
            continue
        trial_id = str(trial["trial_id"])
        events = attempts.get(trial_id, [])
        ends = [e for e in events if e.get("event") == "end"]
        starts = [e for e in events if e.get("event") == "start"]
        last = ends[-1] if ends else (starts[-1] if starts else {})
        error_file = paths.error_file(trial_id)
        score = trial.get("score")
        records.append(
            TrialRecord(
                trial_id=trial_id,
                status=str(trial.get("status")),
                worker=last.get("worker") or _seeded_from(trial),
                hyperparameters=dict((trial.get("hyperparameters") or {}).get("values") or {}),
                metrics=_best_metrics(trial),
                score=None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score),
                best_step=trial.get("best_step"),
                seconds=sum(float(e.get("seconds", 0.0)) for e in ends) or None,
                epochs_trained=sum(1 for e in events if e.get("event") == "epoch"),
                attempts=len(starts),
                error=error_file.read_text().strip().splitlines()[-1] if error_file.is_file() else None,
            )
        )
    return records


def rank(records: list[TrialRecord], direction: str = "min") -> list[TrialRecord]:
    """Completed trials best first, then the rest in id order."""
    scored = [r for r in records if r.status == "COMPLETED" and r.score is not None]
    scored.sort(key=lambda r: r.score if direction == "min" else -r.score)  # type: ignore[operator]
    rest = [r for r in records if r not in scored]
    return scored + rest


def _csv(records: list[TrialRecord]) -> str:
    hp_names = sorted({k for r in records for k in r.hyperparameters})
    metric_names = sorted({k for r in records for k in r.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "trial_id", "status", "worker", "score", "seconds", *metric_names, *hp_names])
    for i, r in enumerate(records, start=1):
        writer.writerow(
            [
                i if r.status == "COMPLETED" else "",
                r.trial_id,
                r.status,
                r.worker or "",
                "" if r.score is None else r.score,
                "" if r.seconds is None else round(r.seconds, 3),
                *(r.metrics.get(m, "") for m in metric_names),
                *(r.hyperparameters.get(h, "") for h in hp_names),
            ]
        )
    return buffer.getvalue()


def write_results(paths: RunPaths, objective: str, direction: str, extra: dict[str, Any] | None = None) -> list[TrialRecord]:
    """Write `results.json` and `leaderboard.csv`; return the ranked records."""
    ranked = rank(collect_trials(paths), direction)
    document = {
        "run": paths.run,
        "objective": objective,
        "direction": direction,
        **(extra or {}),
        "trials": [asdict(r) for r in ranked],
    }
    atomic_write_json(paths.results_json, document)
    atomic_write_text(paths.leaderboard_csv, _csv(ranked))
    return ranked


def leaderboard_text(records: list[TrialRecord], objective: str, top: int = 10) -> str:
    """A plain-text leaderboard for logs (the launcher draws a rich table)."""
    lines = [f"{'rank':>4}  {'trial':>6}  {'status':<9}  {objective:>12}  {'worker':<8}  {'secs':>7}  hyperparameters"]
    for i, r in enumerate(records[:top], start=1):
        score = "-" if r.score is None else f"{r.score:.4f}"
        secs = "-" if r.seconds is None else f"{r.seconds:.1f}"
        place = str(i) if r.status == "COMPLETED" else "-"
        hps = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(r.hyperparameters.items()) if not k.startswith("tuner/")
        )
        lines.append(f"{place:>4}  {r.trial_id:>6}  {r.status:<9}  {score:>12}  {r.worker or '-':<8}  {secs:>7}  {hps}")
    return "\n".join(lines)
