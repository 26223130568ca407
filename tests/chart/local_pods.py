"""Run the chart's rendered chief and worker containers as local processes.

Only what a cluster provides is swapped for a local stand-in:

- the chief Service's DNS name (the workers' KERASTUNER_ORACLE_IP) and the
  chief's bind address 0.0.0.0 become 127.0.0.1 (tests bind loopback only);
- the oracle port is a free port, rendered through the chart's `chief.port`;
- every mount (the shared volume, /config, /tmp) becomes a local folder,
  wherever its path occurs in the environment; /config holds the rendered
  ConfigMap's search.yaml;
- `python` in the container's command becomes this interpreter.

Command, args, the rest of the environment and JOB_COMPLETION_INDEX per
worker are the chart's. `LocalPods` starts such processes ("pods"), stops
them by pid (SIGTERM, as the kubelet does) and kills what is left at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import free_port

__all__ = ["LocalPods", "free_port", "swap_paths"]


def swap_paths(value: str, mounts: dict[str, Path]) -> str:
    """Replace each mount path (a whole path or a path prefix) in `value` by its local folder, in one pass."""
    if not mounts:
        return value
    alternatives = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/.-])({alternatives})(?=/|$|[:;,\s])")
    return pattern.sub(lambda m: str(mounts[m.group(1)]), value)


def _local_command(proc: dict[str, Any], mounts: dict[str, Path]) -> list[str]:
    command = list(proc["command"]) + list(proc["args"])
    assert command, f"{proc['name']}: the chart renders no command"
    assert command[0] in ("python", "python3"), command
    return [sys.executable] + [swap_paths(part, mounts) for part in command[1:]]


def _local_env(proc: dict[str, Any], mounts: dict[str, Path], port: int) -> dict[str, str]:
    env = dict(os.environ)
    # The image has no such variables; the host's must not leak into the run.
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "TUNER_CONFIG", "TUNER_SHARED_DIR", "JOB_COMPLETION_INDEX"):
        env.pop(name, None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update({name: swap_paths(value, mounts) for name, value in proc["env"].items()})
    assert env["KERASTUNER_ORACLE_PORT"] == str(port)
    env["KERASTUNER_ORACLE_IP"] = "127.0.0.1"
    return env


class LocalPods:
    """Rendered containers (from `rendered_containers`) as processes sharing one folder as the volume.

    `shared` is the shared volume, `root` a scratch folder (config, /tmp per
    process, logs), `port` the oracle port the chart was rendered with.
    """

    def __init__(self, shared: Path, root: Path, port: int) -> None:
        self.shared, self.root, self.port = shared, root, port
        self.config_dir = root / "config"
        self.config_dir.mkdir(parents=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def _mounts(self, name: str, proc: dict[str, Any]) -> dict[str, Path]:
        local: dict[str, Path] = {}
        for path, mount in proc["mounts"].items():
            source = mount["source"]
            if "configMap" in source:
                local[path] = self.config_dir
            elif "emptyDir" in source:
                local[path] = self.root / "emptydir" / name / mount["volume"]
                local[path].mkdir(parents=True)
            else:  # the shared volume: a PVC or a host folder
                assert mount["volume"] == "shared" and not mount["read_only"], (path, mount)
                local[path] = self.shared
        assert self.config_dir in local.values() and self.shared in local.values(), proc["mounts"]
        return local

    def start(self, name: str, proc: dict[str, Any], search_yaml: str) -> None:
        """Start the rendered container `proc` as process `name`, with the rendered ConfigMap's `search_yaml`."""
        assert name not in self.procs, f"{name} started twice"
        mounts = self._mounts(name, proc)
        (self.config_dir / "search.yaml").write_text(search_yaml)
        env = _local_env(proc, mounts, self.port)
        assert Path(env["TUNER_CONFIG"]) == self.config_dir / "search.yaml"
        assert Path(env["TUNER_SHARED_DIR"]) == self.shared
        workdir = self.root / "workdir" / name
        workdir.mkdir(parents=True)
        cwd = swap_paths(proc["working_dir"], mounts) if proc.get("working_dir") else workdir
        self.logs[name] = self.root / f"{name}.log"
        with open(self.logs[name], "wb") as handle:
            self.procs[name] = subprocess.Popen(_local_command(proc, mounts), env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)

    def sigterm(self, name: str) -> None:
        """SIGTERM, as the kubelet stops the container of a deleted pod (`wait_all` collects the exit)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def wait_all(self, deadline: float, names: list[str] | None = None) -> dict[str, int | None]:
        """Exit status of each process (None: still running at `deadline`, a time.monotonic() value)."""
        codes: dict[str, int | None] = {}
        for name in names if names is not None else list(self.procs):
            try:
                codes[name] = self.procs[name].wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = None
        return codes

    def all_logs(self, tail: int = 4000) -> str:
        return "\n".join(f"===== {name}\n{path.read_text(errors='replace')[-tail:]}" for name, path in self.logs.items())

    def kill_all(self) -> None:
        """Kill, by pid, every process still running."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
