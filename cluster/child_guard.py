"""The children of `tunectl local` stop when it dies, even by SIGKILL.

`python -m cluster.child_guard PARENT_PID -- COMMAND...` asks Linux to send it
SIGTERM when its parent dies (`prctl(PR_SET_PDEATHSIG)`), checks that its
parent is still PARENT_PID (the launcher may have died before the request
was made), then becomes COMMAND by exec: the same pid, and the request
survives the exec. The launcher starts every child through it: the chief and
the workers take SIGTERM as a stop (they leave their files whole), and
TensorBoard exits on it.

Linux sends the signal when the *thread* that started the child ends, so the
launcher starts its children from its main thread only. Elsewhere than Linux
the guard execs COMMAND without asking.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import NoReturn

__all__ = ["guarded", "main"]

_PR_SET_PDEATHSIG = 1


def guarded(argv: list[str]) -> list[str]:
    """`argv`, run through the guard with this process as the parent to outlive."""
    return [sys.executable, "-m", "cluster.child_guard", str(os.getpid()), "--", *argv]


def main(args: list[str]) -> NoReturn:
    """Ask for SIGTERM on the parent's death, then exec the command (`PARENT_PID -- COMMAND...`)."""
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: python -m cluster.child_guard PARENT_PID -- COMMAND...", file=sys.stderr)
        raise SystemExit(2)
    parent, command = int(args[0]), args[2:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            print(f"child_guard: prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        if os.getppid() != parent:  # the launcher died before the request: nothing to run for
            raise SystemExit(128 + signal.SIGTERM)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
