"""Tiny runs of each benchmark: they check the machinery and the results' structure, never timing."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import capacity, overhead, report  # noqa: E402


def test_simulated_workers_do_not_import_tensorflow() -> None:
    code = (
        "import sys; import bench.sim_workers as s; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(m for m in sys.modules if 'tensor' in m or 'keras' in m); "
        "print(s.pb.CreateTrialRequest.DESCRIPTOR.full_name)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "keras_tuner.CreateTrialRequest"


@pytest.mark.parametrize("chief", ["stock", "ours"])
def test_capacity_tiny(chief: str) -> None:
    cap = 3 if chief == "stock" else 30  # stock may sleep 20 s before it looks again; ours ends by itself
    run = capacity.capacity(chief, workers=4, train_seconds=0.05, trials=12, timeout=90, exit_cap=cap)
    assert run["config"] == {"chief": chief, "workers": 4, "train_seconds": 0.05, "trials": 12, "timeout": 90, "exit_cap": cap}
    assert not run["timed_out"] and run["errors"] == []
    assert run["trials_ended"] == run["trials_requested"] == 12
    assert run["workers_served"] == 4
    assert run["trials_per_s"] > 0 and 0 < run["utilisation"] <= 1
    for name in ("CreateTrial", "UpdateTrial", "EndTrial"):
        lat = run["latency_ms"][name]
        assert lat["n"] >= 12 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert run["latency_ms"]["CreateTrial"]["n"] == 12  # the calls that got a trial
    assert run["latency_ms"]["CreateTrial (no trial)"]["n"] >= 4  # every worker was told STOPPED
    # Either it exited (and we know when), or it was still up at the cap.
    assert (run["chief_exit_seconds"] is not None and run["chief_exit_seconds"] >= 0) or run["chief_exit_capped_at"] == cap
    if chief == "ours":
        assert run["chief_exit_seconds"] is not None
        assert run["chief_exit_parts"]["search_finished_to_exit"] >= 0
    assert run["chief_cpu_ms_per_trial"] > 0


@pytest.mark.parametrize("chief", ["stock", "ours"])
def test_coordination_tiny(chief: str) -> None:
    run = capacity.coordination(chief, workers=3, trials=200, milestones=[100, 200], window=50, timeout=120, exit_cap=3)
    assert run["trials_ended"] == 200 and run["workers_served"] == 3
    assert [p["trials"] for p in run["points"]] == [100, 200]
    for point in run["points"]:
        assert point["wall_ms_per_trial"] > 0
        assert point["chief_cpu_ms_per_trial"] is not None and point["chief_cpu_ms_per_trial"] >= 0


def test_summarize_steady_window() -> None:
    """Two workers, two 1 s trials each; worker 1 starts late: the steady window starts then."""
    raw = {
        "workers": 2, "started": 0.0, "finished": 3.0, "ends": [1.0, 1.5, 2.0, 2.5],
        "train": [[(0.0, 1.0), (1.0, 2.0)], [(0.5, 1.5), (1.5, 2.5)]],
        "latency_ms": {"CreateTrial": [1.0, 2.0], "UpdateTrial": [1.0], "EndTrial": [1.0]},
        "idle_answers": 0, "timed_out": False, "errors": [], "client_cpu_seconds": 0.1, "loop_lag_ms": [0.1],
        "ready_seconds": 0.0, "samples": [],
    }
    s = capacity.summarize(raw, 4)
    assert s["trials_ended"] == 4 and s["workers_served"] == 2
    assert s["wall_seconds"] == pytest.approx(2.5)
    assert s["utilisation"] == pytest.approx(4.0 / (2 * 2.5))
    assert s["steady"]["window_seconds"] == pytest.approx(1.0)  # 0.5 (worker 1 busy) .. 1.5 (last start)
    assert s["steady"]["utilisation"] == pytest.approx(1.0)


def test_summarize_settled_window() -> None:
    """Settled: from 3 trial lengths after the start; latencies of the calls made from then on."""
    raw = {
        "workers": 2, "started": 0.0, "finished": 4.0, "ends": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5], "train_seconds": 0.5,
        "train": [[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)], [(0.5, 1.5), (1.5, 2.5), (2.5, 3.5)]],
        "latency_ms": {"CreateTrial": [90.0, 10.0, 20.0, 30.0], "UpdateTrial": [1.0], "EndTrial": [1.0]},
        "latency_at": {"CreateTrial": [0.0, 0.4, 1.6, 2.0], "UpdateTrial": [1.0], "EndTrial": [1.0]},
        "idle_answers": 0, "timed_out": False, "errors": [], "client_cpu_seconds": 0.1, "loop_lag_ms": [0.1],
        "ready_seconds": 0.0, "samples": [],
    }
    s = capacity.summarize(raw, 6)
    settled = s["settled"]
    assert settled["from_seconds"] == pytest.approx(1.5)
    assert settled["utilisation"] == pytest.approx(1.0)  # 1.5 .. 2.5 (the last start): both busy throughout
    create = settled["latency_ms"]["CreateTrial"]
    assert create["n"] == 2 and 20.0 <= create["p50"] <= 30.0 and create["p99"] <= 30.0  # the 90 ms start-burst call is left out
    assert s["latency_ms"]["CreateTrial"]["p99"] > 80.0
    raw["train_seconds"] = 0.0  # T = 0: nothing to settle
    assert capacity.summarize(raw, 6)["settled"] is None


def test_analyse_worker() -> None:
    timings = {"t0": 0.0, "exit": 20.0, "events": [
        ["chief", 1.0, 2.0], ["data", 2.0, 3.0], ["ask", 3.0, 4.0],
        ["trial", 4.0, 8.0], ["build", 4.0, 4.5], ["fit", 4.5, 8.0], ["saving", 5.0, 5.1], ["finish", 8.0, 8.5],
        ["ask", 8.5, 8.6], ["trial", 8.6, 12.0], ["build", 8.6, 9.0], ["fit", 9.0, 12.0], ["finish", 12.0, 12.4], ["wait", 12.4, 15.0],
    ]}
    w = overhead.analyse_worker(timings)
    assert w["trials"] == 2
    assert w["startup_seconds"] == pytest.approx(4.0)
    assert w["startup_parts"]["wait_for_chief"] == pytest.approx(1.0) and w["startup_parts"]["data"] == pytest.approx(1.0)
    assert w["window_seconds"] == pytest.approx(8.4)  # first trial handed out .. last report done
    assert w["fit_seconds"] == pytest.approx(6.5)
    assert w["outside_fit_parts"]["build_compile"] == pytest.approx(0.9)
    assert w["outside_fit_parts"]["report_and_cleanup"] == pytest.approx(0.9)
    assert w["outside_fit_parts"]["ask"] == pytest.approx(0.1)
    assert w["outside_fit_share"] == pytest.approx((8.4 - 6.5) / 8.4)


@pytest.mark.slow
def test_overhead_tiny(tmp_path: Path) -> None:
    run = overhead.run_demo(workers=1, trials=2, epochs=1, per_class=6, size=(24, 16), timeout=240, workdir=tmp_path)
    assert not run["timed_out"], run["logs"]
    assert set(run["exit_codes"].values()) == {0}, run["logs"]
    assert run["trials_completed"] == 2
    w = run["workers"]["tuner0"]
    assert w["trials"] == 2
    assert w["startup_seconds"] > 0 and w["fit_seconds"] > 0
    assert 0 < w["outside_fit_share"] < 1
    assert set(w["outside_fit_parts"]) == {"ask", "build_compile", "hparams_summary", "report_and_cleanup", "other"}
    assert run["chief_exit_seconds"] is not None and run["chief_exit_seconds"] >= 0


def _bench_cli(section: str, out: Path, timeout: float) -> tuple[dict, str]:
    """`python -m bench --quick --only <section>`: its results file and its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", section, "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_cli_input_section_writes_results(tmp_path: Path) -> None:
    results, stdout = _bench_cli("input", tmp_path / "results.json", timeout=400)
    inp = results["input"]
    assert inp["config"]["image_size"] == [60, 20] and inp["config"]["sizes"] == [64, 128]
    assert [r["images"] for r in inp["sizes"]] == [64, 128]
    for row in inp["sizes"]:
        assert row["cache_bytes"] == row["images"] * 60 * 20 * 3
        for field in ("peak_rss_anon_bytes", "first_batch_seconds", "images_per_s", "numpy_images_per_s", "startup_seconds"):
            assert row[field] > 0, field
        assert row["build"]["peak_rss_anon_bytes"] > 0 and row["build"]["seconds"] > 0
    before = inp["sizes"][0]["copy"]  # today's pipeline, at the smallest size only when quick
    assert before["images_per_s"] > 0 and before["ours_images_per_s"] > 0 and before["peak_rss_anon_bytes"] > 0 and "copy" not in inp["sizes"][1]
    assert inp["vs_copy"] == {"images": 64, "ratio": pytest.approx(before["ours_images_per_s"] / before["images_per_s"], rel=1e-3)}
    assert inp["floor"]["images"] == [128] and inp["floor"]["ratio_worst"] > 0
    assert inp["floor"]["images_per_s"] == [inp["sizes"][1]["numpy_images_per_s"]]
    assert inp["decode"] == {"images": 128, "images_per_s": inp["sizes"][1]["decode_images_per_s"]} and inp["decode"]["images_per_s"] > 0
    assert inp["speedup_vs_decode"] == pytest.approx(inp["sizes"][1]["images_per_s"] / inp["decode"]["images_per_s"], rel=1e-3)
    assert set(inp["flat"]) == {
        "images", "first_batch_ratio", "first_batch_min_ratio", "startup_seconds", "peak_rss_anon_ratio", "build_peak_rss_anon_ratio",
    }
    fitted = inp["sizes"][0]["fit"]  # ours, the copy and a PyDataset read by fit, where the copy runs
    for name in ("ours", "copy", "pydataset_w1", "pydataset_w2"):
        assert fitted[f"{name}_images_per_s"] > 0 and 0 < fitted[f"{name}_first_epoch_seconds"], name
    assert inp["sizes"][0]["pydataset_images_per_s"] == max(fitted["pydataset_w1_images_per_s"], fitted["pydataset_w2_images_per_s"])
    assert "fit" not in inp["sizes"][1] and [r["images"] for r in inp["through_fit"]] == [64]
    assert inp["through_fit"][0]["vs_copy"] == pytest.approx(fitted["ours_images_per_s"] / fitted["copy_images_per_s"], rel=1e-3)
    names = [t["target"] for t in results["targets"]]
    assert names[0] == "input: cache vs decode every trial (128 images)" and len(names) == 9, names
    assert "input: ours vs today's pipeline, read by fit (64 images)" in names
    assert "Input pipeline" in stdout and "numpy images/s" in stdout and "decode images/s" in stdout and "PyDataset images/s" in stdout
    assert not list(Path(tempfile.gettempdir()).glob("bench-input-*/images-*")), "the image folders were not removed"


