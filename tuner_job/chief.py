"""The chief: host the oracle, watch the search, write the results and the best model."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from tuner_job import _kt, _kt_state, stopping
from tuner_job.chief_lease import ChiefLease, Fence
from tuner_job.chief_startup import bind_error, set_phase, start_startup_health, stop_startup_health, wait_for_dataset
from tuner_job.config import SearchConfig, dump_config
from tuner_job.devices import configure_threads
from tuner_job.env import Role
from tuner_job.errors import ConfigError, SearchFailedError
from tuner_job.layout import WARM_PREFIX, WARM_START_LABEL, RunPaths, atomic_write_text, publish_file, read_json
from tuner_job.objective import Objective, resolve_objective
from tuner_job.oracle_server import OracleServer
from tuner_job.prepare import prepare_search, saved_config
from tuner_job.results import leaderboard_text, write_results
from tuner_job.trial_runner import format_values, public_values

__all__ = ["run_chief"]

log = logging.getLogger("tuner_job.chief")


class BestModelExporter:
    """Writes `best/model.keras` and `best/hyperparameters.yaml` off the event loop.

    Runs whenever a trial becomes the best so far, so the search's end waits
    for at most one export. The weights are the trial's checkpoint (its best
    epoch, published by the worker as the trial ends, `trial_backup`); a
    seeded trial's are in the run it came from (`warm_run`). A checkpoint that
    cannot be read is one warning line, never an error: the next best trial, or
    the end of the search, exports again. Files are published atomically, after
    the fence (the chief's lease) is checked.
    """

    def __init__(self, paths: RunPaths, build_model: Any, objective: str, warm_run: RunPaths | None = None, fence: Fence | None = None):
        self.paths = paths
        self.fence = fence
        self.warm_run = warm_run  # a seeded trial's weights stay in the run it came from
        self.build_model = build_model
        self.objective = objective
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        self._pending: list[Any] = []
        self.exported: str | None = None

    def submit(self, trial: Any) -> None:
        self._pending.append(asyncio.get_running_loop().run_in_executor(self._executor, self._export, trial))

    def _export(self, trial: Any) -> None:
        checkpoint = self.paths.checkpoint(trial.trial_id)
        if trial.trial_id.startswith(WARM_PREFIX) and self.warm_run is not None:
            checkpoint = self.warm_run.checkpoint(trial.trial_id.removeprefix(WARM_PREFIX))
        if not checkpoint.is_file():
            log.warning("trial %s has no checkpoint at %s; best model not exported", trial.trial_id, checkpoint)
            return
        model = self.build_model(trial.hyperparameters)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the checkpoint's optimizer slots are not needed
                model.load_weights(str(checkpoint))
        except Exception as exc:  # torn or foreign: say so once, do not fail the search
            log.warning("trial %s: its checkpoint %s cannot be read (%s); best model not exported", trial.trial_id, checkpoint, exc)
            return
        best = self.paths.best
        if self.fence is not None:
            self.fence.check()
        publish_file(best / "model.keras", lambda tmp: model.save(str(tmp)), suffix=".keras")
        document = {
            "trial_id": trial.trial_id,
            "score": float(trial.score),
            "objective": self.objective,
            "hyperparameters": public_values(dict(trial.hyperparameters.values)),
        }
        atomic_write_text(best / "hyperparameters.yaml", yaml.safe_dump(document, sort_keys=False))
        self.exported = trial.trial_id

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self._executor.shutdown(wait=True)


def _prepare_run(config: SearchConfig, paths: RunPaths, fresh: bool, fence: Fence) -> None:
    fence.check()
    if fresh and paths.root.exists():
        # Only the chief, only when asked, only this run's folder, and not the lease it holds.
        log.info("fresh run: removing %s", paths.root)
        for child in paths.root.iterdir():
            if child == paths.chief_lease:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    paths.root.mkdir(parents=True, exist_ok=True)
    previous = saved_config(paths)
    if previous is not None and previous != config:
        # What `prepare.check_resume` lets through takes effect now; say what.
        changed = [key for key in SearchConfig.model_fields if getattr(previous, key) != getattr(config, key)]
        changes = ", ".join(f"{key} {getattr(previous, key)!r} -> {getattr(config, key)!r}" for key in changed)
        log.info("run %s resumes with a changed config (%s): the new values take effect", config.run, changes)
    atomic_write_text(paths.config, dump_config(config))


def _seed_warm_start(config: SearchConfig, server: OracleServer, oracle: Any, warm: list[Any]) -> None:
    """Add the earlier run's trials that fall inside this space as COMPLETED observations."""
    source = f"{WARM_START_LABEL}{config.warm_start}"  # the trial's message: results show it as the worker
    added = _kt_state.seed_completed_trials(oracle, [(f"{WARM_PREFIX}{t.trial_id}", t, source) for t in warm])
    for trial in added:
        server.store.mark_trial(trial)
    log.info("warm start: %d of %d trials from run %s fall inside the new space", len(added), len(warm), config.warm_start)


def _account_warm(server: OracleServer, oracle: Any) -> int:
    """Make room for the seeded trials in the budget and let them compete for best.

    Runs on a fresh start and on every restart (`max_trials` is not part of
    the oracle's saved state). Seeded trials are not counted as trained here.
    """
    seeded = [t for tid, t in oracle.trials.items() if tid.startswith(WARM_PREFIX) and t.status == _kt.TrialStatus.COMPLETED]
    if not seeded:
        return 0
    if oracle.max_trials is not None:
        oracle.max_trials += len(seeded)
    server.progress.seeded = len(seeded)
    for trial in seeded:
        server.progress.scoreboard.offer(trial.trial_id, trial.score)
    return len(seeded)


def _address(role: Role) -> str:
    """Where this chief answers, as another chief's message names it (a pod's name when it binds every address)."""
    host = socket.gethostname() if role.oracle_host in ("0.0.0.0", "::", "") else role.oracle_host
    return f"{host}:{role.oracle_port}"


async def _serve(
    config: SearchConfig,
    paths: RunPaths,
    role: Role,
    oracle: Any,
    exporter: BestModelExporter,
    fence: Fence,
    warm: list[Any] | None = None,
    next_run: str | None = None,
) -> OracleServer:
    def on_start(trial: Any, tuner_id: str) -> None:
        log.info("trial %s -> %s: %s", trial.trial_id, tuner_id, format_values(trial.hyperparameters.values))

    def on_end(trial: Any) -> None:
        score = "-" if trial.score is None else f"{trial.score:.4f}"
        board = server.progress.scoreboard
        log.info(
            "trial %s %s %s=%s | %d/%d done, best %s",
            trial.trial_id, trial.status, config.objective, score, board.done, config.max_trials, board.best_text(),
        )  # fmt: skip
        if board.best is not None and board.best[0] == trial.trial_id:
            exporter.submit(trial)

    server = OracleServer(
        oracle,
        paths,
        lease_seconds=config.lease_seconds,
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
        on_trial_start=on_start,
        on_trial_end=on_end,
        next_run=next_run,
        fence=fence,
    )
    for note in server.restore():
        log.info("%s", note)
    fresh_warm = warm is not None and not oracle.trials  # never on a restart: the state already holds them
    if fresh_warm:
        _seed_warm_start(config, server, oracle, warm)
    seeded = _account_warm(server, oracle)
    if fresh_warm:
        server.store.flush_now()
    if seeded and oracle.max_trials is None:  # asha: seeded trials are observations, not configurations it started
        log.info("%d seeded trials from run %s; this run starts up to %d new configurations", seeded, config.warm_start, config.max_trials)
    elif seeded:
        log.info("%d seeded trials from run %s; max_trials %d -> %d so this run trains %d new trials",
                 seeded, config.warm_start, oracle.max_trials - seeded, oracle.max_trials, oracle.max_trials - seeded)
    stop_startup_health()  # the oracle's own server takes the port over
    try:
        await server.start(role.oracle_host, role.oracle_port)
    except OSError:
        raise bind_error(role.oracle_host, role.oracle_port) from None
    log.info(
        "oracle serving on %s:%d (%s, max_trials=%d, objective=%s)",
        role.oracle_host, server.port, config.tuner, config.max_trials, server.progress.objective.describe(),
    )  # fmt: skip
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:  # in the main thread, between two steps of the loop
        if server.state == "running":
            log.info("%s: the chief stops serving and saves its state; a chief started again resumes the search", stopping.signal_name(signum))
            loop.call_soon_threadsafe(server.stop, stopping.signal_name(signum))
        else:
            log.info("%s: the search has ended; the chief writes its results first", stopping.signal_name(signum))

    with stopping.on_signal(on_signal):
        await server.wait()
        if server.state == "running":
            return server  # stopped by a signal: no verdict, nothing to export
        best = server.progress.scoreboard.best
        best_trial = best and oracle.trials.get(best[0])
        if best_trial is not None and exporter.exported != best_trial.trial_id:
            exporter.submit(best_trial)
        await exporter.drain()
    return server


def run_chief(config: SearchConfig, paths: RunPaths, role: Role, fresh: bool = False, next_run: str | None = None) -> int:
    """Run the chief of one run: check the inputs, serve the oracle until the search ends, write the results.

    Everything a user can get wrong (the objective's direction, the data
    folder, the hypermodel, `space`, `warm_start`) is checked before anything
    is written. Then the chief holds the run's lease (`chief_lease`: one chief
    per run) before its first write, and checks it before each. At the end:
    `results.json`, `leaderboard.csv` and `best/model.keras` (the best trial's
    checkpoint, as the oracle ranked it). SIGTERM while serving saves the state
    and raises `Stopped`; after the verdict, the results are written first.

    Args:
        config: the search (one run; a staged search calls this once per stage).
        paths: the run's folders on the shared volume.
        role: the chief's role; it binds `role.oracle_host:role.oracle_port`.
        fresh: delete this run's folder first (otherwise a run with state resumes).
        next_run: the next stage's run, for a stage of a staged search.

    Returns:
        0 when the search completed.

    Raises:
        ConfigError, DataError, HypermodelError: bad input (exit 2), nothing written; or
            (ConfigError) a trial showed the config wrong, e.g. an objective the
            model does not log: results are written first.
        RunHeldError: another chief holds the run and is alive (exit 2), nothing written.
        SearchFailedError: the search ended "failed" (exit 1): the failure limit, or
            no trial completed; results are written first.
        Stopped: a stop signal (exit 128 + signum); the lease is released.
    """
    from tuner_job.data import load_image_folder

    started = time.monotonic()
    configure_threads()  # TensorFlow is imported now: size its pools to the CPU limit
    if role.oracle_port:
        start_startup_health(role.oracle_host, role.oracle_port)  # a no-op unless a stage ended
    resolve_objective(config.objective, config.objective_direction)  # a direction no one can tell fails before any wait
    folder = paths.shared_dir / config.data
    wait_for_dataset(folder, config.data_wait_seconds)
    set_phase("decoding the dataset")
    # Every check a user's input can fail, before anything is written (`prepare`).
    prepared = prepare_search(config, paths, fresh)
    objective, build, oracle, warm = prepared.objective, prepared.hypermodel, prepared.oracle, prepared.warm
    load_image_folder(folder, config.image_size, config.validation_split, config.seed)  # the cache, for the workers; a bad image fails here
    lease = ChiefLease(paths, config.chief_lease_seconds, _address(role))
    log.info("%s", lease.acquire(on_wait=set_phase))  # another chief alive on this run: RunHeldError, exit 2
    try:
        return _run_held(config, paths, role, fresh, next_run, lease.fence, build, oracle, objective, warm, started)
    finally:
        lease.release()  # the next chief need not wait out the lease (not reached when the lease was lost)


def _run_held(
    config: SearchConfig, paths: RunPaths, role: Role, fresh: bool, next_run: str | None, fence: Fence,
    build: Any, oracle: Any, objective: Objective, warm: list[Any] | None, started: float,
) -> int:  # fmt: skip
    """`run_chief` once the run's lease is held: every write checks `fence` first."""
    from tuner_job.tensorboard_logs import write_experiment_config

    _prepare_run(config, paths, fresh, fence)
    write_experiment_config(paths, _kt.space_of(oracle.hyperparameters), objective)
    warm_run = RunPaths(paths.shared_dir, config.warm_start) if config.warm_start else None
    exporter = BestModelExporter(paths, build, config.objective, warm_run, fence)
    server = asyncio.run(_serve(config, paths, role, oracle, exporter, fence, warm, next_run))
    progress = server.progress
    if progress.state == "running":  # a signal stopped it; the state is saved and a restart resumes
        raise stopping.Stopped(stopping.received() or signal.SIGTERM)
    with stopping.on_signal(lambda signum: log.info("%s: writing the results first", stopping.signal_name(signum))):
        fence.check()
        ranked = write_results(paths, objective, extra={"state": progress.state, "message": progress.message})
    if not role.under_launcher:  # under `tunectl local` the launcher prints these once, for every run
        log.info("results: %s, %s", paths.results_json, paths.leaderboard_csv)
        print(leaderboard_text(ranked, config.objective), flush=True)
        if (paths.best / "model.keras").is_file():
            best = read_json(paths.results_json) or {}
            log.info("best model: %s (trial %s)", paths.best / "model.keras", (best.get("trials") or [{}])[0].get("trial_id"))
        log.info("TensorBoard logs: %s", paths.logs)
    log.info("search %s in %.1fs: %s", progress.state, time.monotonic() - started, progress.message)
    if progress.state == "failed":
        raise ConfigError(progress.message) if progress.bad_input else SearchFailedError(progress.message)
    return 0
