"""Where everything lives on the shared volume (see DESIGN.md, "The shared volume").

Pure Python, no TensorFlow: the launcher (`tunectl results`) reads runs with it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RunPaths",
    "WARM_PREFIX",
    "WARM_START_LABEL",
    "atomic_output",
    "atomic_write_text",
    "atomic_write_json",
    "publish_file",
    "copy_or_link",
    "fsync_path",
    "read_json",
]

#: A trial seeded from an earlier run is `WARM_PREFIX + <its id there>` (the
#: oracle's own ids are numbers) and carries `WARM_START_LABEL + <run>` as its
#: message; the leaderboard shows that where a worker would be.
WARM_PREFIX = "w"
WARM_START_LABEL = "warm-start:"


@dataclass(frozen=True)
class RunPaths:
    """The folders and files of one run: `<shared>/runs/<run>/...`."""

    shared_dir: Path
    run: str

    @property
    def runs_dir(self) -> Path:
        return self.shared_dir / "runs"

    @property
    def root(self) -> Path:
        return self.runs_dir / self.run

    @property
    def config(self) -> Path:
        return self.root / "search.yaml"

    @property
    def tuner(self) -> Path:
        """KerasTuner's project folder: oracle.json and trial_<id>/trial.json."""
        return self.root / "tuner"

    @property
    def journal(self) -> Path:
        """The chief's write-ahead log: one JSON line per trial handed out and per trial ended."""
        return self.tuner / "journal.jsonl"

    @property
    def oracle_json(self) -> Path:
        """The oracle's own state (KerasTuner's format, less what the trials hold)."""
        return self.tuner / "oracle.json"

    def trial_dir(self, trial_id: str) -> Path:
        return self.tuner / f"trial_{trial_id}"

    def checkpoint(self, trial_id: str) -> Path:
        """Weights of the trial's best epoch (Hyperband continues from them)."""
        return self.trial_dir(trial_id) / "checkpoint.weights.h5"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def trial_logs(self, trial_id: str) -> Path:
        return self.logs / f"trial_{trial_id}"

    def backup(self, trial_id: str) -> Path:
        """The trial's per-epoch state (`trial_backup`), one folder per execution."""
        return self.root / "backup" / f"trial_{trial_id}"

    @property
    def chief_lease(self) -> Path:
        """The chief's lease on the run (`chief_lease`): one `epoch-<n>.json` per chief that held it."""
        return self.root / "chief-lease"

    @property
    def errors(self) -> Path:
        return self.root / "errors"

    def error_file(self, trial_id: str) -> Path:
        return self.errors / f"trial_{trial_id}.txt"

    @property
    def attempts(self) -> Path:
        """One JSON-lines file per worker: each trial start, epoch and end it saw."""
        return self.root / "attempts"

    def attempts_file(self, tuner_id: str) -> Path:
        return self.attempts / f"{tuner_id}.jsonl"

    @property
    def status(self) -> Path:
        """Written by the chief: state, trials done of max, best so far."""
        return self.root / "status.json"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def best(self) -> Path:
        return self.root / "best"


@functools.cache
def _umask() -> int:
    """The process's umask, read once, without changing it (Linux reports it in /proc; elsewhere set and restore).

    Read once: the chief's state writer publishes hundreds of files a second, and no process of ours changes its umask.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread-safe, hence only where /proc says nothing
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temp path beside `path` to write; on success it becomes `path` by one rename, else it is removed.

    The file gets the mode a plain `open(path, "w")` would give (0666 less
    the umask, so 0644 as a rule): `tempfile.mkstemp` creates it 0600, which
    would hide results from the other users of a shared volume.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so that a rename in it survives a crash of the machine)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is atomic anyway
    finally:
        os.close(fd)


def publish_file(path: Path, write: Callable[[Path], None], suffix: str = ".tmp", fsync: bool = True) -> None:
    """Publish `path` atomically: `write(tmp)` writes a temp file beside it, which is fsynced and renamed over it.

    A kill at any moment leaves the old file or the new one, never a torn one;
    with `fsync`, the folder is fsynced too, so a crash of the machine does as
    well. `suffix` ends the temp file's name (Keras wants `.keras` or
    `.weights.h5`). Whatever `write` raises is raised, and the temp file removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as `open(path, "w")` would: mkstemp's 0600 hides it from the volume's other users
    finally:
        os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_path(path.parent)


def copy_or_link(source: Path, target: Path) -> None:
    """Make `target` hold `source`'s bytes: a hard link where the file system allows, else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    """Write a file so that a reader never sees it half-written (`publish_file`).

    `fsync=False` is for files that another, fsynced record can rebuild (the
    chief's checkpoints, see `state_writer`): a killed process still leaves
    the old or the new file, and only a crash of the machine can lose the write.
    """
    publish_file(path, lambda tmp: tmp.write_text(text), fsync=fsync)


def atomic_write_json(path: Path, data: Any) -> None:
    """`atomic_write_text` of `data` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False))


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or torn."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
