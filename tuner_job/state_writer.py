"""The chief's state writer: a child process that puts each group of state on disk.

Why a process and not a thread: under load the chief's event loop holds the GIL
almost all the time. A writer *thread* gives the GIL up for every syscall (open,
write, fsync, rename) and must wait to take it back, up to the interpreter's
switch interval (5 ms) each time, while stealing the loop's time when it does.
Measured with 256 simulated workers, that made file writing the largest cost of
the chief (see bench/README.md). A child has its own interpreter: the loop hands
it one pickled group per commit (one `os.write`) and the files are written on
another core.

What is durable, and when (the journal is a write-ahead log):
- `tuner/journal.jsonl` is the record: one line per trial handed out (with its
  owner) and per trial finished, appended and fsynced. That is the only fsync
  a group waits for.
- `oracle.json` (and `status.json` when due) are then replaced atomically,
  without an fsync, before the group counts as written: a killed chief leaves
  them current.
- Trial files (`trial_<id>/trial.json`) are checkpoints, replaced atomically
  after the reply, while no group waits, and at most `CHECKPOINT_LAG` seconds
  after their group however busy the chief is. A restart reads each trial from the journal where its last
  line is newer (a finished trial, or a file that is missing or torn), and
  after a crash of the machine takes owners the journal has but a stale
  `oracle.json` lacks (`StateStore.load`, `OracleServer.restore`).

Contract:
- `write_group(group, durable)` writes one group in that order; `durable=True`
  (start-up, shutdown) fsyncs every file too. The child and the chief's
  synchronous paths (start-up, shutdown, fallback) share it.
- `StateWriter` is the chief's end. `await write(group)` returns once the group
  is written as above. If the child is gone (killed, out of memory) the group is
  written in-process instead, from then on, with one warning: slower, never lost.
- Wire (child's stdin -> stdout): a 4-byte big-endian length + a pickled
  `Group` as a tuple; one reply line per group, in order: `ok` or
  `error <message>`.
- The child ignores SIGINT and SIGTERM and exits when its stdin closes, that
  is when the chief exits, however it dies, after finishing the group at hand.
- Fencing (`chief_lease`): given the chief's `Fence`, the child checks it
  before each group and each checkpoint it writes. When another chief holds a
  newer epoch it writes nothing more: it answers `fenced <message>` and exits
  4; the chief then leaves too (`chief_lease.lose`). The chief's in-process
  writes check the same fence.
- Stdlib only (plus `tuner_job.layout`, `chief_lease`): the child starts in tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner_job.chief_lease import Fence
from tuner_job.errors import EXIT_LEASE_LOST
from tuner_job.layout import atomic_write_text

__all__ = ["Group", "StateWriter", "write_group"]

log = logging.getLogger("tuner_job.chief")

_HEADER = struct.Struct(">I")
_PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ: a large group goes over in one write
_F_SETPIPE_SZ = 1031
CHECKPOINT_LAG = 1.0  # seconds a trial file may lag the journal while groups keep coming


@dataclass
class Group:
    """One commit's files: the journal, then `after`, then the `trials` checkpoints.

    Contents are JSON-able objects (dicts of plain values), serialized by
    whoever writes them: on the loop they are only pickled, which is several
    times cheaper than encoding JSON. Pickling (or `as_text()`) snapshots
    them, so the loop may change the originals afterwards.
    """

    trials: dict[str, Any] = field(default_factory=dict)  # path -> object (checkpoints)
    journal: tuple[str, list[Any]] | None = None  # path, objects to append as lines
    after: dict[str, Any] = field(default_factory=dict)  # path -> object

    def as_text(self) -> Group:
        """The same group with every object encoded now."""
        return Group(
            {path: _text(obj) for path, obj in self.trials.items()},
            None if self.journal is None else (self.journal[0], [_text(obj) for obj in self.journal[1]]),
            {path: _text(obj) for path, obj in self.after.items()},
        )


def _text(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj)


def _append_lines(path: str, objects: list[Any]) -> None:
    """Append whole lines with one write where the system allows, then fsync.

    A kill mid-append can still leave a torn last line; `StateStore.load`
    cuts it off before anything is appended after it.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = "".join(_text(obj) + "\n" for obj in objects).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_record(group: Group, durable: bool = False) -> None:
    """The part of a group an RPC waits for: the journal (fsynced), then `after`."""
    if group.journal is not None and group.journal[1]:
        _append_lines(*group.journal)
    for path, obj in group.after.items():
        atomic_write_text(Path(path), _text(obj), fsync=durable)


def write_checkpoints(group: Group, durable: bool = False) -> None:
    """The trial files of a group, each replaced atomically."""
    for path, obj in group.trials.items():
        atomic_write_text(Path(path), _text(obj), fsync=durable)


def write_group(group: Group, durable: bool = False) -> None:
    """All of a group, in order; `durable`: every file fsynced (start-up, shutdown)."""
    write_record(group, durable)
    write_checkpoints(group, durable)


class WriterGone(RuntimeError):
    pass


