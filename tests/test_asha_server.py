"""asha behind our chief's server, in one process: real gRPC on loopback, the real
journal and state files, and (for the weights) real TensorFlow on tiny data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tuner_job import _kt
from tuner_job.layout import RunPaths
from tuner_job.oracle_server import OracleServer


def _asha_oracle(max_trials: int, epochs: int = 9, units: tuple[int, int] = (1, 512)) -> Any:
    space = _kt.HyperParameters()
    space.Int("units", *units)
    return _kt.make_oracle("asha", objective="val_loss", max_trials=max_trials, epochs=epochs, seed=3, hyperparameters=space, hyperband_factor=3)


def _loss(trial: Any) -> float:
    values = trial.hyperparameters.values
    return values["units"] / 512 + 1.0 / values["tuner/epochs"]


@pytest.mark.parametrize("oracle_json", ["kept", "stale", "lost"])
def test_chief_restart_mid_rung_resumes_the_rungs_from_the_journal(running, tmp_path: Path, oracle_json: str) -> None:
    """Kill the chief with rung 0 half full and a promotion in flight: the
    restarted chief (journal, trial files, oracle.json as it was, stale or
    lost) keeps the running trials with their workers and decides as the one
    that never stopped would."""
    r = running(oracle=_asha_oracle(max_trials=12))
    trials = [r.create(f"tuner{i}")[0] for i in range(12)]
    tuner_dir = tmp_path / "runs" / "r" / "tuner"
    stale = (tuner_dir / "oracle.json").read_text()  # before any result
    for trial in trials[:9]:
        r.end(trial, loss=_loss(trial))
    promoted, _ = r.create("tuner0")
    assert promoted.hyperparameters.values["tuner/rung"] == 1
    before = r.server.oracle.algorithm
    expected_next = before.next_job()
    expected = {f: getattr(before, f) for f in ("rungs", "promoted", "running", "configs", "epochs_spent")}
    r.close()
    if oracle_json == "stale":
        (tuner_dir / "oracle.json").write_text(stale)
    elif oracle_json == "lost":
        (tuner_dir / "oracle.json").unlink()

    server = OracleServer(_asha_oracle(max_trials=12), RunPaths(tmp_path, "r"), lease_seconds=30, max_consecutive_failed_trials=3)
    notes = server.restore()
    after = server.oracle.algorithm
    assert {f: getattr(after, f) for f in expected} == expected, notes
    assert after.next_job() == expected_next
    owners = {tuner: t.trial_id for tuner, t in server.oracle.ongoing_trials.items()}
    expected_owners = {"tuner0": promoted.trial_id, **{f"tuner{i}": trials[i].trial_id for i in (9, 10, 11)}}
    assert owners == expected_owners, notes
    status = json.loads((tmp_path / "runs" / "r" / "status.json").read_text())
    assert status["max_trials"] == 12 and status["state"] == "running"


def test_search_ends_when_the_last_promotion_ends(running) -> None:
    """The budget of new configurations is spent long before the last promotion:
    the server keeps answering (promotions, then waits), and completes only
    when nothing more can come."""
    r = running(oracle=_asha_oracle(max_trials=3, epochs=3))  # rungs at 1 and 3 epochs
    trials = [r.create(f"tuner{i}")[0] for i in range(3)]
    waiting, state = r.create("tuner3")  # every configuration started, all running
    assert waiting.status == "IDLE" and state == "running"
    for trial in trials:
        r.end(trial, loss=_loss(trial))
    promoted, state = r.create("tuner3")
    assert promoted.status == "RUNNING" and promoted.hyperparameters.values["tuner/trial_id"] == min(trials, key=_loss).trial_id
    assert r.server.state == "running"
    r.end(promoted, loss=0.01)
    stopped, state = r.create("tuner1")
    assert stopped.status == "STOPPED" and state == "completed"
    assert r.server.progress.scoreboard.completed == 4


def test_promoted_trial_starts_from_its_parents_weights(running, tmp_path: Path) -> None:
    """Real TensorFlow: rung 0 trains 1 epoch; the promotion loads the best
    rung-0 trial's checkpoint and trains epochs 2 and 3 (initial_epoch 1)."""
    import keras
    import tensorflow as tf

    from tuner_job.config import SearchConfig
    from tuner_job.oracle_client import OracleClient
    from tuner_job.trial_fit import BatchedData
    from tuner_job.trial_runner import TrialRunner

    r = running(oracle=_asha_oracle(max_trials=3, epochs=3, units=(2, 6)))
    paths = RunPaths(tmp_path, "r")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x[:48], y[:48])).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[48:], y[48:])).batch(16)

    def build(hp: Any) -> Any:
        model = keras.Sequential([
            keras.Input((4,)), keras.layers.Dense(hp.Int("units", 2, 6), activation="relu"), keras.layers.Dense(2, activation="softmax"),
        ])
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    seen: list[tuple[str, list[np.ndarray], int, int]] = []

    class Recording(TrialRunner):
        def train_model(self, hp: Any, model: Any, epochs: int, initial_epoch: int, callbacks: list[Any]) -> Any:
            seen.append((self.current, [w.copy() for w in model.get_weights()], epochs, initial_epoch))
            return super().train_model(hp, model, epochs, initial_epoch, callbacks)

    class Hypermodel:  # what `load_hypermodel` gives a worker: `build`, and a `fit` that is `model.fit`
        def build(self, hp: Any) -> Any:
            return build(hp)

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            return model.fit(*args, **kwargs)

    data = BatchedData(lambda batch_size: SimpleNamespace(
        train=train, train_endless=train.repeat(), val=val, callback=keras.callbacks.Callback(), steps_per_epoch=3
    ))

    config = SearchConfig(run="r", tuner="asha", epochs=3, max_trials=3, lease_seconds=30)
    client = OracleClient(f"127.0.0.1:{r.port}", "tuner0", paths, chief_wait_seconds=10)
    runner = Recording(config, paths, "tuner0", Hypermodel(), data, client)
    try:
        ran = []
        for _ in range(4):
            trial = client.create_trial()
            assert trial.status == "RUNNING"
            runner.current = trial.trial_id
            runner.finish(trial, runner.run(trial))
            ran.append(trial)
        assert client.create_trial().status == "STOPPED"
    finally:
        client.close()
    *rung0, promoted = ran
    parent = promoted.hyperparameters.values["tuner/trial_id"]
    scores = {t.trial_id: r.server.oracle.trials[t.trial_id].score for t in rung0}
    assert parent == min(scores, key=scores.get)
    trial_id, weights, epochs, initial_epoch = seen[-1]
    assert (trial_id, epochs, initial_epoch) == (promoted.trial_id, 3, 1)
    expected = build(promoted.hyperparameters)
    expected.load_weights(str(paths.checkpoint(parent)))
    fresh = build(promoted.hyperparameters)
    assert all(np.array_equal(a, b) for a, b in zip(weights, expected.get_weights(), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(weights, fresh.get_weights(), strict=True))
    epochs_trained = [e["epoch"] for e in _events(paths, "tuner0") if e.get("trial") == promoted.trial_id and e["event"] == "epoch"]
    assert epochs_trained == [1, 2]  # Keras counts from 0: the 2nd and 3rd epochs
    assert r.server.oracle.trials[promoted.trial_id].status == "COMPLETED"


def _events(paths: RunPaths, tuner_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in paths.attempts_file(tuner_id).read_text().splitlines() if line.strip()]


def test_an_expired_lease_hands_the_same_rung_to_the_next_worker(running) -> None:
    """A worker goes silent mid-rung: its trial (the same rung, parent and
    epochs) goes to the next free worker, and the algorithm counts it once."""
    import time

    r = running(oracle=_asha_oracle(max_trials=3, epochs=3), lease_seconds=30)
    trials = [r.create(f"tuner{i}")[0] for i in range(3)]
    for trial in trials:
        r.end(trial, loss=_loss(trial))
    promoted, _ = r.create("tuner0")
    spent = r.server.oracle.algorithm.epochs_spent
    # Short leases only from here: on two loaded cores the steps above may take
    # longer than a short lease, and a trial would move on before it ended.
    r.server.leases.seconds = 0.5
    time.sleep(2.0)  # tuner0 says nothing (the reaper looks once a second at most)
    taken, _ = r.create("tuner1")
    assert taken.trial_id == promoted.trial_id
    assert taken.hyperparameters.values == promoted.hyperparameters.values
    assert r.server.oracle.algorithm.epochs_spent == spent and r.server.oracle.algorithm.running == {promoted.trial_id: 1}
