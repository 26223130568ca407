"""A trial's per-epoch backup, published atomically, and its best-epoch checkpoint.

Keras's `BackupAndRestore` rewrites its weights file in place: a worker
stopped during that write leaves a torn file, and the resume that follows
fails the trial. This replaces it. After each epoch the whole state goes to
a temp folder beside the backup and is published by one rename:

    backup/trial_<id>/execution_<i>/epoch-<NNNNN>/
        state.weights.h5    the model's weights and the optimizer's state (Keras' `save_weights`)
        best.weights.h5     the weights of the best epoch so far (a hard link, not a copy)
        state.json          the epoch, every epoch's metrics (the history), the best epoch and score

Files are fsynced, then the folder is renamed from its temp name, then the
older epochs are removed: a kill at any moment leaves a whole epoch folder
(the newest one is read), never a torn one. The write runs inside
`stopping.deferred()`, so SIGTERM during it lets it finish, then stops the
worker: the epoch is not lost. `TUNER_TEST_BACKUP_PAUSE_SECONDS` pauses each
write before its rename, so a test can send a signal into that window.

A backup that cannot be read anyway (damaged on the volume, a changed model)
raises `BackupUnreadable`; the caller restarts the trial from its first epoch
with one warning line, it never fails the trial.

The best-epoch checkpoint, `tuner/trial_<id>/checkpoint.weights.h5`, is what
the chief exports the best model from and what Hyperband continues from. It
is read only once its trial has ended, so the worker publishes it (atomically)
from the backup's `best.weights.h5` as the trial completes, before it tells
the chief; the backup goes after the chief has the result.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner_job import stopping
from tuner_job.layout import copy_or_link, fsync_path, publish_file
from tuner_job.objective import Objective

__all__ = ["BackupUnreadable", "Restored", "TrialBackup", "PAUSE_ENV"]

log = logging.getLogger("tuner_job.worker")

#: Test hook: seconds each backup write pauses before its rename (unset: no pause).
PAUSE_ENV = "TUNER_TEST_BACKUP_PAUSE_SECONDS"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")
_FORMAT = 1
_STATE, _WEIGHTS, _BEST = "state.json", "state.weights.h5", "best.weights.h5"


class BackupUnreadable(Exception):
    """The newest backup of an execution cannot be read: the caller starts the execution again.

    Args:
        path: the epoch folder.
        reason: why, in one line (`OSError: Unable to synchronously open file (truncated file ...)`).
    """

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass
class Restored:
    """What a backup gave back (the weights are in the model by then).

    `epoch` is the last finished epoch (0-based, as Keras counts); `history`
    every finished epoch's metrics, keyed by the epoch as a string (JSON).
    """

    epoch: int
    history: dict[str, dict[str, float]]
    best_epoch: int | None = None
    best_score: float | None = None


@dataclass
class TrialBackup:
    """The backups of one execution of a trial, in `folder` (`RunPaths.backup(id) / execution_<i>`).

    Args:
        folder: where the epoch folders go.
        objective: decides which epoch is the best.
    """

    folder: Path
    objective: Objective
    history: dict[str, dict[str, float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_score: float | None = None

    def _epochs(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = ((_EPOCH_DIR.match(p.name), p) for p in self.folder.iterdir())
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def latest(self) -> Path | None:
        """The newest published epoch folder, or None."""
        epochs = self._epochs()
        return epochs[-1][1] if epochs else None

    def restore(self, model: Any) -> Restored | None:
        """Load the newest backup into `model` (weights and optimizer state); None when there is none.

        Raises:
            BackupUnreadable: the newest backup is torn, incomplete or does not fit the model;
                `model` may then hold some of its weights (build a new one).
        """
        for stale in self.folder.glob(".epoch-*.tmp") if self.folder.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)  # a write that a kill cut short: never published
        latest = self.latest()
        if latest is None:
            return None
        try:
            state = json.loads((latest / _STATE).read_text())
            if state.get("format") != _FORMAT or not isinstance(state.get("history"), dict):
                raise ValueError(f"{_STATE} is not a backup of format {_FORMAT}")
            restored = Restored(int(state["epoch"]), state["history"], state.get("best_epoch"), state.get("best_score"))
            optimizer = getattr(model, "optimizer", None)  # none: a model its hypermodel's own fit trains
            if optimizer is not None and not optimizer.built:
                optimizer.build(model.trainable_variables)  # so that its state loads too
            model.load_weights(str(latest / _WEIGHTS))
        except Exception as exc:
            raise BackupUnreadable(latest, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
        self.history, self.best_epoch, self.best_score = dict(restored.history), restored.best_epoch, restored.best_score
        return restored

    def discard(self) -> None:
        """Remove every backup of this execution (it starts again from its first epoch)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.history, self.best_epoch, self.best_score = {}, None, None

    def save(self, model: Any, epoch: int, logs: dict[str, float]) -> None:
        """Record epoch `epoch`'s metrics and publish the model's state after it (see the module doc)."""
        self.history[str(epoch)] = logs
        is_best = self.objective.better(logs.get(self.objective.name), self.best_score)
        if is_best:
            self.best_epoch, self.best_score = epoch, float(logs[self.objective.name])
        previous = self.latest()
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"epoch-{epoch:05d}"
        tmp: Path | None = None
        try:
            with stopping.deferred():  # SIGTERM now: finish this epoch's backup, then stop
                # Made inside the block: a signal that comes once the write has begun (its folder exists) lets it finish.
                tmp = Path(tempfile.mkdtemp(prefix=".epoch-", suffix=".tmp", dir=self.folder))
                model.save_weights(str(tmp / _WEIGHTS))
                if is_best:
                    copy_or_link(tmp / _WEIGHTS, tmp / _BEST)
                elif previous is not None and (previous / _BEST).is_file():
                    copy_or_link(previous / _BEST, tmp / _BEST)
                state = {"format": _FORMAT, "epoch": epoch, "history": self.history, "best_epoch": self.best_epoch, "best_score": self.best_score}
                (tmp / _STATE).write_text(json.dumps(state))
                pause = float(os.environ.get(PAUSE_ENV) or 0)
                if pause > 0:
                    time.sleep(pause)
                for name in (_WEIGHTS, _STATE, _BEST):
                    if (tmp / name).is_file():
                        fsync_path(tmp / name)
                fsync_path(tmp)
                if final.exists():  # this epoch again (a resume re-trained it): the old one goes first
                    shutil.rmtree(final)
                os.rename(tmp, final)
                fsync_path(self.folder)
                for number, path in self._epochs():
                    if number < epoch:
                        shutil.rmtree(path, ignore_errors=True)
        except BaseException as exc:
            if tmp is not None and tmp.exists():  # not published: the write failed (a signal pending or not)
                shutil.rmtree(tmp, ignore_errors=True)
            elif isinstance(exc, stopping.Stopped):  # raised at the block's end, once the backup is published
                log.info("%s came during the backup of epoch %d (%s); it was finished first", stopping.signal_name(exc.signum), epoch + 1, final)
            raise

    def publish_checkpoint(self, target: Path) -> bool:
        """Publish the best epoch's weights as `target` (the trial's checkpoint), atomically; False when there is none."""
        latest = self.latest()
        best = latest / _BEST if latest is not None else None
        if best is None or not best.is_file():
            return False
        with stopping.deferred():
            publish_file(target, lambda tmp: copy_or_link(best, tmp), suffix=".weights.h5")
        return True