@pytest.mark.slow
def test_worker_memory_tiny(tmp_path: Path) -> None:
    out = tmp_path / "worker_memory.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker_memory", "--sizes", "48", "--size", "30", "20", "--base-per-class", "3", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["images"] == 48 and run["exit_codes"] == {"chief": 0, "tuner0": 0}
    assert run["cache_bytes"] == 48 * 30 * 20 * 3
    assert run["worker"]["rss_anon_bytes"] > 0 and run["chief"]["rss_anon_bytes"] > 0
    assert " epoch 1/1 " in run["epoch_log"]
    assert "| 48 |" in proc.stdout


def test_only_replaces_its_sections_in_the_results_file(tmp_path: Path) -> None:
    from bench.__main__ import _merged

    out = tmp_path / "results.json"
    out.write_text(json.dumps({"quick": False, "started": "earlier", "capacity": [], "input": {"error": "old"}, "targets": []}))
    fresh = {"quick": False, "command": "python -m bench --only input", "started": "now", "seconds": 1.0, "input": {"error": "new"}}
    merged = _merged(out, fresh)
    assert merged["capacity"] == [] and merged["started"] == "earlier"  # kept as it was measured
    assert merged["input"] == {"error": "new"}
    assert merged["sections"]["input"] == {"command": "python -m bench --only input", "started": "now", "seconds": 1.0}
    assert _merged(out, dict(fresh, quick=True)) == dict(fresh, quick=True)  # a quick run never mixes with real figures


