"""One chief per run: a lease on the shared volume, with epochs, renewal and fencing.

Two chiefs on one run folder (two Helm releases with the same `search.run` on
one volume, or a chief on a cut-off node still running while its Job starts
another) would both hand out trial ids from 0 and write the same files. So a
chief holds its run with a lease before it writes anything.

The lease is the run's folder `chief-lease/`: one file per chief that held the
run, `epoch-<n>.json`, naming its host, pid, address, a random token, the lease
it renews under and a renewal counter. The chief with the highest epoch holds
the run; only that chief ever writes its file.

- Claim: the file is written under a temp name, fsynced and hard-linked to
  `epoch-<n>.json` (n: the highest epoch + 1). link(2) fails when the name
  exists, on NFS too, so of two chiefs claiming one epoch exactly one wins and
  the other goes back to watching. `flock` is not relied on: NFS clients on
  different nodes need not honour it.
- Renewal: every `lease_seconds / 5` the holder rewrites its own file (temp,
  rename) with the counter + 1.
- Liveness is judged by the contender, on its own monotonic clock, from the
  holder's counter changing: no clock of another host is ever compared, so
  skew between the nodes' clocks does not matter.
- A contender that finds a holder says so in one line and watches it. A holder
  that goes (its file says `released`: a chief that stops writes it) is
  replaced at once. No renewal for a whole lease: the holder is dead, and the
  contender takes over with the next epoch. A renewal seen after a whole lease
  of watching: the holder is alive, and the contender raises `RunHeldError`
  (exit 2) naming it. So it waits one lease, at most two if the holder dies
  while watched.
- Fencing: before each write of the run's state the writer asks `Fence.newer`
  whether a higher epoch exists: the chief's state-writer process before each
  group, the chief before each write of its own, its renewal thread every
  renewal. A chief that finds one (it was paused or cut off past its lease,
  and another took over) logs one line and leaves at once with exit 4
  (`lose`): no `finally`, no flush, nothing more written.
- A check and the write after it are two steps: a chief paused between them for
  a whole lease could still write once after a takeover. Closing that gap
  needs fencing tokens checked by the storage itself, which a shared file
  system does not offer.
- Needs the volume's close-to-open consistency (NFS's default; not `nocto`): a
  file opened, or a folder listed, shows what another client wrote before.

Stdlib only: the state-writer process imports it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

from tuner_job import stopping
from tuner_job.errors import EXIT_LEASE_LOST, RunHeldError
from tuner_job.layout import RunPaths, atomic_write_text, fsync_path

__all__ = ["ChiefLease", "Fence", "Holder", "current_holder", "lose", "RENEWALS_PER_LEASE"]

log = logging.getLogger("tuner_job.chief")

#: Renewals per lease: a holder renews every `lease_seconds / RENEWALS_PER_LEASE`.
RENEWALS_PER_LEASE = 5
_PREFIX, _SUFFIX = "epoch-", ".json"


@dataclass(frozen=True)
class Holder:
    """What one epoch's file says (`token` is empty when the file cannot be read)."""

    epoch: int
    host: str = "?"
    pid: int = 0
    address: str = "?"
    token: str = ""
    counter: int = 0
    lease_seconds: float = 0.0
    released: bool = False

    def describe(self) -> str:
        """`chief on host (pid 12, address 10.0.0.5:8000, epoch 3)`."""
        return f"chief on {self.host} (pid {self.pid}, address {self.address}, epoch {self.epoch})"


def _epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"{_PREFIX}{epoch:06d}{_SUFFIX}"


