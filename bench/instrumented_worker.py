"""`python -m bench.instrumented_worker`: `python -m tuner_job` (a worker) with timers around its steps.

The worker runs unchanged; this wraps the functions it calls and records each
call's wall-clock interval by category, then writes them to `$BENCH_TIMINGS`
(JSON) at exit. `$BENCH_T0` is when the launcher started the process.

Categories (main thread only; the lease heartbeat thread runs alongside):
- ask:      CreateTrial that returned a trial to run
- wait:     CreateTrial that returned IDLE/STOPPED (no trial for this worker)
- report:   UpdateTrial, EndTrial
- lease:    GetTrial at each epoch's end (inside fit)
- build:    build and compile the model (the hypermodel function)
- data:     load the dataset (cache); also each fit's input pipeline (inside fit)
- fit:      the hypermodel's `fit` (TrialRunner.train_model)
- saving:   the epoch's backup (TrialBackup.save) and TensorBoard at each epoch end (inside fit)
- hparams:  the trial's TensorBoard HParams summary
- finish:   TrialRunner.finish: report, the score TensorBoard shows, remove the trial's backup, log
- trial:    TrialRunner.run: the whole trial up to its outcome
- chief:    wait_for_chief (start-up)
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

T0 = float(os.environ.get("BENCH_T0") or time.time())
EVENTS: list[tuple[str, float, float]] = []
_MAIN = threading.main_thread()


def _wrap(owner: Any, name: str, category: str | Callable[[Any], str]) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not _MAIN:
            return original(*args, **kwargs)
        started = time.time()
        result = None
        try:
            result = original(*args, **kwargs)
            return result
        finally:
            EVENTS.append((category(result) if callable(category) else category, started, time.time()))

    setattr(owner, name, timed)


def _trial_category(trial: Any) -> str:
    return "ask" if trial is not None and getattr(trial, "status", None) == "RUNNING" else "wait"


def install() -> None:
    import keras

    import tuner_job.data as data
    import tuner_job.hypermodels as hypermodels
    import tuner_job.input_pipeline as input_pipeline
    import tuner_job.trial_backup as trial_backup
    import tuner_job.trial_runner as trial_runner
    from tuner_job.oracle_client import OracleClient

    _wrap(OracleClient, "create_trial", _trial_category)
    _wrap(OracleClient, "update_trial", "report")
    _wrap(OracleClient, "end_trial", "report")
    _wrap(OracleClient, "get_trial", "lease")
    _wrap(OracleClient, "wait_for_chief", "chief")
    _wrap(data, "load_prepared", "data")
    _wrap(input_pipeline, "make_datasets", "data")
    _wrap(trial_runner.TrialRunner, "train_model", "fit")
    _wrap(trial_runner.TrialRunner, "run", "trial")
    _wrap(trial_runner.TrialRunner, "finish", "finish")
    _wrap(trial_runner, "write_trial_hparams", "hparams")
    _wrap(trial_backup.TrialBackup, "save", "saving")
    _wrap(keras.callbacks.TensorBoard, "on_epoch_end", "saving")

    load_hypermodel = hypermodels.load_hypermodel

    def timed_load(*args: Any, **kwargs: Any) -> Any:
        hypermodel = load_hypermodel(*args, **kwargs)
        _wrap(hypermodel, "build", "build")  # this instance's build: the worker calls hypermodel.build(hp)
        return hypermodel

    hypermodels.load_hypermodel = timed_load


def _dump() -> None:
    path = os.environ.get("BENCH_TIMINGS")
    if path:
        with open(path, "w") as handle:
            json.dump({"t0": T0, "exit": time.time(), "events": EVENTS}, handle)


def main() -> int:
    install()
    atexit.register(_dump)
    from tuner_job.__main__ import main as tuner_main

    return tuner_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
