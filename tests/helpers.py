"""Helpers for the tests: a small search config, and real search processes on loopback.

`search` starts `python -m tuner_job` processes (chief and workers) with the
environment the chart gives its pods, on a free 127.0.0.1 port, logs each to a
file, and kills whatever is still running at the end of the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuner_job.contract import CHIEF_ID, process_env, worker_id

REPO = Path(__file__).resolve().parent.parent
SMALL_SIZE = (24, 16)

# A hypermodel file: the built-in CNN behind a layer that sleeps FAULT_SLEEP seconds
# per training batch (eagerly, so at every batch), or raises when FAULT_FAIL=1;
# so that a test can kill a worker *during* an epoch, or make every trial fail.
SLOW_HYPERMODEL = '''
import os
import time

import keras

from tuner_job.hypermodels import build_toonvision


@keras.saving.register_keras_serializable(package="faults")
class Sleep(keras.layers.Layer):
    """Sleeps FAULT_SLEEP seconds per training batch; raises when FAULT_FAIL=1."""

    def call(self, x, training=None):
        if training:
            if os.environ.get("FAULT_FAIL") == "1":
                raise RuntimeError("FAULT_FAIL: this hypermodel cannot train")
            time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
        return x


def build(hp, input_shape, num_classes):
    base = build_toonvision(hp, input_shape=input_shape, num_classes=num_classes)
    inputs = keras.Input(shape=input_shape)
    model = keras.Model(inputs, base(Sleep()(inputs)))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=True,
    )
    return model
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "run": "t",
        "data": "data/toonvision",
        "image_size": list(SMALL_SIZE),
        "max_trials": 4,
        "epochs": 1,
        "batch_size": 16,
        "lease_seconds": 30,
        "chief_wait_seconds": 60,
    }
    config.update(overrides)
    return config


class Search:
    """Real chief and worker processes for one test."""

    def __init__(self, shared: Path, workdir: Path, config: dict[str, Any]):
        self.shared = shared
        self.workdir = workdir
        self.config = config
        self.port = free_port()
        self.config_file = workdir / "search.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, list[Path]] = {}

    @property
    def run_dir(self) -> Path:
        return self.shared / "runs" / self.config["run"]

    def env(self, tuner_id: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(process_env(tuner_id, "127.0.0.1", self.port, str(self.config_file), str(self.shared)))
        env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def start(self, tuner_id: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        logs = self.logs.setdefault(tuner_id, [])
        log = self.workdir / f"{tuner_id}.{len(logs)}.log"
        logs.append(log)
        handle = open(log, "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuner_job", *args], env=self.env(tuner_id, **env), stdout=handle, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        handle.close()
        self.procs[tuner_id] = proc
        return proc

    def start_all(self, workers: int = 2, *chief_args: str) -> None:
        self.start(CHIEF_ID, *chief_args)
        for i in range(workers):
            self.start(worker_id(i))

    def wait(self, tuner_id: str, timeout: float = 180) -> int:
        try:
            return self.procs[tuner_id].wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{tuner_id} did not exit within {timeout}s; log:\n{self.log(tuner_id)[-3000:]}")

    def wait_all(self, timeout: float = 240) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        return {name: self.wait(name, max(1, deadline - time.monotonic())) for name in list(self.procs)}

    def kill(self, tuner_id: str) -> None:
        proc = self.procs[tuner_id]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def log(self, tuner_id: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs.get(tuner_id, []))

    def all_logs(self) -> str:
        return "\n".join(f"===== {name}\n{self.log(name)[-4000:]}" for name in self.logs)

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.all_logs()}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def trial_files(run_dir: Path) -> dict[str, dict[str, Any]]:
    import json

    return {p.parent.name.removeprefix("trial_"): json.loads(p.read_text()) for p in sorted((run_dir / "tuner").glob("trial_*/trial.json"))}


def attempt_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every worker's trial events (start, epoch, end), file by file, each in the order it wrote them."""
    import json

    events = []
    for file in sorted((run_dir / "attempts").glob("*.jsonl")):
        for line in file.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a worker stopped mid-line leaves a torn last line
    return events
