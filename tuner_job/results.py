"""Every trial of a run as rows: the leaderboard, `results.json`, `leaderboard.csv`.

Reads only files on the shared volume, through `trials` (the chief's journal
and KerasTuner's `trial_*/trial.json`, the workers' attempt logs and the error
files), so it works for a finished run, a running one, and from the launcher
without TensorFlow.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner_job.layout import RunPaths, atomic_write_json, atomic_write_text
from tuner_job.objective import Objective, finite
from tuner_job.trials import best_step_metrics, error_line, read_attempts, read_trials, seeded_from

__all__ = ["TrialRecord", "collect_trials", "has_rungs", "promotion_note", "rank", "write_results", "leaderboard_text"]


@dataclass
class TrialRecord:
    """One trial as the leaderboard shows it.

    `metrics` are each metric's value at the trial's best step; `seconds` the
    wall time of its attempts' training (summed over attempts; an attempt
    stopped before its end line counts its epochs'); `worker` the
    tuner id of its last attempt, or `warm-start:<run>` for a seeded trial;
    `error` the one-line summary of its last failure.

    Successive halving (asha, hyperband) trains a configuration in rungs, each
    a trial of its own: `rung` is the trial's rung (hyperband: its round),
    `epochs` the epoch it trained to (counted from the configuration's
    start), `promoted_from` the trial whose weights it continued (None for a
    new configuration, and for the other tuners, as are `rung` and `epochs`).
    """

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
    rung: int | None = None
    epochs: int | None = None
    promoted_from: str | None = None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rungs(values: dict[str, Any]) -> dict[str, Any]:
    """`rung`, `epochs`, `promoted_from` of a trial from its bookkeeping values (`tuner/...`: asha's, KerasTuner's Hyperband's)."""
    rung = values.get("tuner/rung", values.get("tuner/round"))
    parent = values.get("tuner/trial_id")
    return {"rung": _int(rung), "epochs": _int(values.get("tuner/epochs")), "promoted_from": str(parent) if parent else None}


def _seconds(events: list[dict[str, Any]]) -> float | None:
    """The trial's seconds over its attempts (each begins with a start line): an attempt's end line, else its epochs'.

    An attempt without an end line was stopped (a signal, a kill) before it
    wrote one; the epochs it logged still took their time.
    """
    total, attempt = 0.0, []
    for event in [*events, {"event": "start"}]:
        if event.get("event") == "start" and attempt:
            ends = [e for e in attempt if e.get("event") == "end"]
            counted = ends or [e for e in attempt if e.get("event") == "epoch"]
            total += sum(float(e.get("seconds", 0.0)) for e in counted)
            attempt = []
        attempt.append(event)
    return total or None


def collect_trials(paths: RunPaths) -> list[TrialRecord]:
    """All trials of the run (`trials.read_trials`: journal and trial files), in trial order."""
    attempts = read_attempts(paths)
    records = []
    for trial_id, trial in read_trials(paths).trials.items():
        events = attempts.get(trial_id, [])
        ends = [e for e in events if e.get("event") == "end"]
        starts = [e for e in events if e.get("event") == "start"]
        last = ends[-1] if ends else (starts[-1] if starts else {})
        values = dict((trial.get("hyperparameters") or {}).get("values") or {})
        records.append(
            TrialRecord(
                trial_id=trial_id,
                status=str(trial.get("status")),
                worker=last.get("worker") or seeded_from(trial),
                hyperparameters=values,
                metrics=best_step_metrics(trial),
                score=finite(trial.get("score")),
                best_step=trial.get("best_step"),
                seconds=_seconds(events),
                epochs_trained=sum(1 for e in events if e.get("event") == "epoch"),
                attempts=len(starts),
                error=error_line(paths, trial_id),
                **_rungs(values),
            )
        )
    return records


def rank(records: list[TrialRecord], objective: Objective) -> list[TrialRecord]:
    """Completed trials best first (`Objective.sort_key`; ties in trial order), then the rest in trial order."""
    scored = [r for r in records if r.status == "COMPLETED" and r.score is not None]
    scored.sort(key=lambda r: objective.sort_key(r.score))  # type: ignore[arg-type]
    rest = [r for r in records if r not in scored]
    return scored + rest


def has_rungs(records: list[TrialRecord]) -> bool:
    """Whether the trials are successive halving's (asha, hyperband): the leaderboard then shows rung and epochs."""
    return any(r.epochs is not None for r in records)


def promotion_note(record: TrialRecord) -> str:
    """`promoted from trial 3` for a trial that continues another's weights, else empty."""
    return f"promoted from trial {record.promoted_from}" if record.promoted_from else ""


def _csv(records: list[TrialRecord]) -> str:
    hp_names = sorted({k for r in records for k in r.hyperparameters})
    metric_names = sorted({k for r in records for k in r.metrics})
    rungs = has_rungs(records)  # the other tuners' files keep their columns
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    rung_names = ["rung", "epochs", "promoted_from"] if rungs else []
    writer.writerow(["rank", "trial_id", "status", "worker", "score", "seconds", *rung_names, *metric_names, *hp_names])
    for i, r in enumerate(records, start=1):
        writer.writerow(
            [
                i if r.status == "COMPLETED" else "",
                r.trial_id,
                r.status,
                r.worker or "",
                "" if r.score is None else r.score,
                "" if r.seconds is None else round(r.seconds, 3),
                *([_blank(r.rung), _blank(r.epochs), r.promoted_from or ""] if rungs else []),
                *(r.metrics.get(m, "") for m in metric_names),
                *(_tidy(r.hyperparameters.get(h, "")) for h in hp_names),
            ]
        )
    return buffer.getvalue()


def _tidy(value: Any) -> Any:
    """A float hyperparameter to 12 significant digits: a stepped range's `0.1 + 2 * 0.1` is 0.3, not 0.30000000000000004."""
    return float(f"{value:.12g}") if isinstance(value, float) else value


def _blank(value: Any) -> Any:
    return "" if value is None else value


def write_results(paths: RunPaths, objective: Objective, extra: dict[str, Any] | None = None) -> list[TrialRecord]:
    """Write `results.json` and `leaderboard.csv` of a run, atomically; return the ranked records.

    Args:
        paths: the run.
        objective: its objective: the ranking (`rank`) and the document's `objective`/`direction`.
        extra: more top-level keys for `results.json` (the chief adds the search's state and message).

    Returns:
        Every trial, ranked: `results.json`'s `trials` in the same order.
    """
    ranked = rank(collect_trials(paths), objective)
    document = {
        "run": paths.run,
        "objective": objective.name,
        "direction": objective.direction,
        **(extra or {}),
        "trials": [asdict(r) for r in ranked],
    }
    atomic_write_json(paths.results_json, document)
    atomic_write_text(paths.leaderboard_csv, _csv(ranked))
    return ranked


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def leaderboard_text(records: list[TrialRecord], objective: str, top: int = 10) -> str:
    """A plain-text leaderboard for logs (the launcher draws a rich table)."""
    rungs = has_rungs(records)
    rung_head = f"  {'rung':>4}  {'epochs':>6}" if rungs else ""
    lines = [f"{'rank':>4}  {'trial':>6}  {'status':<9}  {objective:>12}  {'worker':<8}  {'secs':>7}{rung_head}  hyperparameters"]
    for i, r in enumerate(records[:top], start=1):
        score = "-" if r.score is None else f"{r.score:.4f}"
        secs = "-" if r.seconds is None else f"{r.seconds:.1f}"
        place = str(i) if r.status == "COMPLETED" else "-"
        hps = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(r.hyperparameters.items()) if not k.startswith("tuner/")
        )
        rung = f"  {_dash(r.rung):>4}  {_dash(r.epochs):>6}" if rungs else ""
        note = f"({promotion_note(r)}) " if r.promoted_from else ""
        lines.append(f"{place:>4}  {r.trial_id:>6}  {r.status:<9}  {score:>12}  {r.worker or '-':<8}  {secs:>7}{rung}  {note}{hps}")
    return "\n".join(lines)