def _epochs(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    middles = (name[len(_PREFIX) : -len(_SUFFIX)] for name in names if name.startswith(_PREFIX) and name.endswith(_SUFFIX))
    return sorted(int(middle) for middle in middles if middle.isdigit())


_FIELDS = tuple(Holder.__dataclass_fields__)


def _read(folder: Path, epoch: int) -> Holder:
    try:
        doc = json.loads(_epoch_file(folder, epoch).read_text())
        return Holder(**{**{k: v for k, v in doc.items() if k in _FIELDS}, "epoch": epoch})
    except (OSError, ValueError, TypeError, AttributeError):
        return Holder(epoch)  # torn or gone: no renewal can be seen in it


def current_holder(folder: Path) -> Holder | None:
    """The holder with the highest epoch in the lease folder `folder`, or None when no chief ever held the run."""
    epochs = _epochs(folder)
    return _read(folder, epochs[-1]) if epochs else None


def lose(run: str, epoch: int, newer: Holder) -> NoReturn:
    """Leave at once with exit 4: the `newer` holder took run `run` over from this chief (epoch `epoch`)."""
    message = f"run {run} was taken over by the {newer.describe()}; this chief (epoch {epoch}) stops serving and writes nothing more"
    try:
        log.error("%s", message)
        for handler in logging.getLogger().handlers:
            handler.flush()
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
    finally:  # whatever became of the output, leave
        os._exit(EXIT_LEASE_LOST)


@dataclass(frozen=True)
class Fence:
    """What a writer checks before each write: that no chief holds a newer epoch of the run.

    Args:
        folder: the run's lease folder (`RunPaths.chief_lease`), as a string (it crosses a pipe).
        epoch: this chief's epoch.
        run: the run's name, for the message.
    """

    folder: str
    epoch: int
    run: str

    def newer(self) -> Holder | None:
        """The holder of a newer epoch than ours, or None while we hold the run (one folder listing)."""
        epochs = _epochs(Path(self.folder))
        return _read(Path(self.folder), epochs[-1]) if epochs and epochs[-1] > self.epoch else None

    def check(self) -> None:
        """Return while we hold the run; else `lose` (exit 4, nothing more written)."""
        newer = self.newer()
        if newer is not None:
            lose(self.run, self.epoch, newer)


class ChiefLease:
    """This chief's lease on its run (see the module doc).

    Args:
        paths: the run.
        lease_seconds: how long a silent holder keeps the run (`chief_lease_seconds`).
        address: where this chief's oracle answers, for the other chief's message.
        poll_seconds: how often a contender reads the holder's file (default: a tenth of the lease, at most 1 s).

    Use: `acquire()` (blocks; raises `RunHeldError`; then renews on a daemon
    thread), `fence.check()` before each write, `release()` at the end.
    """

    def __init__(self, paths: RunPaths, lease_seconds: float, address: str, *, poll_seconds: float | None = None):
        self.folder = paths.chief_lease
        self.run = paths.run
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds or min(1.0, lease_seconds / 10)
        self.me = Holder(0, socket.gethostname(), os.getpid(), address, uuid.uuid4().hex, 0, lease_seconds)
        self.epoch: int | None = None
        self._counter = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fence(self) -> Fence:
        assert self.epoch is not None, "the lease is not held"
        return Fence(str(self.folder), self.epoch, self.run)

    def _doc(self, epoch: int, released: bool = False) -> str:
        holder = Holder(**{**asdict(self.me), "epoch": epoch, "counter": self._counter, "released": released})
        return json.dumps({**asdict(holder), "renewed_at": time.time()})

    def _claim(self, epoch: int) -> bool:
        """Create `epoch-<epoch>.json` if no one has; return whether we did (then renew it from now on)."""
        with stopping.deferred():  # a claim made is a claim known: `release()` can then undo it
            won = self._link(epoch)
        if won:
            self._thread = threading.Thread(target=self._renew_loop, name="chief-lease", daemon=True)
            self._thread.start()
        return won

    def _link(self, epoch: int) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = _epoch_file(self.folder, epoch)
        fd, tmp = tempfile.mkstemp(prefix=".claim-", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self._doc(epoch))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, target)
                won = True
            except FileExistsError:
                # NFS: a retried LINK whose first reply was lost answers EEXIST although it worked.
                won = os.stat(tmp).st_nlink == 2
            except OSError:  # no hard links on this volume: exclusive create (a reader may see it empty for a moment)
                won = self._create_exclusive(target, epoch)
        finally:
            Path(tmp).unlink(missing_ok=True)
        if won:
            fsync_path(self.folder)
            self.epoch = epoch
            for old in _epochs(self.folder):
                if old < epoch - 1:
                    _epoch_file(self.folder, old).unlink(missing_ok=True)
        return won

    def _create_exclusive(self, target: Path, epoch: int) -> bool:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(self._doc(epoch))
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> str:
        """Hold the run, and renew it from now on; return a line saying how (free, released by, taken over from whom).

        `on_wait(line)`, when given, is called once with the line saying whom this chief waits for.

        Raises:
            RunHeldError: another chief still renewed its lease after one whole lease of waiting (exit 2).
        """
        key: tuple[int, str, int] | None = None
        first_seen = last_change = 0.0
        while True:
            holder = current_holder(self.folder)
            if holder is None or holder.released:
                epoch = 1 if holder is None else holder.epoch + 1
                if self._claim(epoch):
                    how = "free" if holder is None else f"released by the {holder.describe()}"
                    return f"run {self.run}: this process holds it (epoch {epoch}; it was {how})"
                continue
            now = time.monotonic()
            wait = max(self.lease_seconds, holder.lease_seconds)
            if key is None:
                first_seen = last_change = now
                line = f"run {self.run} is held by the {holder.describe()}; waiting up to {wait:g} s (a lease) for it to go"
                log.info("%s", line)
                if on_wait is not None:
                    on_wait(line)
            elif (holder.epoch, holder.token, holder.counter) != key:
                last_change = now
                if now - first_seen >= wait:
                    raise RunHeldError(
                        f"run {self.run} is held by another chief: the {holder.describe()}, still renewing its lease after "
                        f"{now - first_seen:.0f} s; stop that chief, or give this search a run of its own (search.run)"
                    )
            key = (holder.epoch, holder.token, holder.counter)
            if now - last_change >= wait:
                if self._claim(holder.epoch + 1):
                    return (
                        f"run {self.run}: took it over from the {holder.describe()}, which did not renew its lease "
                        f"for {now - last_change:.0f} s; this chief holds epoch {holder.epoch + 1}"
                    )
                continue
            time.sleep(self.poll_seconds)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / RENEWALS_PER_LEASE):
            self.renew()

    def renew(self) -> None:
        """Check the fence (`lose` when a newer epoch exists), then rewrite our file with the counter + 1."""
        fence = self.fence
        fence.check()
        self._counter += 1
        try:
            atomic_write_text(_epoch_file(self.folder, fence.epoch), self._doc(fence.epoch), fsync=False)
        except OSError as exc:  # a volume hiccup: the next renewal tries again
            log.warning("run %s: could not renew the chief's lease: %s", self.run, exc)

    def release(self) -> None:
        """Stop renewing and mark the lease released, so the next chief need not wait (a no-op when not held)."""
        if self.epoch is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        fence, self.epoch = self.fence, None
        if fence.newer() is None:
            atomic_write_text(_epoch_file(self.folder, fence.epoch), self._doc(fence.epoch, released=True))
