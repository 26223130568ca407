"""The per-epoch backup on a real (tiny) Keras model: published whole, read back, torn, and SIGTERM during its write."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tuner_job import stopping
from tuner_job.objective import Objective
from tuner_job.trial_backup import PAUSE_ENV, BackupUnreadable, TrialBackup

keras = pytest.importorskip("keras")

LOSS = Objective("val_loss", "min")


def _model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def _train(model, steps: int = 1) -> None:
    model.fit(np.ones((8, 4)), np.zeros((8, 2)), epochs=steps, verbose=0)


def _weights(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def test_each_epoch_is_published_whole_and_only_the_newest_is_kept(tmp_path: Path) -> None:
    backup = TrialBackup(tmp_path / "execution_0", LOSS)
    model = _model()
    snapshots = {}
    for epoch, val_loss in enumerate([0.5, 0.7, 0.3, 0.4]):
        _train(model)
        backup.save(model, epoch, {"val_loss": val_loss, "loss": 1.0})
        snapshots[epoch] = _weights(model)
        assert [p.name for p in (tmp_path / "execution_0").iterdir()] == [f"epoch-{epoch:05d}"], "no temp folder, no older epoch"
    assert backup.best_epoch == 2 and backup.best_score == 0.3

    restored_model = _model(seed=1)
    again = TrialBackup(tmp_path / "execution_0", LOSS)
    restored = again.restore(restored_model)
    assert restored is not None and restored.epoch == 3 and restored.best_epoch == 2
    assert sorted(restored.history, key=int) == ["0", "1", "2", "3"] and restored.history["2"]["val_loss"] == 0.3
    for got, want in zip(_weights(restored_model), snapshots[3], strict=True):
        np.testing.assert_array_equal(got, want)
    assert int(restored_model.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) > 0, "the optimizer's state too"

    checkpoint = tmp_path / "tuner" / "trial_0" / "checkpoint.weights.h5"
    assert again.publish_checkpoint(checkpoint)
    best = _model(seed=2)
    best.load_weights(str(checkpoint))
    for got, want in zip(_weights(best), snapshots[2], strict=True):  # the best epoch's weights, not the last
        np.testing.assert_array_equal(got, want)
    assert [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint.weights.h5"]


def test_a_torn_backup_is_unreadable_and_discarded(tmp_path: Path) -> None:
    backup = TrialBackup(tmp_path / "execution_0", LOSS)
    model = _model()
    _train(model)
    backup.save(model, 0, {"val_loss": 0.5})
    weights = backup.latest() / "state.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # truncated on purpose
    with pytest.raises(BackupUnreadable, match=r"epoch-00000: OSError: .*truncated file"):
        TrialBackup(tmp_path / "execution_0", LOSS).restore(_model())
    (backup.latest() / "state.json").write_text('{"format": 1, "epoch"')
    with pytest.raises(BackupUnreadable, match="JSONDecodeError"):
        TrialBackup(tmp_path / "execution_0", LOSS).restore(_model())
    backup.discard()
    assert not (tmp_path / "execution_0").exists() and backup.history == {}
    assert TrialBackup(tmp_path / "execution_0", LOSS).restore(_model()) is None


def test_a_write_cut_short_by_a_kill_is_never_read(tmp_path: Path) -> None:
    backup = TrialBackup(tmp_path / "execution_0", LOSS)
    model = _model()
    _train(model)
    backup.save(model, 0, {"val_loss": 0.5})
    stale = tmp_path / "execution_0" / ".epoch-abc.tmp"  # what a SIGKILL mid-write leaves
    stale.mkdir()
    (stale / "state.weights.h5").write_bytes(b"\x89HDF")
    restored = TrialBackup(tmp_path / "execution_0", LOSS).restore(_model())
    assert restored is not None and restored.epoch == 0
    assert not stale.exists()


def test_sigterm_during_the_write_lets_it_finish_then_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = {signum: signal.getsignal(signum) for signum in stopping.STOP_SIGNALS}
    monkeypatch.setenv(PAUSE_ENV, "1.0")
    backup = TrialBackup(tmp_path / "execution_0", LOSS)
    model = _model()
    _train(model)
    folder = tmp_path / "execution_0"
    sent = threading.Event()

    def send_when_writing() -> None:  # from another thread, as Kubernetes would: into the paused write
        while not any(p.name.endswith(".tmp") for p in folder.glob(".epoch-*")):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        sent.set()

    try:
        assert stopping.install()
        sender = threading.Thread(target=send_when_writing, daemon=True)
        sender.start()
        with pytest.raises(stopping.Stopped) as raised:
            backup.save(model, 0, {"val_loss": 0.5})
        assert sent.is_set() and raised.value.exit_code == 143
        assert [p.name for p in folder.iterdir()] == ["epoch-00000"], "the epoch was published before the stop"
        assert TrialBackup(folder, LOSS).restore(_model()).epoch == 0
        # Outside a backup write the same signal stops at once.
        with pytest.raises(stopping.Stopped):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stopping.reset()  # the signals were this test's: a later test's worker must not see them


def test_an_unreadable_checkpoint_never_fails_a_trial_nor_the_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Hyperband continues a trial from an earlier one's checkpoint, and the chief exports from one: torn, each warns once."""
    from tuner_job import _kt
    from tuner_job.chief import BestModelExporter
    from tuner_job.config import parse_config
    from tuner_job.layout import RunPaths
    from tuner_job.trial_runner import TrialRunner

    paths = RunPaths(tmp_path, "r")
    earlier = _model()
    _train(earlier)
    checkpoint = paths.checkpoint("0")
    checkpoint.parent.mkdir(parents=True)
    earlier.save_weights(str(checkpoint))
    runner = TrialRunner(parse_config({}), paths, "tuner0", hypermodel=SimpleNamespace(build=lambda hp: _model(seed=3)), data=None, client=None)  # type: ignore[arg-type]
    hp = _kt.HyperParameters()
    hp.values = {"tuner/trial_id": "0", "tuner/initial_epoch": 2, "tuner/epochs": 4}
    trial = _kt.Trial(hp, trial_id="5")

    model, start = runner._fresh_start(trial, 2, None)  # whole: continued from epoch 2 with the earlier weights
    assert start == 2
    for got, want in zip(_weights(model), _weights(earlier), strict=True):
        np.testing.assert_array_equal(got, want)

    checkpoint.write_bytes(checkpoint.read_bytes()[:500])  # torn
    with caplog.at_level("WARNING", logger="tuner_job.worker"):
        model, start = runner._fresh_start(trial, 2, None)
    assert start == 0 and model is not None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tuner_job.worker"]
    assert "trial 5: the checkpoint of trial 0 that it continues cannot be read" in line and line.endswith("it trains from its first epoch instead")

    caplog.clear()
    done = _kt.Trial(hp, trial_id="0")
    done.score = 0.1
    with caplog.at_level("WARNING", logger="tuner_job.chief"):
        BestModelExporter(paths, lambda hp: _model(), "val_loss")._export(done)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tuner_job.chief"]
    assert "trial 0: its checkpoint" in line and "cannot be read" in line and "best model not exported" in line
    assert not paths.best.exists()


def test_a_write_that_fails_with_a_stop_pending_leaves_no_folder_and_no_false_word(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM during a backup whose write then fails: the stop wins, the half-written folder goes, and the log does not say it finished."""
    previous = {signum: signal.getsignal(signum) for signum in stopping.STOP_SIGNALS}
    backup = TrialBackup(tmp_path / "execution_0", LOSS)
    model = _model()
    _train(model)

    def fails_after_a_signal(path: str) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # held: a backup is being written
        time.sleep(0.1)
        raise OSError(28, "No space left on device")

    model.save_weights = fails_after_a_signal
    try:
        assert stopping.install()
        with pytest.raises(stopping.Stopped):
            backup.save(model, 0, {"val_loss": 0.5})
        assert list((tmp_path / "execution_0").iterdir()) == [], "a half-written backup was left behind"
        assert "it was finished first" not in caplog.text
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stopping.reset()
