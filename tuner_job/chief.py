"""The chief: host the oracle, watch the search, write the results and the best model."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from tuner_job import _kt, _kt_state
from tuner_job.chief_startup import set_phase, start_startup_health, stop_startup_health, wait_for_dataset
from tuner_job.config import SearchConfig, dump_config
from tuner_job.devices import configure_threads
from tuner_job.env import Role
from tuner_job.errors import SearchFailedError
from tuner_job.layout import WARM_PREFIX, WARM_START_LABEL, RunPaths, atomic_write_text, read_json
from tuner_job.objective import Objective, resolve_objective
from tuner_job.oracle_server import OracleServer
from tuner_job.results import leaderboard_text, write_results
from tuner_job.trial_runner import format_values, public_values
from tuner_job.trials import warm_start_trials

__all__ = ["run_chief", "build_oracle", "load_warm_trials"]

log = logging.getLogger("tuner_job.chief")


def build_oracle(config: SearchConfig, build_model: Any, objective: Objective) -> Any:
    """The configured oracle, its space narrowed by `space` and populated from the hypermodel.

    Args:
        config: the search.
        build_model: `build(hp) -> compiled keras.Model` (`load_hypermodel`); built here.
        objective: the search's objective (`resolve_objective`).

    Raises:
        ConfigError: a `space` override names no hyperparameter or widens one.
        HypermodelError: the hypermodel does not build a compiled model.
    """
    from tuner_job.space import apply_space

    narrowed = None
    if config.space:
        scratch = _kt.make_oracle("random", objective=objective, max_trials=1, epochs=1, seed=0, hyperparameters=None)
        _kt.populate_space(scratch, build_model)
        narrowed = apply_space(scratch.hyperparameters, config.space)
    oracle = _kt.make_oracle(
        config.tuner,
        objective=objective,
        max_trials=config.max_trials,
        epochs=config.epochs,
        seed=config.seed,
        hyperparameters=narrowed,
        hyperband_factor=config.hyperband_factor,
        max_retries_per_trial=config.max_retries_per_trial,
        bayesian_initial_points=config.bayesian_initial_points,
    )
    _kt.populate_space(oracle, build_model)
    return oracle


class BestModelExporter:
    """Writes `best/model.keras` and `best/hyperparameters.yaml` off the event loop.

    Runs whenever a trial becomes the best so far, so the search's end waits
    for at most one export. The weights are the trial's checkpoint (its best
    epoch, kept by the worker's `ModelCheckpoint`); a seeded trial's are in
    the run it came from (`warm_run`).
    """

    def __init__(self, paths: RunPaths, build_model: Any, objective: str, warm_run: RunPaths | None = None):
        self.paths = paths
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the checkpoint's optimizer slots are not needed
            model.load_weights(str(checkpoint))
        best = self.paths.best
        best.mkdir(parents=True, exist_ok=True)
        tmp = best / ".model.keras.tmp.keras"
        model.save(str(tmp))
        tmp.replace(best / "model.keras")
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


def _prepare_run(config: SearchConfig, paths: RunPaths, fresh: bool) -> None:
    if fresh and paths.root.exists():
        # Only the chief, only when asked, and only this run's folder.
        log.info("fresh run: removing %s", paths.root)
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True, exist_ok=True)
    previous = paths.config.read_text() if paths.config.is_file() else None
    text = dump_config(config)
    if previous is not None and previous != text:
        log.warning("run %s resumes with a config that differs from its search.yaml; the new one is saved", config.run)
    atomic_write_text(paths.config, text)


def _has_state(paths: RunPaths) -> bool:
    """Whether a previous chief of this run left state (then this is a restart)."""
    return (paths.tuner / "oracle.json").is_file() or any(paths.tuner.glob("trial_*/trial.json"))


def load_warm_trials(config: SearchConfig, shared_dir: Any) -> list[Any]:
    """The COMPLETED trials with a finite score of the run `config.warm_start` names, as `Trial`s.

    Raises:
        ConfigError: that run is this one or does not exist (see `trials.warm_start_trials`).
    """
    assert config.warm_start is not None
    return [_kt.Trial.from_state(doc) for doc in warm_start_trials(shared_dir, config.warm_start, config.run)]


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


async def _serve(
    config: SearchConfig,
    paths: RunPaths,
    role: Role,
    oracle: Any,
    exporter: BestModelExporter,
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
    )
    for note in server.restore():
        log.info("%s", note)
    fresh_warm = warm is not None and not oracle.trials  # never on a restart: the state already holds them
    if fresh_warm:
        _seed_warm_start(config, server, oracle, warm)
    seeded = _account_warm(server, oracle)
    if fresh_warm:
        server.store.flush_now()
    if seeded:
        log.info("%d seeded trials from run %s; max_trials %d -> %d so this run trains %d new trials",
                 seeded, config.warm_start, oracle.max_trials - seeded, oracle.max_trials, oracle.max_trials - seeded)
    stop_startup_health()  # the oracle's own server takes the port over
    await server.start(role.oracle_host, role.oracle_port)
    log.info(
        "oracle serving on %s:%d (%s, max_trials=%d, objective=%s)",
        role.oracle_host, server.port, config.tuner, config.max_trials, server.progress.objective.describe(),
    )  # fmt: skip
    await server.wait()
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
    is written. At the end: `results.json`, `leaderboard.csv` and
    `best/model.keras` (the best trial's checkpoint, as the oracle ranked it).

    Args:
        config: the search (one run; a staged search calls this once per stage).
        paths: the run's folders on the shared volume.
        role: the chief's role; it binds `role.oracle_host:role.oracle_port`.
        fresh: delete this run's folder first (otherwise a run with state resumes).
        next_run: the next stage's run, for a stage of a staged search.

    Returns:
        0 when the search completed.

    Raises:
        ConfigError, DataError, HypermodelError: bad input (exit 2), nothing written.
        SearchFailedError: the search ended "failed" (exit 1); results are written first.
    """
    from tuner_job.data import list_image_folder, load_image_folder
    from tuner_job.hypermodels import load_hypermodel
    from tuner_job.tensorboard_logs import write_experiment_config

    started = time.monotonic()
    configure_threads()  # TensorFlow is imported now: size its pools to the CPU limit
    if role.oracle_port:
        start_startup_health(role.oracle_host, role.oracle_port)  # a no-op unless a stage ended
    objective = resolve_objective(config.objective, config.objective_direction)  # a direction no one can tell fails here
    folder = paths.shared_dir / config.data
    wait_for_dataset(folder, config.data_wait_seconds)
    set_phase("decoding the dataset")
    classes = list_image_folder(folder)
    build = load_hypermodel(config.hypermodel, (*config.image_size, 3), len(classes))
    oracle = build_oracle(config, build, objective)  # builds the model: a bad hypermodel fails here, before any write
    warm = None
    if config.warm_start and (fresh or not _has_state(paths)):
        warm = load_warm_trials(config, paths.shared_dir)  # a missing run fails here, before any write
    load_image_folder(folder, config.image_size, config.validation_split, config.seed)  # the cache, for the workers
    _prepare_run(config, paths, fresh)
    write_experiment_config(paths, _kt.space_of(oracle.hyperparameters), objective)
    warm_run = RunPaths(paths.shared_dir, config.warm_start) if config.warm_start else None
    exporter = BestModelExporter(paths, build, config.objective, warm_run)
    server = asyncio.run(_serve(config, paths, role, oracle, exporter, warm, next_run))
    progress = server.progress
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
        raise SearchFailedError(progress.message)
    return 0
