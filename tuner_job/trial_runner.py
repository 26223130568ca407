"""Train one trial on a worker: resume, report, log, and never lose the traceback.

- Per-epoch state goes to `backup/trial_<id>/` (Keras `BackupAndRestore`): a
  trial that runs again, on this worker or another, continues from its last
  finished epoch, and its TensorBoard log continues with it. The metrics of the
  epochs before the restart are kept next to it (`history.json`). Keras writes
  the backup in place, so a worker stopped while it writes (a scale-down, a
  kill) can leave it torn: a backup that cannot be restored is dropped and the
  trial restarts from epoch 0 instead of failing.
- The best epoch's weights go to `tuner/trial_<id>/checkpoint.weights.h5`: the
  chief exports the best model from them, and Hyperband continues from them.
- Each epoch ends with a word to the chief (the lease), and a heartbeat thread
  speaks during long epochs. When the chief says the search failed, training
  stops after the current batch.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner_job.config import SearchConfig
from tuner_job.errors import SearchFailedError
from tuner_job.layout import RunPaths, atomic_write_json, atomic_write_text, read_json
from tuner_job.objective import resolve_objective
from tuner_job.tensorboard_logs import write_trial_hparams, write_trial_score

__all__ = ["TrialRunner", "TrialOutcome", "public_values", "format_values"]

log = logging.getLogger("tuner_job.worker")


def public_values(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter values without Hyperband's bookkeeping (`tuner/...`)."""
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def format_values(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(public_values(values).items()))


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, without terminal colours, at most `limit` characters."""
    message = " ".join(line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_logs(logs: dict[str, Any]) -> str:
    return " ".join(f"{k}={float(v):.4f}" for k, v in sorted(logs.items()) if isinstance(v, (int, float)))


@dataclass
class TrialOutcome:
    """What training one trial came to, for the chief.

    `status` is COMPLETED, or INVALID (an error: the oracle retries it up to
    `max_retries_per_trial`, then fails it); `metrics` the best epoch's logs
    (averaged over executions); `best_step` that epoch (0-based, of the first
    execution); `seconds` the wall time; `message` the traceback of an error.
    """

    status: str
    metrics: dict[str, float]
    best_step: int
    seconds: float
    message: str | None = None


class _Heartbeat(threading.Thread):
    """Renews the trial's lease while an epoch runs longer than the period."""

    def __init__(self, client: Any, trial_id: str, period: float):
        super().__init__(daemon=True, name=f"heartbeat-{trial_id}")
        self.client, self.trial_id, self.period = client, trial_id, period
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            try:
                self.client.get_trial(self.trial_id)
            except Exception as exc:  # the training loop notices a dead chief itself
                log.debug("heartbeat for trial %s failed: %s", self.trial_id, exc)


def _backup_restores(model: Any, backup_dir: Path) -> bool:
    """Whether Keras' `BackupAndRestore` can restore the backup in `backup_dir` (True when there is none).

    It loads what the callback would load at the start of `fit`: the weights
    (after building the optimizer, whose slots they hold) and the epoch. The
    file names are the callback's (keras 3).
    """
    weights, metadata = backup_dir / "latest.weights.h5", backup_dir / "training_metadata.json"
    if metadata.exists():
        state = read_json(metadata)
        if not (isinstance(state, dict) and isinstance(state.get("epoch"), int)):
            return False
    if weights.exists():
        try:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(str(weights))
        except Exception:  # h5py's OSError for a torn file, ValueError for a short one: either way unusable
            return False
    return True


