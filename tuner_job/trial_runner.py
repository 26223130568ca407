"""Train one trial on a worker: resume, report, log, and never lose the traceback.

- Per-epoch state goes to `backup/trial_<id>/`, published atomically
  (`trial_backup`): weights, optimizer, the epoch and every epoch's metrics.
  A trial that runs again, on this worker or another, continues from its last
  finished epoch, and its TensorBoard log continues with it. A backup that
  cannot be read starts the trial again from its first epoch, with one warning.
- The best epoch's weights are published as `tuner/trial_<id>/checkpoint.weights.h5`
  when the trial completes: the chief exports the best model from them, and
  Hyperband continues from them.
- SIGTERM (`stopping`) stops training at once, but lets a backup being
  written finish first; the trial is not ended, so the chief keeps it for this
  tuner id until its lease runs out, and the worker that comes back resumes it.
- Each epoch ends with a word to the chief (the lease), and a heartbeat thread
  speaks during long epochs. When the chief says the search failed, training
  stops after the current batch.
- The model is built and trained by the hypermodel (`build`, then its `fit`,
  at the trial's batch size: `trial_fit`); each epoch's line in the attempts
  file carries its step count and batch size.
- An objective the model does not log is not one more failed trial but a
  wrong config: the trial ends FAILED with a bad-input message (the chief
  stops the search with exit 2) and the worker stops with exit 2.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from tuner_job import stopping
from tuner_job.config import SearchConfig
from tuner_job.errors import SearchFailedError, error_summary
from tuner_job.layout import RunPaths, atomic_write_text
from tuner_job.objective import ObjectiveNotLoggedError, resolve_objective
from tuner_job.tensorboard_logs import write_trial_hparams, write_trial_score
from tuner_job.trial_backup import BackupUnreadable, TrialBackup
from tuner_job.trial_fit import BatchedData, FitRecord, fit_trial, history_from_result, trial_batch_size

__all__ = ["TrialRunner", "TrialOutcome", "public_values", "format_values"]

log = logging.getLogger("tuner_job.worker")


def public_values(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter values without Hyperband's bookkeeping (`tuner/...`)."""
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def format_values(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(public_values(values).items()))


def _format_logs(logs: dict[str, Any]) -> str:
    return " ".join(f"{k}={float(v):.4f}" for k, v in sorted(logs.items()) if isinstance(v, (int, float)))


def _numbers(logs: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}


@dataclass
class TrialOutcome:
    """What training one trial came to, for the chief.

    `status` is COMPLETED, INVALID (an error: the oracle retries it up to
    `max_retries_per_trial`, then fails it), or FAILED when the error is the
    search's input (`bad_input`: the chief ends the search, exit 2); `metrics` the best epoch's logs
    (averaged over executions); `best_step` that epoch (0-based, of the first
    execution); `seconds` the wall time; `message` the traceback of an error.
    """

    status: str
    metrics: dict[str, float]
    best_step: int
    seconds: float
    message: str | None = None
    bad_input: str | None = None  # the search's input is wrong (one line): the worker stops with exit 2


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


