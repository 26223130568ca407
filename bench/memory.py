"""A process's anonymous memory, read from `/proc/<pid>/status` (Linux), and its peak over a run.

RssAnon is the memory a process holds of its own (heap, copies); the pages of
a memory-mapped file count under RssFile instead: the kernel's page cache,
shared by every process that maps the file, and dropped under pressure. The
kernel keeps no peak of RssAnon (VmHWM counts both), so `run_sampled` polls
it from outside while the process runs.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_anon_bytes(pid: int | str = "self") -> int | None:
    """RssAnon of `pid` (default: this process) in bytes, None once it is gone."""
    return _status_kib(pid, "RssAnon")


def rss_file_bytes(pid: int | str = "self") -> int | None:
    """RssFile of `pid` in bytes: its resident pages of mapped files (shared page cache)."""
    return _status_kib(pid, "RssFile")


@dataclass
class SampledRun:
    returncode: int
    output: str
    seconds: float
    peak_rss_anon_bytes: int
    peak_rss_file_bytes: int
    samples: int


def run_sampled(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Any = None, timeout: float = 600, interval: float = 0.01) -> SampledRun:
    """Run `cmd`, polling its RssAnon and RssFile every `interval` seconds; its output comes back merged.

    Raises:
        subprocess.TimeoutExpired: it ran longer than `timeout` (it is killed first).
    """
    started = time.monotonic()
    peak_anon = peak_file = samples = 0
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read() if proc.stdout else b""), daemon=True)
        reader.start()
        while proc.poll() is None:
            if time.monotonic() - started > timeout:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(cmd, timeout, output=b"".join(chunks))
            anon, file = rss_anon_bytes(proc.pid), rss_file_bytes(proc.pid)
            if anon is not None:
                peak_anon, peak_file, samples = max(peak_anon, anon), max(peak_file, file or 0), samples + 1
            time.sleep(interval)
        reader.join(30)
    return SampledRun(proc.returncode, b"".join(chunks).decode(errors="replace"), time.monotonic() - started, peak_anon, peak_file, samples)
