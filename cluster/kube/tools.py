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
from pathlib import Path

from cluster.errors import LauncherError

__all__ = ["ToolResult", "find_tool", "run_tool", "tool_dirs"]

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
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


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
    last = ""
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.strip():
                last = line
        returncode = proc.wait(timeout=timeout)
    return ToolResult(argv, returncode, "", last)
