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


def default_sigint() -> None:
    """`preexec_fn` for a child a test stops with Ctrl-C: SIGINT back to its default.

    A suite started in the background by a non-interactive shell runs with
    SIGINT ignored (POSIX), which every child inherits, and Python installs no
    KeyboardInterrupt handler then: the child would never see the test's Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        "chief_lease_seconds": 5,  # a chief killed by a test is replaced within seconds
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


#: A hypermodel for fault tests: the built-in CNN behind a layer that sleeps
#: FAULT_SLEEP seconds per training batch (eager, so at every batch), raises
#: when FAULT_FAIL=1, and whose build ends the process with exit 70 in the
#: worker named by FAULT_CRASH_TUNER (a worker that crashes at every start).
FAULT_HYPERMODEL = '''
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
    if os.environ.get("FAULT_CRASH_TUNER") and os.environ.get("KERASTUNER_TUNER_ID") == os.environ["FAULT_CRASH_TUNER"]:
        os._exit(70)
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


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file's size and mtime, every folder's existence under `root`: equal snapshots mean nothing was lost or changed.

    A folder's own mtime is left out: it moves with a lock file that comes and goes. Paths
    with a part named in `skip` are left out (`.cache`: a search that ran adds the dataset's cache).
    """
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
        for p in sorted(root.rglob("*"))
        if not set(p.relative_to(root).parts) & set(skip)
    }


def error_lines(text: str) -> list[str]:
    """The `error: ...` lines of a process's output (a bad input prints exactly one)."""
    return [line for line in text.splitlines() if line.startswith("error: ")]


# `python -m tuner_job`'s main, then one last stderr line: whether TensorFlow was ever imported.
_MAIN_REPORTING_TF = (
    "import sys; from tuner_job.__main__ import main; code = main(); "
    "print('tensorflow imported' if 'tensorflow' in sys.modules else 'tensorflow not imported', file=sys.stderr); sys.exit(code)"
)


def run_chief_once(shared: Path, config_file: Path, port: int, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """The chief's main, with the environment the chart gives it, waited for; its output captured.

    stderr ends with `tensorflow imported` or `tensorflow not imported`.
    """
    environ = {**os.environ, **process_env(CHIEF_ID, "127.0.0.1", port, str(config_file), str(shared)), "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, "-c", _MAIN_REPORTING_TF], env=environ, capture_output=True, text=True, timeout=timeout, cwd=REPO)


# --- a real TensorBoard on a free loopback port ------------------------------------------------------


class TensorBoardProcess:
    """`tensorboard --logdir LOGDIR` on a free 127.0.0.1 port, stopped by pid at the end (a context manager)."""

    def __init__(self, logdir: Path, *extra: str, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.port),
                "--reload_interval", "1", *extra]  # fmt: skip
        self.log = log or logdir.parent / f"tensorboard-{self.port}.log"
        with open(self.log, "wb") as handle:
            self.proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    def __enter__(self) -> TensorBoardProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_for_http(url: str, timeout: float, accept: Any = lambda body: True) -> bytes:
    """GET `url` until it answers 200 with a body `accept` likes; the body (pytest.fail after `timeout` s)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read()
                if accept(body):
                    return body
                last = body[:300]
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer as expected within {timeout}s: {last!r}")


def hparams_rows(url: str) -> dict[str, dict[str, float]]:
    """The HParams table as TensorBoard's plugin API serves it: `{session group (row) name: {metric tag: value}}`."""
    import json
    import urllib.request

    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 1000,
    }
    http = urllib.request.Request(
        f"{url}/data/plugin/hparams/session_groups", data=json.dumps(request).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(http, timeout=30) as response:
        groups = json.loads(response.read())["sessionGroups"]
    return {g["name"]: {m["name"]["tag"]: m["value"] for m in g.get("metricValues", [])} for g in groups}


def hparams_experiment(url: str) -> dict[str, Any]:
    """The HParams experiment (hyperparameters and metrics) TensorBoard serves."""
    import json
    import urllib.request

    http = urllib.request.Request(
        f"{url}/data/plugin/hparams/experiment", data=b'{"experimentName": ""}', headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(http, timeout=30) as response:
        return json.loads(response.read())


def wait_for_rows(url: str, expected: set[str], timeout: float) -> dict[str, dict[str, float]]:
    """The HParams rows once every expected row has its score (TensorBoard loads event files in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = hparams_rows(url)
        if (set(rows) == expected and all("score" in r for r in rows.values())) or time.monotonic() > deadline:
            return rows
        time.sleep(1)
