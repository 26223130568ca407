"""Reading a run's trials off the shared volume: one reader for the chief, the results and `tunectl`.

A trial lives in three places, each with its own lag:

- `tuner/journal.jsonl`, the chief's write-ahead log: a line per trial handed
  out (with its owner) and per trial ended (with its results). Always current.
- `tuner/trial_<id>/trial.json`, KerasTuner's file: a checkpoint the chief
  rewrites at most a second after the journal (`state_writer.CHECKPOINT_LAG`).
- `attempts/<tuner>.jsonl` and `errors/trial_<id>.txt`, written by the workers:
  each start, epoch and end they saw, and a failed trial's traceback.

`read_trials` takes each trial from the journal where that is newer (an end
the checkpoint lacks, a checkpoint missing or torn), else from its file, and
orders them by `trial_order`. Trials are KerasTuner's `Trial.get_state()`
documents (plain dicts); the chief turns them into `Trial` objects itself.
Pure Python, no TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner_job.errors import ConfigError
from tuner_job.layout import WARM_PREFIX, WARM_START_LABEL, RunPaths, read_json
from tuner_job.objective import Objective, finite, resolve_objective

__all__ = [
    "ENDED",
    "JOURNAL_EVENT",
    "JOURNAL_OWNER",
    "Journal",
    "RunTrials",
    "trial_order",
    "trial_score",
    "best_step_metrics",
    "seeded_from",
    "read_journal",
    "read_trials",
    "read_attempts",
    "error_line",
    "read_status",
    "read_objective",
    "warm_start_trials",
]

#: The statuses of a trial the oracle has ended (INVALID is retried, then FAILED).
ENDED = ("COMPLETED", "FAILED")

#: Keys a journal line adds to a trial's state: "start" (handed out, with the
#: owner) or "end" (finished). A line without them is an end (older runs).
JOURNAL_EVENT = "journal_event"
JOURNAL_OWNER = "journal_owner"


def trial_order(trial_id: str) -> tuple[Any, ...]:
    """Sort key of trial ids: seeded trials (`w<id>`) first, in their own order, then ids as numbers, then the rest."""
    if trial_id.startswith(WARM_PREFIX):
        return (0, *trial_order(trial_id[len(WARM_PREFIX) :]))
    return (1, 0, int(trial_id), trial_id) if trial_id.isdigit() else (1, 1, 0, trial_id)


def trial_score(trial: dict[str, Any]) -> float | None:
    """The score of a COMPLETED trial when it is a finite number, else None."""
    return finite(trial.get("score")) if trial.get("status") == "COMPLETED" else None


def best_step_metrics(trial: dict[str, Any]) -> dict[str, float]:
    """Each metric's value at the trial's best step (its last observation when that step has none).

    An observation that holds several values (executions) counts as their mean.
    """
    best_step = trial.get("best_step")
    out: dict[str, float] = {}
    for name, history in ((trial.get("metrics") or {}).get("metrics") or {}).items():
        observations = history.get("observations") or []
        if not observations:
            continue
        chosen = next((o for o in observations if o.get("step") == best_step), observations[-1])
        value = chosen.get("value")
        if isinstance(value, list):
            value = sum(value) / len(value) if value else None
        if finite(value) is not None:
            out[name] = float(value)
    return out


def seeded_from(trial: dict[str, Any]) -> str | None:
    """The `warm-start:<run>` label of a trial an earlier run seeded, else None."""
    message = trial.get("message")
    return message if isinstance(message, str) and message.startswith(WARM_START_LABEL) else None


@dataclass
class Journal:
    """What the journal says: each trial's last line, the order trials ended, and running trials' owners."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    end_order: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def ended(self, trial_id: str) -> bool:
        entry = self.entries.get(trial_id)
        return entry is not None and entry.get(JOURNAL_EVENT, "end") == "end"


def read_journal(path: Path, repair: bool = False) -> Journal:
    """Parse the journal; torn lines are skipped and noted.

    Args:
        path: `tuner/journal.jsonl` (missing: an empty journal).
        repair: cut a torn last line off the file (a kill mid-append), so the
            next append does not glue a whole line to it. Only the chief, which
            appends, passes True; readers never change the file.
    """
    journal = Journal()
    if not path.is_file():
        return journal
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        whole = data[: data.rfind(b"\n") + 1]
        if repair:
            journal.problems.append(f"{path.name}'s last line was torn ({len(data) - len(whole)} bytes); cut off")
            with open(path, "r+b") as handle:
                handle.truncate(len(whole))
        data = whole
    for number, line in enumerate(data.decode(errors="replace").splitlines(), start=1):
        try:
            entry = json.loads(line)
            trial_id = str(entry["trial_id"])
        except (ValueError, KeyError, TypeError):
            journal.problems.append(f"{path.name} line {number} is torn; skipped")
            continue
        journal.entries[trial_id] = entry
        if entry.get(JOURNAL_EVENT, "end") == "end":
            journal.end_order.append(trial_id)
    journal.end_order = list(dict.fromkeys(journal.end_order))
    for trial_id, entry in journal.entries.items():
        if entry.get(JOURNAL_EVENT) == "start" and entry.get(JOURNAL_OWNER):
            journal.owners[trial_id] = str(entry[JOURNAL_OWNER])
    return journal