class TrialRunner:
    """Trains the trials a worker is given (see the module doc for what it keeps on disk).

    Args:
        config: the search.
        paths: the run the trials belong to (a staged search moves it on).
        tuner_id: this worker's id (its attempts file, its log lines).
        hypermodel: the `LoadedHypermodel`: it builds each trial's model, and its `fit` trains it (`trial_fit`).
        data: the pipelines by batch size over the memory-mapped cache (`trial_fit.BatchedData` of `make_datasets`).
        client: the `OracleClient` (heartbeats, and the search's state).

    The objective's direction (`objective.resolve_objective`, as the chief's)
    decides the best epoch (`TrialBackup`) and the mode of `EarlyStopping`.

    Raises:
        ConfigError: the objective's direction cannot be told (set `objective_direction`).
    """

    def __init__(self, config: SearchConfig, paths: RunPaths, tuner_id: str, hypermodel: Any, data: BatchedData, client: Any):
        self.config = config
        self.paths = paths
        self.tuner_id = tuner_id
        self.hypermodel = hypermodel
        self.data = data
        self.client = client
        self.objective = resolve_objective(config.objective, config.objective_direction)
        self._fit = FitRecord(config.batch_size)

    def _event(self, **event: Any) -> None:
        event = {"worker": self.tuner_id, "time": time.time(), **event}
        path = self.paths.attempts_file(self.tuner_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with stopping.deferred(), open(path, "a") as handle:  # a whole line: a torn one would swallow the next event too
            handle.write(json.dumps(event) + "\n")

    def _callbacks(self, trial_id: str, execution: int, backup: TrialBackup) -> list[Any]:
        import keras

        runner = self
        suffix = "" if execution == 0 else f"/execution_{execution}"
        log_dir = self.paths.trial_logs(trial_id) / suffix.lstrip("/") if suffix else self.paths.trial_logs(trial_id)

        class Backup(keras.callbacks.Callback):
            """First at each epoch's end: the epoch is safe before anything else happens."""

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                backup.save(self.model, epoch, _numbers(logs))

        class Reporter(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.started = time.monotonic()  # a loop of the hypermodel's own may never call on_epoch_begin

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.started = time.monotonic()

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                stopping.raise_if_stopped()  # a stop signal whose `Stopped` a finaliser or a library swallowed

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                stopping.raise_if_stopped()
                logs = _numbers(logs)
                if not runner.objective.name.startswith("val_") or any(k.startswith("val_") for k in logs):
                    runner.objective.require_logged(logs)  # a wrong objective: stop at the first epoch that shows it
                seconds = time.monotonic() - self.started
                # The step count shows the batch size `fit` used (`trial_fit`). A training loop of
                # the hypermodel's own may call on_epoch_end without ever setting params.
                params = self.params or {}
                steps, batch_size = params.get("steps"), runner._fit.batch_size
                runner._event(
                    trial=trial_id, event="epoch", epoch=epoch, execution=execution, seconds=seconds, logs=logs, steps=steps, batch_size=batch_size
                )
                log.info(
                    "trial %s epoch %d/%s %s (%.1fs, %s steps of %d)",
                    trial_id, epoch + 1, params.get("epochs", "?"), _format_logs(logs), seconds, steps, batch_size,
                )  # fmt: skip
                self.started = time.monotonic()
                try:
                    runner.client.get_trial(trial_id)  # the lease
                except SearchFailedError:
                    self.model.stop_training = True
                if runner.client.search_state == "failed":
                    self.model.stop_training = True

        callbacks = [
            Backup(),
            keras.callbacks.TensorBoard(str(log_dir), histogram_freq=0, write_graph=False, profile_batch=0),
            Reporter(),
        ]
        if self.config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=self.objective.name, mode=self.objective.direction, patience=self.config.early_stopping_patience
                )
            )
        return callbacks

    def _fresh_start(self, trial: Any, initial_epoch: int, model: Any | None) -> tuple[Any, int]:
        """The model (`model`, or a new one) and its first epoch: Hyperband's continued trial loads the earlier trial's checkpoint.

        A checkpoint that is missing or cannot be read trains the trial from epoch 0 instead, with one warning.
        """
        model = model if model is not None else self.hypermodel.build(trial.hyperparameters)
        previous = trial.hyperparameters.values.get("tuner/trial_id")
        if not previous:
            return model, initial_epoch
        checkpoint = self.paths.checkpoint(str(previous))
        try:
            model.load_weights(str(checkpoint))  # Hyperband: continue the earlier trial
            return model, initial_epoch
        except Exception as exc:
            log.warning(
                "trial %s: the checkpoint of trial %s that it continues cannot be read (%s); it trains from its first epoch instead",
                trial.trial_id, previous, error_summary(exc, 200),
            )  # fmt: skip
            return self.hypermodel.build(trial.hyperparameters), 0

    def _fit_once(self, trial: Any, execution: int) -> TrialBackup:
        values = trial.hyperparameters.values
        trial_id = trial.trial_id
        epochs = int(values.get("tuner/epochs", self.config.epochs))
        backup = TrialBackup(self.paths.backup(trial_id) / f"execution_{execution}", self.objective)
        model = self.hypermodel.build(trial.hyperparameters)
        try:
            restored = backup.restore(model)
        except BackupUnreadable as exc:
            log.warning("trial %s: its backup %s cannot be restored (%s); it restarts from epoch 0", trial_id, exc.path, exc.reason)
            backup.discard()
            model, restored = None, None  # it may hold some of the backup's weights: build another
        if restored is not None:
            start = restored.epoch + 1
            log.info("trial %s resumes after epoch %d of %d", trial_id, start, epochs)
        else:
            model, start = self._fresh_start(trial, int(values.get("tuner/initial_epoch", 0)), model)
        callbacks = self._callbacks(trial_id, execution, backup)
        for callback in callbacks:  # model.fit sets it again; a training loop of the hypermodel's own may not
            callback.set_model(model)
        result = self.train_model(trial.hyperparameters, model, epochs, start, callbacks)
        if self.client.search_state == "failed":
            self.client.raise_if_ended()
        if not backup.history:  # the hypermodel's own fit trained without our callbacks: take what it returned
            backup.history.update(history_from_result(result, self.objective.name))
        return backup

    def train_model(self, hp: Any, model: Any, epochs: int, initial_epoch: int, callbacks: list[Any]) -> Any:
        """The hypermodel's `fit` on the worker's data at the trial's batch size (`trial_fit`; a seam the benchmark times)."""
        batch_size = trial_batch_size(hp.values, self.config.batch_size)
        return fit_trial(
            self.hypermodel, hp, model, self.data, batch_size, self._fit, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0
        )

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
            backups = [self._fit_once(trial, execution) for execution in range(self.config.executions_per_trial)]
            bests = [self.objective.best_epoch(backup.history) for backup in backups]
            metrics = {name: sum(b[1][name] for b in bests if name in b[1]) / len(bests) for name in bests[0][1]}
            if not backups[0].publish_checkpoint(self.paths.checkpoint(trial_id)):  # before the chief hears of it
                log.warning("trial %s: no best-epoch weights to publish as its checkpoint", trial_id)
            outcome = TrialOutcome("COMPLETED", metrics, bests[0][0], time.monotonic() - started)
        except SearchFailedError:
            raise
        except ObjectiveNotLoggedError as exc:
            # The config names a metric the model does not log: every trial would fail alike.
            line = str(exc)
            atomic_write_text(self.paths.error_file(trial_id), f"trial {trial_id} on {self.tuner_id}\n{traceback.format_exc()}\n{line}\n")
            log.error("trial %s: %s", trial_id, line)
            outcome = TrialOutcome("FAILED", {}, 0, time.monotonic() - started, message=line, bad_input=line)
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
        """Record the attempt's end (its status and seconds) in the attempts file, then report the outcome; the chief records it once.

        The attempt's line comes first: once the chief has the outcome, a stop
        signal (or the chief's end of the search) may end this process before
        any later step, and the results take each trial's seconds from it.
        """
        trial_id = trial.trial_id
        score = outcome.metrics.get(self.objective.name)
        self._event(trial=trial_id, event="end", status=outcome.status, seconds=outcome.seconds, score=score)
        if outcome.status == "COMPLETED":
            trial.metrics = self.client.update_trial(trial_id, outcome.metrics, step=outcome.best_step).metrics
            score = outcome.metrics.get(self.objective.name)
            if score is not None:  # what TensorBoard's HParams table shows: the value the oracle ranks by
                write_trial_score(self.paths.trial_logs(trial_id), score, outcome.metrics, outcome.best_step)
        trial.status = outcome.status
        trial.message = outcome.message
        self.client.end_trial(trial, bad_input=outcome.bad_input)
        if outcome.status == "COMPLETED":
            shutil.rmtree(self.paths.backup(trial_id), ignore_errors=True)
        log.info(
            "trial %s end: %s %s=%s (%.1fs)", trial_id, outcome.status, self.objective.name, "-" if score is None else f"{score:.4f}", outcome.seconds
        )
