"""`tunectl local`: the chief, N workers and TensorBoard as processes on this machine.

`LocalSearch` plays Kubernetes: it starts every process with the environment
the chart gives its pods, streams their logs with a role prefix, restarts a
crashed process under the same tuner id (bounded, like a Job's backoff), and
stops them all on Ctrl-C, SIGTERM or SIGHUP (exit 130, 143, 129). Before any
of them starts, `local_cmd.check_inputs` runs the chief's own checks (`python -m
tuner_job --check`): a mistake is one line and exit 2, not a chief start-up.

- A process stopped by a signal from outside (SIGTERM, SIGINT, SIGHUP sent to
  it alone) is restarted without counting against `--max-restarts`, as the
  chart's podFailurePolicy ignores disruptions.
- Every child runs under `child_guard`: if the launcher dies, even by SIGKILL,
  its children get SIGTERM and stop.
- Once the chief has a verdict (status.json: completed or failed) it is left
  to write its results and exit; the launcher's exit code is the chief's.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cluster import local_signals
from cluster.child_guard import guarded
from cluster.console import make_console
from tuner_job.config import SearchConfig, dump_config
from tuner_job.contract import CHIEF_ID, ENV_LAUNCHER, TENSORBOARD_PORT, process_env, worker_id
from tuner_job.errors import EXIT_BAD_INPUT, EXIT_LEASE_LOST, EXIT_OK, EXIT_SEARCH_FAILED
from tuner_job.layout import RunPaths, read_json
from tuner_job.progress import trials_done_of_max

__all__ = ["LocalSearch", "free_port"]

# Lines TensorFlow prints at every start that tell a user nothing.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl|I0000 |E0000 |W0000 |To enable the following instructions|.*oneDNN custom operations"
    r"|.*cuda_(dnn|blas|fft)|.*computation placer|.*Unable to register cu|.*rebuild TensorFlow with"
    # TensorBoard's note on its data server, three lines at every start.
    r'|NOTE: Using experimental fast data loading|\s+"--load_fast=false" and report|\s+https://github\.com/tensorflow/tensorboard/issues/4784'
    # gRPC's C++ core at INFO level (`I1130 01:27:38.876304 19181 chttp2_transport.cc:1403] ... Got goaway`): a
    # worker that dialled the chief while it prepared its data; the worker's own line says what happened.
    r"|I\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+\.cc:\d+\])"
)
_COLOURS = ["cyan", "green", "magenta", "yellow", "blue", "bright_cyan", "bright_green", "bright_magenta"]
_WORKERS_AFTER_CHIEF = 60.0  # seconds the workers get to leave once the chief exited with its verdict


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    colour: str
    restartable: bool = True
    process: subprocess.Popen[str] | None = None
    restarts: int = 0
    disruptions: int = 0  # restarts after a signal from outside, not counted against max_restarts
    exit_code: int | None = None
    reader: threading.Thread | None = None
    log_lines: list[str] = field(default_factory=list)


class LocalSearch:
    def __init__(
        self,
        config: SearchConfig,
        shared_dir: Path,
        workers: int,
        *,
        fresh: bool = False,
        port: int | None = None,
        tensorboard_port: int | None = TENSORBOARD_PORT,
        max_restarts: int = 3,
        console: Console | None = None,
        progress: bool = True,
        keep_tensorboard: bool = False,
    ):
        self.config = config
        self.shared_dir = shared_dir.resolve()
        if config.stages:
            # The chief runs the stages one after the other (`<run>-s1`, ...).
            from tuner_job.config import parse_stages, stage_run

            self.runs = [RunPaths(self.shared_dir, stage_run(config.run, i)) for i in range(1, len(parse_stages(config.stages)) + 1)]
        else:
            self.runs = [RunPaths(self.shared_dir, config.run)]
        self.paths = self.runs[0]
        self.workers = workers
        self.fresh = fresh
        self.port = port or free_port()
        self.tensorboard_port = tensorboard_port
        self.max_restarts = max_restarts
        self.console = console or make_console()
        self.show_progress = progress
        self.keep_tensorboard = keep_tensorboard  # left running by run(): see cluster.local_tensorboard
        self.tensorboard_kept = False
        self.children: dict[str, Child] = {}
        self._stopping = False
        self._chief_verdict_at: float | None = None
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="tunectl-")
        self.config_file = Path(self._tmp.name) / "search.yaml"
        self.config_file.write_text(dump_config(config))

    # ----- processes -----------------------------------------------------

    def _env(self, tuner_id: str) -> dict[str, str]:
        env = dict(os.environ)
        # Locally the chief binds loopback only.
        env.update(process_env(tuner_id, "127.0.0.1", self.port, str(self.config_file), str(self.shared_dir)))
        env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        env[ENV_LAUNCHER] = "1"  # our prefix names the role, and we print the results
        return env

    def _spawn(self, child: Child, note: str = "") -> None:
        child.process = subprocess.Popen(
            guarded(child.argv),  # from the main thread: the children's parent-death signal is tied to it
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops each child
        )
        child.exit_code = None
        self._print(child, f"started (pid {child.process.pid})" + (note or (f", restart {child.restarts}" if child.restarts else "")))
        child.reader = threading.Thread(target=self._pump, args=(child, child.process), daemon=True)
        child.reader.start()

    def _pump(self, child: Child, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line and not _NOISE.match(line):
                self._print(child, line)

    def _print(self, child: Child, line: str) -> None:
        with self._lock:
            # The line is the child's text, not markup: TensorFlow's device names (`[/job:localhost/...]`) look like closing tags.
            self.console.print(f"[{child.colour}]{child.name:>11} |[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)

    def _add(self, name: str, argv: list[str], env: dict[str, str], restartable: bool = True) -> Child:
        child = Child(name, argv, env, _COLOURS[len(self.children) % len(_COLOURS)], restartable)
        self.children[name] = child
        return child

    def start(self) -> None:
        python = sys.executable
        chief_argv = [python, "-m", "tuner_job"] + (["--fresh"] if self.fresh else [])
        self._spawn(self._add(CHIEF_ID, chief_argv, self._env(CHIEF_ID)))
        if self.fresh:
            self._wait_for_fresh_start()
        for i in range(self.workers):
            self._spawn(self._add(worker_id(i), [python, "-m", "tuner_job"], self._env(worker_id(i))))
        if self.tensorboard_port:
            logdir = self.paths.runs_dir
            logdir.mkdir(parents=True, exist_ok=True)
            tb = [python, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.tensorboard_port)]
            self._spawn(self._add("tensorboard", tb, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, restartable=False))
            self.console.print(f"TensorBoard: [bold]http://127.0.0.1:{self.tensorboard_port}/[/bold] (logs in {self.paths.logs})")

    def _wait_for_fresh_start(self, timeout: float = 120.0) -> None:
        """A fresh chief deletes the run folder: workers start once it is recreated."""
        deadline = time.monotonic() + timeout
        chief = self.children[CHIEF_ID]
        while time.monotonic() < deadline and chief.process and chief.process.poll() is None:
            status = read_json(self.paths.status)
            if status and status.get("state") == "running" and status.get("updated", 0) >= self._started_at:
                return
            time.sleep(0.2)

    def stop(self, grace: float = 8.0, spare: tuple[str, ...] = ()) -> None:
        """SIGTERM every child but those named in `spare` (each leaves its files whole), SIGKILL what is left after `grace` seconds."""
        self._stopping = True
        children = [child for name, child in self.children.items() if name not in spare]
        with local_signals.ignoring():
            for child in children:
                if child.process and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in children:
                if child.process:
                    try:
                        child.process.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        child.process.kill()
                        child.process.wait()
        if not spare:
            self._tmp.cleanup()

    # ----- supervision ---------------------------------------------------

    def _status(self) -> dict[str, Any]:
        """The status of the run in progress (the latest stage that has one)."""
        for paths in reversed(self.runs):
            status = read_json(paths.status)
            if status:
                return status
        return {}

    def _should_restart(self, child: Child, code: int) -> bool:
        if not child.restartable or code in local_signals.FINAL or self._stopping:
            return False
        search = self._status().get("state")
        if child.name != CHIEF_ID and search in ("completed", "failed"):
            return False
        return local_signals.disruption(code) is not None or child.restarts < self.max_restarts

    def _reap(self) -> int | None:
        """Handle exited children; return the search's exit code once it is decided."""
        chief = self.children[CHIEF_ID]
        for child in self.children.values():
            process = child.process
            if process is None or child.exit_code is not None or process.poll() is None:
                continue
            child.exit_code = process.returncode
            if child.reader:
                child.reader.join(timeout=2)
            self._print(child, f"exited with code {child.exit_code}")
            if self._should_restart(child, child.exit_code):
                name = local_signals.disruption(child.exit_code)
                if name is not None:
                    child.disruptions += 1
                    self._print(child, f"stopped by {name} from outside: restarting it (not counted against --max-restarts)")
                    self._spawn(child, f", back after {name} ({child.disruptions})")
                else:
                    child.restarts += 1
                    self._spawn(child)
            elif child.exit_code == EXIT_BAD_INPUT:
                return EXIT_BAD_INPUT
            elif child.name == CHIEF_ID and child.exit_code == EXIT_LEASE_LOST:
                self._print(child, "another chief took this run over; stopping the workers")
                return EXIT_LEASE_LOST
            elif child.name == CHIEF_ID and child.exit_code not in (EXIT_OK, EXIT_SEARCH_FAILED):
                self._print(child, f"gave up after {child.restarts} restarts")
                return child.exit_code or 1
        workers = [c for n, c in self.children.items() if n.startswith("tuner")]
        if chief.exit_code is not None and chief.exit_code in (EXIT_OK, EXIT_SEARCH_FAILED):
            # The chief's verdict is the search's: its workers leave on their own, or are stopped.
            self._chief_verdict_at = self._chief_verdict_at or time.monotonic()
            if all(c.exit_code is not None for c in workers) or time.monotonic() - self._chief_verdict_at > _WORKERS_AFTER_CHIEF:
                return chief.exit_code
        if chief.exit_code is None and self._status().get("state") in ("completed", "failed"):
            return None  # the chief has its verdict and writes its results: whatever the workers did, let it finish
        if chief.exit_code is None and all(c.exit_code is not None and not self._should_restart(c, c.exit_code) for c in workers):
            # Every worker is gone for good: the chief would wait forever.
            if any(c.exit_code not in (EXIT_OK,) for n, c in self.children.items() if n.startswith("tuner")):
                self._print(chief, "every worker has stopped; stopping the chief")
                return 1
        return None

    def run(self) -> int:
        """Start every process, supervise them until the search ends, stop them all; return the exit code.

        The chief's code once it ends the search (0 completed, 1 failed), 2 on
        bad input, 4 when another chief took the run over, 130/143/129 when
        Ctrl-C, SIGTERM or SIGHUP stopped the launcher.
        """
        self._started_at = time.time()
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.show_progress,
            transient=False,
        )
        spare: tuple[str, ...] = ()
        try:
            with local_signals.trapped(), progress:
                task = progress.add_task(f"run {self.config.run}", total=self.config.max_trials, best="")
                self.start()
                while True:
                    code = self._reap()
                    status = self._status()
                    best = status.get("best")
                    done, total = trials_done_of_max(status)  # seeded trials count, as in the results
                    progress.update(
                        task,
                        total=total or self.config.max_trials,
                        completed=done or 0,
                        best=f"best {self.config.objective} {best['score']:.4f} (trial {best['trial_id']})" if best else "",
                    )
                    if code is not None:
                        if self.keep_tensorboard and code in (EXIT_OK, EXIT_SEARCH_FAILED):
                            spare = ("tensorboard",)
                        return code
                    time.sleep(0.25)
        except KeyboardInterrupt:
            self.console.print("[yellow]interrupted: stopping every process[/yellow]")
            return 130
        except local_signals.Signalled as stop:
            self.console.print(f"[yellow]{stop}: stopping every process[/yellow]")
            return stop.exit_code
        finally:
            self.tensorboard_kept = bool(spare)
            self.stop(spare=spare)