@dataclass
class RunTrials:
    """A run's trials (id -> parsed trial, in `trial_order`), with where they came from."""

    trials: dict[str, Any]
    journal: Journal
    recovered: list[str] = field(default_factory=list)  # ids whose trial.json is missing or stale: rewrite it
    problems: list[str] = field(default_factory=list)


def read_trials(paths: RunPaths, parse: Callable[[dict[str, Any]], Any] | None = None, repair: bool = False) -> RunTrials:
    """Every trial of the run, each from the newer of its journal line and its `trial.json`.

    Args:
        paths: the run.
        parse: turns a trial document into what the caller keeps (the chief:
            `Trial.from_state`); a document it rejects (ValueError, KeyError,
            TypeError) counts as torn. Default: the documents themselves.
        repair: passed to `read_journal` (the chief only).

    A torn `trial.json` of a trial the journal knows is recovered from the
    journal; one the journal does not know is dropped and noted (it runs again).
    """
    parse = parse or (lambda doc: doc)
    journal = read_journal(paths.journal, repair=repair)
    out = RunTrials({}, journal, problems=list(journal.problems))
    for trial_file in paths.tuner.glob("trial_*/trial.json"):
        trial_id = trial_file.parent.name.removeprefix("trial_")
        doc = read_json(trial_file)
        try:
            if not isinstance(doc, dict) or "trial_id" not in doc:
                raise ValueError("torn")
            trial = parse(doc)
        except (ValueError, KeyError, TypeError):
            if trial_id in journal.entries:
                out.problems.append(f"{trial_file} was torn; recovered from the journal")
            else:
                out.problems.append(f"{trial_file} was torn and the trial had not finished; it runs again")
            continue
        if journal.ended(trial_id) and doc.get("status") not in ENDED:
            continue  # the checkpoint lags the end: the journal's line wins (and rewrites the file)
        # Running: the checkpoint is as new as the journal's start line, or newer (metrics that came after it).
        out.trials[str(doc["trial_id"])] = trial
    for trial_id, entry in journal.entries.items():
        if trial_id not in out.trials:
            if not (paths.trial_dir(trial_id) / "trial.json").exists():
                out.problems.append(f"trial {trial_id}'s trial.json was missing; recovered from the journal")
            out.trials[trial_id] = parse(entry)
            out.recovered.append(trial_id)
    out.trials = {t: out.trials[t] for t in sorted(out.trials, key=trial_order)}
    return out


def read_attempts(paths: RunPaths) -> dict[str, list[dict[str, Any]]]:
    """The workers' events per trial id (start, epoch, end), from every `attempts/<tuner>.jsonl`."""
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


def error_line(paths: RunPaths, trial_id: str) -> str | None:
    """The one-line summary of a failed trial's error (the last line of its error file), or None."""
    path = paths.error_file(trial_id)
    if not path.is_file():
        return None
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else None


def read_status(paths: RunPaths) -> dict[str, Any]:
    """The chief's `status.json` (state, trials done of max, best so far), or {} when missing or torn."""
    status = read_json(paths.status)
    return status if isinstance(status, dict) else {}


def read_objective(paths: RunPaths, trials: dict[str, dict[str, Any]] | None = None) -> Objective:
    """The run's objective, as its chief decided it.

    The run's `search.yaml` names the objective (and may fix its direction);
    otherwise the direction the chief recorded (status.json, else a trial's
    metric) is used, and only a run with neither infers it from the name.

    Raises:
        ConfigError: the run's config is unreadable, or the direction cannot be told.
    """
    from tuner_job.config import load_config, parse_config

    status = read_status(paths)
    config = load_config(paths.config) if paths.config.is_file() else parse_config({"objective": status.get("objective", "val_loss")})
    recorded = status.get("direction") if status.get("objective") == config.objective else None
    if recorded is None:
        for trial in (trials if trials is not None else read_trials(paths).trials).values():
            metric = ((trial.get("metrics") or {}).get("metrics") or {}).get(config.objective) or {}
            if metric.get("direction") in ("min", "max"):
                recorded = metric["direction"]
                break
    return resolve_objective(config.objective, config.objective_direction, recorded=recorded)


def warm_start_trials(shared_dir: Path, run: str, this_run: str) -> list[dict[str, Any]]:
    """The COMPLETED trials with a finite score of run `run`, in trial order: a warm start's candidates.

    Which of them seed the new run is decided against its space
    (`space_model.values_inside`). A trial file the other run's chief is
    writing (torn) is skipped.

    Raises:
        ConfigError: `run` is `this_run`, or has no folder under `<shared_dir>/runs`.
    """
    source = RunPaths(shared_dir, run)
    if run == this_run:
        raise ConfigError(f"warm_start: run {run!r} is this run; name an earlier run")
    if not source.root.is_dir():
        raise ConfigError(f"warm_start: run {run!r} not found under {source.runs_dir}")
    return [t for t in read_trials(source).trials.values() if trial_score(t) is not None]