class TrialRunner:
    """Trains the trials a worker is given (see the module doc for what it keeps on disk).

    Args:
        config: the search.
        paths: the run the trials belong to (a staged search moves it on).
        tuner_id: this worker's id (its attempts file, its log lines).
        build_model: `build(hp) -> compiled keras.Model` (`load_hypermodel`).
        train, val: the `tf.data.Dataset`s `fit` trains and validates on (`as_tf_datasets`).
        client: the `OracleClient` (heartbeats, and the search's state).

    The objective's direction (`objective.resolve_objective`, as the chief's)
    decides the best epoch and the mode of `ModelCheckpoint` and `EarlyStopping`.

    Raises:
        ConfigError: the objective's direction cannot be told (set `objective_direction`).
    """

    def __init__(self, config: SearchConfig, paths: RunPaths, tuner_id: str, build_model: Any, train: Any, val: Any, client: Any):
        self.config = config
        self.paths = paths
        self.tuner_id = tuner_id
        self.build_model = build_model
        self.train, self.val = train, val
        self.client = client
        self.objective = resolve_objective(config.objective, config.objective_direction)

    def _event(self, **event: Any) -> None:
        event = {"worker": self.tuner_id, "time": time.time(), **event}
        path = self.paths.attempts_file(self.tuner_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(event) + "\n")

    def _callbacks(self, trial_id: str, execution: int, history_file: Any, history: dict[str, dict[str, float]]) -> list[Any]:
        import keras

        runner = self
        suffix = "" if execution == 0 else f"/execution_{execution}"
        backup_dir = self.paths.backup(trial_id) / f"execution_{execution}"
        log_dir = self.paths.trial_logs(trial_id) / suffix.lstrip("/") if suffix else self.paths.trial_logs(trial_id)

        class Reporter(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.started = time.monotonic()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
                history[str(epoch)] = logs
                atomic_write_json(history_file, history)
                seconds = time.monotonic() - self.started
                runner._event(trial=trial_id, event="epoch", epoch=epoch, execution=execution, seconds=seconds, logs=logs)
                log.info("trial %s epoch %d/%d %s (%.1fs)", trial_id, epoch + 1, self.params.get("epochs", 0), _format_logs(logs), seconds)
                try:
                    runner.client.get_trial(trial_id)  # the lease
                except SearchFailedError:
                    self.model.stop_training = True
                if runner.client.search_state == "failed":
                    self.model.stop_training = True

        callbacks = [
            keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", delete_checkpoint=False),
            keras.callbacks.TensorBoard(str(log_dir), histogram_freq=0, write_graph=False, profile_batch=0),
            Reporter(),
        ]
        if execution == 0:
            initial = self.objective.best(logs.get(self.objective.name) for logs in history.values())  # a resumed trial's best epoch so far
            callbacks.append(
                keras.callbacks.ModelCheckpoint(
                    str(self.paths.checkpoint(trial_id)),
                    monitor=self.objective.name,
                    mode=self.objective.direction,
                    save_best_only=True,
                    save_weights_only=True,
                    initial_value_threshold=initial,
                    verbose=0,
                )
            )
        if self.config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=self.objective.name, mode=self.objective.direction, patience=self.config.early_stopping_patience
                )
            )
        return callbacks

    def _fit_once(self, trial: Any, execution: int) -> dict[str, dict[str, float]]:
        values = trial.hyperparameters.values
        trial_id = trial.trial_id
        epochs = int(values.get("tuner/epochs", self.config.epochs))
        initial_epoch = int(values.get("tuner/initial_epoch", 0))
        model = self.build_model(trial.hyperparameters)
        history_file = self.paths.backup(trial_id) / f"execution_{execution}.history.json"
        backup_dir = self.paths.backup(trial_id) / f"execution_{execution}"
        if not _backup_restores(model, backup_dir):
            log.warning("trial %s: its backup %s cannot be restored (torn by a stopped worker); it restarts from epoch 0", trial_id, backup_dir)
            shutil.rmtree(backup_dir, ignore_errors=True)
            history_file.unlink(missing_ok=True)
            model = self.build_model(trial.hyperparameters)  # the failed load may have set some weights
        previous = values.get("tuner/trial_id")
        if previous and self.paths.checkpoint(str(previous)).is_file():
            model.load_weights(str(self.paths.checkpoint(str(previous))))  # Hyperband: continue the earlier trial
        history: dict[str, dict[str, float]] = read_json(history_file) or {}
        if history:
            log.info("trial %s resumes after epoch %d of %d", trial_id, max(int(e) for e in history) + 1, epochs)
        self.train_model(model, epochs, initial_epoch, self._callbacks(trial_id, execution, history_file, history))
        if self.client.search_state == "failed":
            self.client.raise_if_ended()
        return history

    def train_model(self, model: Any, epochs: int, initial_epoch: int, callbacks: list[Any]) -> None:
        """`model.fit` on the worker's datasets (a seam the benchmark times)."""
        model.fit(self.train, validation_data=self.val, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0)

    def run(self, trial: Any) -> TrialOutcome:
        """Train `trial` (each execution, resuming from its backup) and pick each execution's best epoch.

        Returns:
            COMPLETED with the best epoch's metrics, or INVALID when training
            raised: its traceback goes to `errors/trial_<id>.txt` and the
            outcome's message, its summary to the log.

        Raises:
            SearchFailedError: the chief said the search failed; stop at once.
        """
        trial_id = trial.trial_id
        started = time.monotonic()
        values = trial.hyperparameters.values
        log.info("trial %s start", trial_id)  # its hyperparameters: in the chief's line that handed it out
        self._event(trial=trial_id, event="start")
        write_trial_hparams(self.paths.trial_logs(trial_id), self.paths.run, trial_id, public_values(values))
        heartbeat = _Heartbeat(self.client, trial_id, period=max(0.5, min(10.0, self.config.lease_seconds / 4)))
        heartbeat.start()
        try:
            bests = []
            for execution in range(self.config.executions_per_trial):
                bests.append(self.objective.best_epoch(self._fit_once(trial, execution)))
            metrics = {name: sum(b[1][name] for b in bests if name in b[1]) / len(bests) for name in bests[0][1]}
            outcome = TrialOutcome("COMPLETED", metrics, bests[0][0], time.monotonic() - started)
        except SearchFailedError:
            raise
        except Exception as exc:
            text = traceback.format_exc()
            # Last line: the error in one line (`tunectl results` shows it);
            # Keras wraps a layer's error in a many-line, coloured message.
            summary = error_summary(exc)
            atomic_write_text(self.paths.error_file(trial_id), f"trial {trial_id} on {self.tuner_id}\n{text}\n{summary}\n")
            log.error("trial %s failed: %s (traceback in %s)", trial_id, summary, self.paths.error_file(trial_id))
            outcome = TrialOutcome("INVALID", {}, 0, time.monotonic() - started, message=text)
        finally:
            heartbeat.stopped.set()
        return outcome

    def finish(self, trial: Any, outcome: TrialOutcome) -> None:
        """Report the outcome; the chief records it once."""
        trial_id = trial.trial_id
        if outcome.status == "COMPLETED":
            trial.metrics = self.client.update_trial(trial_id, outcome.metrics, step=outcome.best_step).metrics
            score = outcome.metrics.get(self.objective.name)
            if score is not None:  # what TensorBoard's HParams table shows: the value the oracle ranks by
                write_trial_score(self.paths.trial_logs(trial_id), score, outcome.metrics, outcome.best_step)
        trial.status = outcome.status
        trial.message = outcome.message
        self.client.end_trial(trial)
        if outcome.status == "COMPLETED":
            shutil.rmtree(self.paths.backup(trial_id), ignore_errors=True)
        score = outcome.metrics.get(self.objective.name)
        self._event(trial=trial_id, event="end", status=outcome.status, seconds=outcome.seconds, score=score)
        log.info(
            "trial %s end: %s %s=%s (%.1fs)", trial_id, outcome.status, self.objective.name, "-" if score is None else f"{score:.4f}", outcome.seconds
        )
