"""The worker: ask the chief for a trial, train it, report it, until the search ends."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings

from tuner_job import _kt, stopping
from tuner_job.config import SearchConfig
from tuner_job.devices import configure_threads, require_gpus
from tuner_job.env import Role
from tuner_job.errors import ConfigError, SearchFailedError
from tuner_job.layout import RunPaths
from tuner_job.objective import resolve_objective
from tuner_job.oracle_client import OracleClient, SearchEnded
from tuner_job.trial_fit import BatchedData
from tuner_job.trial_runner import TrialRunner

__all__ = ["run_worker"]

log = logging.getLogger("tuner_job.worker")


def run_worker(config: SearchConfig, paths: RunPaths, role: Role) -> int:
    """Run one worker: wait for the chief, then train the trials it hands out until the search ends.

    Args:
        config: the search (the same file the chief reads).
        paths: the run (a staged search's first stage; the chief moves the worker on).
        role: this worker's tuner id and the chief's address.

    Returns:
        0 when the search completed.

    Raises:
        ConfigError: the objective's direction cannot be told (exit 2), before the chief is asked;
            or a trial showed that the model does not log the objective (exit 2, after reporting it).
        DataError, HypermodelError: bad input (exit 2).
        SearchFailedError: the chief says the search failed (exit 1).
        ChiefUnreachableError: no chief answered for `chief_wait_seconds` (exit 3).
    """
    from tuner_job.data import is_prepared, list_image_folder, load_prepared
    from tuner_job.hypermodels import load_hypermodel
    from tuner_job.input_pipeline import make_datasets

    resolve_objective(config.objective, config.objective_direction)  # as the chief does: fail before waiting for it
    folder = paths.shared_dir / config.data
    if folder.is_dir() and not is_prepared(folder, config.image_size, config.validation_split, config.seed):
        # A bad layout stops this worker now, not after its chief has decoded (a folder still to come is
        # the chief's to wait for). Once a chief has prepared the cache it has checked the folder, and
        # the data come from that cache (`load_prepared`): no worker lists the folder again.
        list_image_folder(folder)

    # tf.data is shuffled already; Keras warns that its own shuffle is ignored.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    started = time.monotonic()
    configure_threads()  # TensorFlow is imported now: size its pools to the CPU limit
    gpus = require_gpus()  # before waiting for anyone: a worker that cannot see its GPUs stops at once
    if gpus:
        log.info("training on %d GPU(s)", gpus)
    trained = 0
    client = OracleClient(
        role.address, role.tuner_id, paths, config.chief_wait_seconds, rpc_timeout=max(10.0, config.lease_seconds),
        max_trials=None if config.stages else config.max_trials,
    )
    try:
        client.wait_for_chief()
        data = load_prepared(paths.shared_dir / config.data, config.image_size, config.validation_split, config.seed)
        hypermodel = load_hypermodel(config.hypermodel, data.input_shape, data.num_classes)
        batched = BatchedData(lambda batch_size: make_datasets(data, batch_size, config.seed))
        runner = TrialRunner(config, paths, role.tuner_id, hypermodel, batched, client)
        log.info("ready after %.1fs: %d classes, input %s", time.monotonic() - started, data.num_classes, data.input_shape)
        while True:
            stopping.raise_if_stopped()  # a stop that was lost on the way: no new trial
            trial = client.create_trial()
            if trial.status == _kt.TrialStatus.STOPPED:
                client.raise_if_ended()
                raise SearchEnded(client.search_message)
            if trial.status == _kt.TrialStatus.IDLE:
                continue  # the chief already waited before answering IDLE
            runner.paths = client.paths  # a staged search moves from run to run
            outcome = runner.run(trial)
            if outcome.bad_input:
                # The chief ends the search for every worker (it may have done so already, for another's report).
                with contextlib.suppress(SearchFailedError):
                    runner.finish(trial, outcome)
                raise ConfigError(outcome.bad_input)
            runner.finish(trial, outcome)
            trained += 1
    except SearchEnded:
        # The chief's log says how the search ended; this says what this worker did.
        log.info("the search is complete; this worker trained %d trial%s", trained, "" if trained == 1 else "s")
        return 0
    finally:
        client.close()