def test_report_renders_every_section() -> None:
    cap_run = {
        "config": {"chief": "ours", "workers": 2, "train_seconds": 1.0, "trials": 4},
        "trials_ended": 4, "trials_per_s": 2.0, "utilisation": 0.9, "steady": {"trials_per_s": 2.0, "utilisation": 0.97},
        "workers_served": 2, "latency_ms": {n: {"p50": 1.0, "p99": 2.0} for n in ("CreateTrial", "UpdateTrial", "EndTrial")},
        "chief_cpu_ms_per_trial": 3.0, "chief_exit_seconds": 1.2, "chief_exit_capped_at": None, "client_cpu_share": 0.1,
    }
    stock_run = dict(cap_run, config=dict(cap_run["config"], chief="stock"), trials_per_s=0.4, chief_exit_seconds=None, chief_exit_capped_at=22)
    results = {
        "capacity": [stock_run, cap_run],
        "coordination": [{"config": {"chief": "ours", "workers": 8, "window": 100, "trials": 300}, "trials_ended": 300,
                          "points": [{"trials": 200, "wall_ms_per_trial": 4.0, "chief_cpu_ms_per_trial": 3.0},
                                     {"trials": 300, "wall_ms_per_trial": 4.4, "chief_cpu_ms_per_trial": 3.3}]}],
        "input": {"error": "RuntimeError: boom"},
    }
    results["targets"] = report.targets(results)
    text = report.render(results)
    assert ">= 22" in text and "Input pipeline: RuntimeError: boom" in text
    by = {t["target"]: t for t in results["targets"]}
    assert by["throughput vs stock at M=2 (whole run)"]["value"] == pytest.approx(5.0)
    assert by["per-trial cost (chief CPU) at 300 vs 200 trials"]["met"] is True


