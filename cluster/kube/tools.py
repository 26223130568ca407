"""Every call to kind, docker, helm and kubectl goes through `run_tool`.

One place resolves the executable (the project's pinned `.tools/bin` first, then
PATH) and turns a missing tool or a failed call into a one-line `LauncherError`,
so commands stay thin and tests can put fake executables first on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cluster.errors import LauncherError

__all__ = ["ToolResult", "find_tool", "run_tool", "run_tool_with_stdin", "tool_dirs"]

# The repository root when the package is installed editable (`make install`).
_REPO_ROOT = Path(__file__).resolve().parents[2]


def tool_dirs() -> list[Path]:
    """Folders searched before PATH: `$TUNECTL_TOOLS_DIR`, else `.tools/bin` here and in the repo."""
    override = os.environ.get("TUNECTL_TOOLS_DIR")
    if override is not None:
        return [Path(p) for p in override.split(os.pathsep) if p]
    return [Path.cwd() / ".tools" / "bin", _REPO_ROOT / ".tools" / "bin"]


def find_tool(name: str) -> str | None:
    """The executable's path, or None when neither `.tools/bin` nor PATH has it."""
    for folder in tool_dirs():
        found = shutil.which(name, path=str(folder))
        if found:
            return found
    return shutil.which(name)


class ToolResult:
    """What a finished call printed; `stdout` is empty for a streamed call."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _last_line(text: str) -> str:
    """The line that names the failure: the last `error:` line (kind and helm add stack traces after it)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "fatal"))]
    return (errors or lines or [""])[-1]


def run_tool(
    name: str,
    *args: str,
    stream: bool = False,
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
) -> ToolResult:
    """Run `name args...` and return what it printed.

    `stream=True` lets stdout through to the terminal and echoes stderr line by
    line while it runs (builds and cluster creation take minutes); either way
    the last stderr line names the failure. `check=False` returns a failed call
    instead of raising, for probes such as `kind get clusters` or `docker info`.
    """
    path = find_tool(name)
    if path is None:
        raise LauncherError(f"{name} not found on PATH; run `tunectl doctor`")
    argv = [path, *args]
    try:
        if stream:
            result = _run_streamed(argv, timeout)
        else:
            done = subprocess.run(
                argv, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
            )
            result = ToolResult(argv, done.returncode, done.stdout, done.stderr)
    except subprocess.TimeoutExpired:
        raise LauncherError(f"`{name} {' '.join(args)}` did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise LauncherError(f"cannot run {path}: {exc.strerror or exc}") from None
    if check and not result.ok:
        reason = _last_line(result.stderr) or _last_line(result.stdout) or f"exit status {result.returncode}"
        raise LauncherError(f"{name} {args[0] if args else ''} failed: {reason}".replace("  ", " "))
    return result


def _run_streamed(argv: list[str], timeout: float | None) -> ToolResult:
    seen: list[str] = []
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            seen.append(line)
        returncode = proc.wait(timeout=timeout)
    return ToolResult(argv, returncode, "", "".join(seen))


def run_tool_with_stdin(name: str, *args: str, write: Callable[[BinaryIO], None]) -> ToolResult:
    """Run `name args...` while `write(stdin)` streams its input (a tar of a dataset, say).

    Raises LauncherError, like `run_tool`, when it fails.
    """
    path = find_tool(name)
    if path is None:
        raise LauncherError(f"{name} not found on PATH; run `tunectl doctor`")
    argv = [path, *args]
    out: dict[str, bytes] = {}
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=lambda key, stream: out.__setitem__(key, stream.read()), args=(key, stream), daemon=True)
            for key, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for reader in readers:
            reader.start()
        try:
            write(proc.stdin)
        except BrokenPipeError:
            pass  # the tool stopped reading: its exit status and stderr say why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        returncode = proc.wait()
        for reader in readers:
            reader.join()
    result = ToolResult(argv, returncode, out.get("stdout", b"").decode(errors="replace"), out.get("stderr", b"").decode(errors="replace"))
    if not result.ok:
        reason = _last_line(result.stderr) or _last_line(result.stdout) or f"exit status {returncode}"
        raise LauncherError(f"{name} {args[0] if args else ''} failed: {reason}".replace("  ", " "))
    return result
