"""Whole searches: a real chief and real workers on loopback, real TensorFlow and KerasTuner."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from helpers import attempt_events, trial_files

pytestmark = pytest.mark.slow


def _check_results_agree(run_dir: Path, expected_trials: int) -> dict:
    trials = trial_files(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    ids = [t["trial_id"] for t in results["trials"]]
    assert len(ids) == len(set(ids)) == len(trials) == expected_trials, ids
    by_id = {t["trial_id"]: t for t in results["trials"]}
    for trial_id, trial in trials.items():
        assert by_id[trial_id]["status"] == trial["status"]
        assert by_id[trial_id]["score"] == pytest.approx(trial["score"])
        assert by_id[trial_id]["hyperparameters"] == trial["hyperparameters"]["values"]
    with open(run_dir / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial_id"] for r in rows] == ids
    best = results["trials"][0]
    completed = [t for t in trials.values() if t["status"] == "COMPLETED"]
    assert best["score"] == pytest.approx(min(t["score"] for t in completed))
    hyperparameters = (run_dir / "best" / "hyperparameters.yaml").read_text()
    assert f"trial_id: '{best['trial_id']}'" in hyperparameters or f"trial_id: {best['trial_id']}" in hyperparameters
    assert (run_dir / "best" / "model.keras").stat().st_size > 1000
    return results


def test_random_search_with_two_workers_completes(search) -> None:
    s = search(max_trials=6)
    s.start_all(workers=2)
    codes = s.wait_all(timeout=240)
    all_exited = time.time()
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()
    trials = trial_files(s.run_dir)
    assert sorted(t["status"] for t in trials.values()) == ["COMPLETED"] * 6
    results = _check_results_agree(s.run_dir, 6)
    workers = {t["worker"] for t in results["trials"]}
    assert workers == {"tuner0", "tuner1"}, workers
    # Exactly one training per trial, and everyone left promptly after the last one.
    events = attempt_events(s.run_dir)
    starts = [e["trial"] for e in events if e["event"] == "start"]
    assert sorted(starts) == sorted(trials), starts
    last_end = max(e["time"] for e in events if e["event"] == "end")
    status = json.loads((s.run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["trials_done"] == 6
    assert status["updated"] - last_end < 5, "the chief took long to notice the end"
    assert all_exited - last_end < 15, f"processes lingered {all_exited - last_end:.1f}s after the last trial"
    chief_log = s.log("chief")
    assert "search completed" in chief_log and "rank" in chief_log
    for worker in ("tuner0", "tuner1"):
        log = s.log(worker)
        assert f"{worker} INFO trial " in log and " start\n" in log and "epoch 1/1" in log and " end: COMPLETED" in log, log[-2000:]
    # The config this run used is saved with the run.
    assert "max_trials: 6" in (s.run_dir / "search.yaml").read_text()


@pytest.mark.parametrize(
    ("tuner", "extra", "expected"),
    [
        ("hyperband", {"epochs": 3, "hyperband_factor": 3, "max_trials": 20}, None),
        ("bayesian", {"max_trials": 5}, 5),
    ],
)
def test_other_tuners_complete(search, tuner: str, extra: dict, expected: int | None) -> None:
    s = search(tuner=tuner, **extra)
    s.start_all(workers=2)
    codes = s.wait_all(timeout=280)
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()
    trials = trial_files(s.run_dir)
    assert trials and all(t["status"] == "COMPLETED" for t in trials.values())
    if expected is not None:
        assert len(trials) == expected
    _check_results_agree(s.run_dir, len(trials))
    if tuner == "hyperband":
        values = [t["hyperparameters"]["values"] for t in trials.values()]
        assert any("tuner/trial_id" in v for v in values), "hyperband never promoted a trial"


def test_asha_search_promotes_asynchronously_and_continues_from_the_parent(search) -> None:
    """`tuner: asha` through a real chief and two workers: 6 configurations at
    1 epoch, each promoted to 3 epochs as soon as it ranks in the top third of
    the results so far (so the final top 2, and up to 2 more when a result that
    arrives later beats an earlier promotion), each promotion training epochs 2-3
    from its parent's checkpoint; results, status and TensorBoard logs cover
    every trial."""
    s = search(tuner="asha", max_trials=6, epochs=3, hyperband_factor=3)
    s.start_all(workers=2)
    codes = s.wait_all(timeout=280)
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()
    trials = trial_files(s.run_dir)
    values = {tid: t["hyperparameters"]["values"] for tid, t in trials.items()}
    rung0 = sorted(t for t, v in values.items() if v["tuner/rung"] == 0)
    promoted = sorted(t for t, v in values.items() if v["tuner/rung"] == 1)
    assert len(rung0) == 6 and 2 <= len(promoted) <= 4 and len(trials) == 6 + len(promoted), values
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    scores = {t: trials[t]["score"] for t in rung0}
    parents = {values[t]["tuner/trial_id"] for t in promoted}
    top_two = sorted(scores, key=scores.get)[:2]
    assert len(parents) == len(promoted) and parents <= set(rung0) and set(top_two) <= parents
    epochs = {}
    for event in attempt_events(s.run_dir):
        if event["event"] == "epoch":
            epochs.setdefault(event["trial"], []).append(event["epoch"])
    for trial_id in promoted:
        parent = values[trial_id]["tuner/trial_id"]
        assert (values[trial_id]["tuner/epochs"], values[trial_id]["tuner/initial_epoch"]) == (3, 1)
        assert {k: v for k, v in values[trial_id].items() if not k.startswith("tuner/")} == {
            k: v for k, v in values[parent].items() if not k.startswith("tuner/")
        }
        assert epochs[trial_id] == [1, 2], epochs  # epochs 2 and 3, after the parent's one
        assert (s.run_dir / "logs" / f"trial_{trial_id}").is_dir()
    assert all(epochs[t] == [0] for t in rung0), epochs
    assert "it trains from fresh weights" not in s.all_logs()  # every parent's checkpoint was there
    _check_results_agree(s.run_dir, len(trials))
    status = json.loads((s.run_dir / "status.json").read_text())
    assert (status["state"], status["max_trials"], status["trials_done"]) == ("completed", 6, len(trials))


def test_user_hypermodel_by_path_runs(search, tmp_path: Path) -> None:
    file = tmp_path / "my_model.py"
    file.write_text(
        "import keras\n"
        "def build(hp, input_shape, num_classes):\n"
        "    model = keras.Sequential([\n"
        "        keras.Input(input_shape), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),\n"
        "        keras.layers.Dense(hp.Choice('units', [4, 8]), activation='relu'),\n"
        "        keras.layers.Dense(num_classes, activation='softmax')])\n"
        "    model.compile(keras.optimizers.Adam(hp.Float('lr', 1e-4, 1e-2, sampling='log')),\n"
        "                  'sparse_categorical_crossentropy', metrics=['accuracy'])\n"
        "    return model\n"
    )
    s = search(hypermodel=f"{file}:build", max_trials=3)
    s.start_all(workers=1)
    assert s.wait_all(timeout=180) == {"chief": 0, "tuner0": 0}, s.all_logs()
    trials = trial_files(s.run_dir)
    assert len(trials) == 3
    assert all(set(t["hyperparameters"]["values"]) == {"units", "lr"} for t in trials.values())


def test_space_overrides_narrow_the_search(search) -> None:
    s = search(max_trials=3, space={"conv_1_filters": {"value": 8}, "pool_1_size": {"min": 3, "max": 4}, "conv_2_kernel_size": {"values": [5]}})
    s.start_all(workers=1)
    assert s.wait_all(timeout=180) == {"chief": 0, "tuner0": 0}, s.all_logs()
    for trial in trial_files(s.run_dir).values():
        values = trial["hyperparameters"]["values"]
        assert values["conv_1_filters"] == 8 and values["conv_2_kernel_size"] == 5 and values["pool_1_size"] in (3, 4)
        assert "dropout_2_rate" in values  # the rest is still tuned


def test_tensorboard_holds_hparams_for_every_trial(search) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    s = search(max_trials=3)
    s.start_all(workers=1)
    assert s.wait_all(timeout=180) == {"chief": 0, "tuner0": 0}, s.all_logs()
    trials = trial_files(s.run_dir)
    for trial_id, trial in trials.items():
        accumulator = EventAccumulator(str(s.run_dir / "logs" / f"trial_{trial_id}"))
        accumulator.Reload()
        content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
        start = plugin_data_pb2.HParamsPluginData.FromString(content[hparams_metadata.SESSION_START_INFO_TAG]).session_start_info
        logged = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
        assert logged == pytest.approx(trial["hyperparameters"]["values"]), trial_id
        validation = EventAccumulator(str(s.run_dir / "logs" / f"trial_{trial_id}" / "validation"))
        validation.Reload()
        assert "epoch_loss" in validation.Tags()["tensors"], validation.Tags()
    experiment = EventAccumulator(str(s.run_dir / "logs"))
    experiment.Reload()
    assert hparams_metadata.EXPERIMENT_TAG in experiment.PluginTagToContent(hparams_metadata.PLUGIN_NAME)


def test_started_tensorboard_serves_the_hparams_plugin(search) -> None:
    import subprocess
    import sys
    import urllib.request

    from helpers import free_port

    s = search(max_trials=2)
    s.start_all(workers=1)
    assert s.wait_all(timeout=180) == {"chief": 0, "tuner0": 0}, s.all_logs()
    port = free_port()
    tb = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(s.shared / "runs"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugins_listing", timeout=5) as response:
                    body = response.read().decode()
                if json.loads(body).get("hparams", {}).get("enabled"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(1)
        assert json.loads(body)["hparams"]["enabled"], body
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups",
            data=json.dumps(
                {
                    "experimentName": "",
                    "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                    "colParams": [],
                    "startIndex": 0,
                    "sliceSize": 100,
                }
            ).encode(),
            headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            groups = json.loads(response.read())
        assert groups.get("totalSize", len(groups.get("sessionGroups", []))) == 2, groups
    finally:
        tb.kill()
        tb.wait(10)


def test_executions_per_trial_and_early_stopping(search) -> None:
    s = search(max_trials=2, executions_per_trial=2, epochs=4, early_stopping_patience=1)
    s.start_all(workers=1)
    assert s.wait_all(timeout=180) == {"chief": 0, "tuner0": 0}, s.all_logs()
    events = attempt_events(s.run_dir)
    for trial_id, trial in trial_files(s.run_dir).items():
        assert trial["status"] == "COMPLETED"
        executions = {e["execution"] for e in events if e["event"] == "epoch" and e["trial"] == trial_id}
        assert executions == {0, 1}, executions
        # Both executions' best val_loss, averaged, is the trial's score.
        per_execution = [
            min(e["logs"]["val_loss"] for e in events if e["event"] == "epoch" and e["trial"] == trial_id and e["execution"] == x) for x in (0, 1)
        ]
        assert trial["score"] == pytest.approx(sum(per_execution) / 2, rel=1e-5)
    assert (s.run_dir / "logs" / f"trial_{trial_id}" / "execution_1").is_dir()