def test_parallel_simulation_tiny() -> None:
    """The discrete-event simulation, in-process: budgets kept, figures in range,
    and stock Hyperband with one iteration (KerasTuner's default) idling while
    asha, on the same workers, keeps them busy until its budget runs out."""
    from bench import parallel
    from bench.parallel_report import summarize

    configs = parallel.plan([1, 4], 1, per_worker_epochs=40, bayesian_trials=11)
    assert {(c.algorithm, c.workers): c.budget for c in configs}[("asha", 4)] == 160
    assert {(c.algorithm, c.workers): c.budget for c in configs}[("our_bayesian", 4)] == 11 * 27
    records = [parallel.simulate(c) for c in configs]
    assert len(records) == len(parallel.ALGORITHMS) * 2
    for r in records:
        assert {"algorithm", "M", "seed", "utilisation", "time_to_target", "best_at_budget"} <= set(r)
        assert 0 < r["utilisation"] <= 1 and r["epochs"] <= (r["budget"] or 375)
        assert r["best_at_budget"] < 0 and (r["time_to_target"] is None or r["time_to_target"] <= r["makespan"])
        if r["M"] == 1:
            assert r["utilisation"] == pytest.approx(1.0) and r["idle_answers"] == 0
    our = [r for r in records if r["algorithm"] == "our_bayesian" and r["M"] == 4]
    assert our[0]["closest_running"] >= 1.0
    assert [s["algorithm"] for s in summarize(records)][:3] == ["stock_hyperband", "stock_hyperband", "stock_hyperband_1it"]

    one_iteration = parallel.simulate(parallel.SimConfig("stock_hyperband_1it", 16, 0, budget=None))
    asha = parallel.simulate(parallel.SimConfig("asha", 16, 0, budget=one_iteration["epochs"]))
    assert one_iteration["epochs"] == 375 and one_iteration["idle_answers"] > 0 and one_iteration["utilisation"] < 0.8
    assert asha["utilisation"] > one_iteration["utilisation"]


def test_parallel_plan_gives_the_fast_algorithms_more_seeds() -> None:
    from bench import parallel

    configs = parallel.plan([16], 2, fast_seeds=7)
    seeds = {a: sorted(c.seed for c in configs if c.algorithm == a) for a in parallel.ALGORITHMS}
    assert seeds["stock_bayesian"] == seeds["our_bayesian"] == [0, 1]
    assert seeds["asha"] == seeds["stock_hyperband"] == list(range(7))


def test_time_to_target_ratio_reports_its_spread() -> None:
    """The asha-vs-Hyperband ratio comes with what 5-seed blocks and a bootstrap say (and an unreached target is infinitely late)."""
    from bench.parallel_report import parallel_targets

    def records(algorithm: str, times: list[float | None]) -> list[dict]:
        return [{"algorithm": algorithm, "M": 16, "seed": s, "time_to_target": t, "best_at_budget": -3.0, "utilisation": 0.97}
                for s, t in enumerate(times)]

    stock = [200.0] * 5 + [100.0] * 5
    ours = [100.0] * 4 + [None] + [100.0] * 5
    added: dict[str, tuple] = {}
    parallel_targets(records("asha", ours) + records("stock_hyperband", stock),
                     lambda name, value, bound, met: added.__setitem__(name.strip(), (value, met)))
    ratio = next(v for k, v in added.items() if k.startswith("asha time to target at M=16"))
    assert ratio == (pytest.approx(1.5), True)  # medians 150 / 100
    assert added["the same ratio over each block of 5 seeds (2 blocks)"][0] == "1.00-2.00"
    low, high = map(float, added["its 95% bootstrap interval"][0].split("-"))
    assert 0.5 <= low < 1.5 < high <= 2.0


def test_cli_parallel_section_writes_its_records(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    results, stdout = _bench_cli("parallel", out, timeout=300)
    records = results["parallel"]
    algorithms = ("stock_hyperband", "stock_hyperband_1it", "asha", "stock_random", "stock_bayesian", "our_bayesian")
    assert {(r["algorithm"], r["M"], r["seed"]) for r in records} == {(a, m, 0) for a in algorithms for m in (1, 4)}
    assert results["sections"]["parallel"]["command"].endswith("--only parallel --out " + str(out))
    assert "Parallel search, simulated" in stdout and "our_bayesian" in stdout
