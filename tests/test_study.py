"""Warm start and `tunectl study`: the article's staged search (issue 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.study import study_config
from helpers import REPO, attempt_events, small_config, trial_files
from tuner_job.config import load_config
from tuner_job.stages import stage_config

pytestmark = pytest.mark.slow


def test_warm_start_seeds_the_trials_inside_the_new_space(search) -> None:
    first = search(run="a", max_trials=4)
    first.start_all(workers=2)
    assert first.wait_all(timeout=300) == {"chief": 0, "tuner0": 0, "tuner1": 0}, first.all_logs()
    old = trial_files(first.run_dir)
    kernel = old[sorted(old)[0]]["hyperparameters"]["values"]["conv_1_kernel_size"]
    inside = sorted(
        f"w{tid}" for tid, t in old.items() if t["status"] == "COMPLETED" and t["hyperparameters"]["values"]["conv_1_kernel_size"] == kernel
    )
    assert 1 <= len(inside) <= 4

    second = search(run="b", tuner="bayesian", max_trials=2, warm_start="a", space={"conv_1_kernel_size": {"value": kernel}})
    second.start_all(workers=2)
    assert second.wait_all(timeout=300) == {"chief": 0, "tuner0": 0, "tuner1": 0}, second.all_logs()
    trials = trial_files(second.run_dir)
    seeded = sorted(tid for tid in trials if tid.startswith("w"))
    trained = sorted(tid for tid in trials if not tid.startswith("w"))
    assert seeded == inside, (seeded, inside)
    assert len(trained) == 2 and all(trials[t]["status"] == "COMPLETED" for t in trials), trials
    for tid in seeded:  # the old metrics and score, as a COMPLETED observation
        assert trials[tid]["score"] == pytest.approx(old[tid[1:]]["score"])
        assert trials[tid]["hyperparameters"]["values"]["conv_1_kernel_size"] == kernel
    for tid in trained:  # the new stage searched the narrowed space
        assert trials[tid]["hyperparameters"]["values"]["conv_1_kernel_size"] == kernel
    assert sorted(e["trial"] for e in attempt_events(second.run_dir) if e["event"] == "start") == trained  # seeded ones never trained
    log = second.log("chief")
    assert f"warm start: {len(inside)} of 4 trials from run a fall inside the new space" in log, log[-3000:]
    status = json.loads((second.run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["max_trials"] == 2 + len(inside) and status["trials_done"] == 2
    results = json.loads((second.run_dir / "results.json").read_text())
    ids = [t["trial_id"] for t in results["trials"]]
    assert len(ids) == len(set(ids)) == len(trials)
    assert {t["trial_id"]: t["worker"] for t in results["trials"] if t["trial_id"].startswith("w")} == {tid: "warm-start:a" for tid in seeded}
    assert results["trials"][0]["score"] == pytest.approx(min(t["score"] for t in trials.values()))  # seeded trials compete

    # A restarted chief finds the seeded trials in its state: nothing is seeded or trained again.
    second.start("chief")
    assert second.wait("chief", timeout=120) == 0, second.log("chief")[-3000:]
    assert sorted(trial_files(second.run_dir)) == sorted(trials)
    assert second.log("chief").count("warm start:") == 1


def test_a_missing_warm_start_run_is_a_config_error(search) -> None:
    s = search(run="b", warm_start="nope")
    s.start("chief")
    assert s.wait("chief", timeout=120) == 2
    log = s.log("chief")
    assert "error: warm_start: run 'nope' not found under" in log, log[-2000:]
    assert not s.run_dir.exists()  # bad input leaves the volume untouched


def test_tunectl_study_runs_two_stages(shared: Path, tmp_path: Path) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(small_config(run="st")))
    plot = tmp_path / "study.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster",
            "study",
            "--config",
            str(config),
            "--shared-dir",
            str(shared),
            "--stages",
            "random:3,bayesian:2",
            "--workers",
            "2",
            "--epochs",
            "1",
            "--top",
            "2",
            "--tensorboard-port",
            "0",
            "--fresh",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=480,
        cwd=REPO,
    )
    out = result.stdout
    assert result.returncode == 0, out[-5000:] + result.stderr[-2000:]
    runs = shared / "runs"
    first, second = trial_files(runs / "st-s1"), trial_files(runs / "st-s2")
    assert len(first) == 3 and all(t["status"] == "COMPLETED" for t in first.values())
    assert sum(1 for tid in second if not tid.startswith("w")) == 2
    seeded = [tid for tid in second if tid.startswith("w")]
    assert seeded and all(tid[1:] in first for tid in seeded)
    stage2 = yaml.safe_load((runs / "st-s2" / "search.yaml").read_text())
    assert stage2["warm_start"] == "st-s1" and stage2["tuner"] == "bayesian" and stage2["space"], stage2
    for name in ("st-s1", "st-s2"):
        assert json.loads((runs / name / "status.json").read_text())["state"] == "completed"
        assert (runs / name / "results.json").is_file()
        assert f"run {name}: completed" in out, out[-3000:]
    assert "space narrowed around the top 2 of 3 completed trials of st-s1" in out
    assert "warm start from st-s1" in out and "warm-start:st-s1" in out
    # One implementation: the stage the study ran is the one a `stages:` search makes of the same input.
    staged = study_config(load_config(config), "random:3,bayesian:2", top=2, epochs=1)
    assert load_config(runs / "st-s2" / "search.yaml") == stage_config(staged, 2, shared)[0]
    assert plot.stat().st_size > 1000

    bad = subprocess.run([sys.executable, "-m", "cluster", "study", "--stages", "random:3"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "at least two stages" in bad.stderr


def test_staged_search_with_an_asha_stage(search) -> None:
    """`stages: random:3,asha:4` in one chief: stage 2 is asha inside the space
    narrowed around stage 1, warm-started from it. The seeded trials count for
    the best but sit outside the rungs (their weights are stage 1's), so only
    trials of this stage are promoted."""
    s = search(run="sa", stages="random:3,asha:4", epochs=3, stage_top=2)
    s.start_all(workers=2)
    assert s.wait_all(timeout=400) == {"chief": 0, "tuner0": 0, "tuner1": 0}, s.all_logs()
    runs = s.shared / "runs"
    stage2 = yaml.safe_load((runs / "sa-s2" / "search.yaml").read_text())
    assert (stage2["tuner"], stage2["warm_start"], stage2["max_trials"]) == ("asha", "sa-s1", 4) and stage2["space"], stage2
    trials = trial_files(runs / "sa-s2")
    seeded = {t: v for t, v in trials.items() if t.startswith("w")}
    own = {t: v["hyperparameters"]["values"] for t, v in trials.items() if not t.startswith("w")}
    assert seeded and all("tuner/rung" not in v["hyperparameters"]["values"] for v in seeded.values())
    rung0 = [t for t, v in own.items() if v["tuner/rung"] == 0]
    promoted = [t for t, v in own.items() if v["tuner/rung"] == 1]
    # The best of the first 3 results goes up; the 4th result too if it beats that one.
    assert len(rung0) == 4 and len(promoted) in (1, 2), own
    best = min(rung0, key=lambda t: trials[t]["score"])
    assert best in {own[t]["tuner/trial_id"] for t in promoted}
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    status = json.loads((runs / "sa-s2" / "status.json").read_text())
    assert (status["state"], status["max_trials"], status["trials_done"]) == ("completed", 4, 4 + len(promoted))
    assert "seeded trials from run sa-s1; this run starts up to 4 new configurations" in s.log("chief")