class StateWriter:
    """The chief's end of the writer child; used from the event loop's thread only.

    Args:
        fence: the chief's lease (`ChiefLease.fence`): checked before every write; None writes unchecked.
    """

    def __init__(self, fence: Fence | None = None) -> None:
        self.fence = fence
        self._proc: subprocess.Popen[bytes] | None = None
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._replies = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reaped: subprocess.Popen[bytes] | None = None  # a stopped child, to wait for

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child (it imports nothing heavy); writes go to it from now on."""
        if self._proc is not None:
            return
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        fence = [] if self.fence is None else [self.fence.folder, str(self.fence.epoch), self.fence.run]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tuner_job.state_writer", *fence], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            import fcntl

            fcntl.fcntl(self._proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass  # the default size works too: a large group takes a few writes
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._proc.stdout.fileno(), self._on_reply)

    async def write(self, group: Group) -> None:
        """Return once `group` is on disk."""
        if self._proc is not None:
            try:
                await self._send(group)
                return
            except WriterGone:
                pass  # `_gone` warned; this group and the next are written here
        if self.fence is not None:
            self.fence.check()
        await asyncio.to_thread(write_group, group.as_text())  # encoded before the loop goes on

    async def _send(self, group: Group) -> None:
        assert self._proc is not None and self._proc.stdin is not None and self._loop is not None
        payload = pickle.dumps((group.trials, group.journal, group.after), protocol=pickle.HIGHEST_PROTOCOL)
        future = self._loop.create_future()
        self._waiting.append(future)
        try:
            self._proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            self._gone(f"cannot send to it: {exc}")
        await future

    def _on_reply(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            data = os.read(self._proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._gone(f"it exited with code {self._proc.poll()}")
            return
        self._replies += data
        *lines, self._replies = self._replies.split(b"\n")
        for line in lines:
            if line.startswith(b"fenced "):
                if self.fence is not None:
                    self.fence.check()  # the child saw a newer epoch: this process leaves (exit 4)
                if not self._waiting:
                    continue
            future = self._waiting.popleft()
            if future.done():
                continue
            if line == b"ok":
                future.set_result(None)
            else:
                future.set_exception(OSError(line.decode(errors="replace").removeprefix("error ")))

    def _gone(self, reason: str) -> None:
        """The child is gone: say so once, fail what waits on it, write in-process from now on."""
        log.warning("the state writer process is gone (%s); the chief writes its state itself from now on", reason)
        self._stop_reading()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(WriterGone(reason))

    def _stop_reading(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if self._loop is not None and proc.stdout is not None:
            try:
                self._loop.remove_reader(proc.stdout.fileno())
            except (ValueError, OSError):
                pass
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._reaped = proc

    def close(self) -> None:
        """Close the child's stdin: it finishes the group at hand and exits."""
        self._stop_reading()
        proc, self._reaped = self._reaped, None
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _frames(buffer: bytearray) -> list[bytes]:
    """Take every complete frame off the front of `buffer`."""
    frames = []
    while len(buffer) >= _HEADER.size:
        size = _HEADER.unpack_from(buffer)[0]
        if len(buffer) < _HEADER.size + size:
            break
        frames.append(bytes(buffer[_HEADER.size:_HEADER.size + size]))
        del buffer[:_HEADER.size + size]
    return frames


def _checkpoint(path: str, obj: Any) -> None:
    try:
        atomic_write_text(Path(path), _text(obj), fsync=False)
    except Exception as exc:  # the journal has it; say so and go on
        print(f"state writer: the checkpoint {path} was not written: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """The child: `python -m tuner_job.state_writer [LEASE_FOLDER EPOCH RUN]` (with them, fenced)."""
    # The chief decides when this process ends: it exits when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    fence = Fence(args[0], int(args[1]), args[2]) if args else None
    source, sink = sys.stdin.fileno(), sys.stdout.buffer

    def fenced() -> bool:
        """Whether a newer chief holds the run: then say so to the chief, and write nothing more."""
        newer = fence.newer() if fence is not None else None
        if newer is not None:
            sink.write(f"fenced run {fence.run} is held by the {newer.describe()}\n".encode())
            sink.flush()
        return newer is not None

    buffer = bytearray()
    # Trial checkpoints not yet written, newest per file. A group waits for no
    # checkpoint: they are written while no group waits, so a trial's start
    # and end often make one write.
    pending: dict[str, Any] = {}
    oldest = 0.0  # when the oldest pending checkpoint came: none waits more than CHECKPOINT_LAG
    while True:
        for frame in _frames(buffer):
            group = Group(*pickle.loads(frame))
            if fenced():
                return EXIT_LEASE_LOST
            try:
                write_record(group)
                reply = b"ok\n"
                if group.trials and not pending:
                    oldest = time.monotonic()
                pending.update(group.trials)
            except Exception as exc:  # a full or read-only volume: the chief reports it
                reply = ("error " + f"{type(exc).__name__}: {exc}".replace("\n", " ")).encode() + b"\n"
            sink.write(reply)
            sink.flush()
        if pending and time.monotonic() - oldest > CHECKPOINT_LAG:
            if fenced():
                return EXIT_LEASE_LOST
            for path, obj in pending.items():  # groups keep coming: write them all now
                _checkpoint(path, obj)
            pending.clear()
        if pending and not select.select([source], [], [], 0)[0]:
            if fenced():
                return EXIT_LEASE_LOST
            _checkpoint(*pending.popitem())
            continue
        data = os.read(source, _PIPE_BYTES)
        if not data:  # the chief is gone: finish the checkpoints, then go
            if pending and fenced():
                return EXIT_LEASE_LOST
            for path, obj in pending.items():
                _checkpoint(path, obj)
            return 0
        buffer += data


if __name__ == "__main__":
    raise SystemExit(main())
