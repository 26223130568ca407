"""`plot_runs`: the PNG of one run and of two stages side by side."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from cluster.errors import BadInputError
from tuner_job.errors import ConfigError
from tuner_job.layout import WARM_PREFIX, WARM_START_LABEL, RunPaths
from tuner_job.objective import Objective

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (matplotlib depends on pillow)

from cluster.plot import plot_runs  # noqa: E402


def _entry(class_name: str, name: str, parent: tuple | None = None, **config) -> dict:
    conditions = [] if parent is None else [{"class_name": "Parent", "config": {"name": parent[0], "values": parent[1]}}]
    return {"class_name": class_name, "config": {"name": name, "default": None, "conditions": conditions, **config}}


def toonvision_space(narrow: bool) -> list[dict]:
    """The article's block 1, a log-scaled learning rate and a conditional hyperparameter."""
    f_lo, d_lo, d_hi = (8, 0.2, 0.5) if narrow else (4, 0.0, 0.9)
    return [
        _entry("Int", "conv_1_filters", min_value=f_lo, max_value=16, step=4, sampling="linear"),
        _entry("Choice", "conv_1_kernel_size", values=[3, 5], ordered=True),
        _entry("Int", "pool_1_size", min_value=2, max_value=4, step=1, sampling="linear"),
        _entry("Int", "pool_2_size", min_value=1, max_value=4, step=1, sampling="linear"),
        _entry("Float", "dropout_1_rate", min_value=d_lo, max_value=d_hi, step=0.1, sampling="linear"),
        _entry("Float", "learning_rate", min_value=1e-4, max_value=1e-1, step=None, sampling="log"),
        _entry("Choice", "optimizer", values=["adam", "sgd"], ordered=False),
        _entry("Float", "momentum", ("optimizer", ["sgd"]), min_value=0.0, max_value=0.9, step=0.1, sampling="linear"),
        {"class_name": "Fixed", "config": {"name": "classes", "conditions": [], "value": 4}},
    ]


def write_stage(shared: Path, run: str, trials: int, narrow: bool, seed: int, first_id: int = 0) -> RunPaths:
    """A run whose val_loss depends on its hyperparameters (best near 12 filters, lr 1e-3), with some failures."""
    rng = random.Random(seed)
    paths = RunPaths(shared, run)
    space = toonvision_space(narrow)
    for i in range(first_id, first_id + trials):
        values = {
            "conv_1_filters": rng.choice([8, 12, 16] if narrow else [4, 8, 12, 16]),
            "conv_1_kernel_size": rng.choice([3, 5]),
            "pool_1_size": rng.randint(2, 4),
            "pool_2_size": rng.randint(1, 4),
            "dropout_1_rate": round(rng.randint(2 if narrow else 0, 5 if narrow else 9) * 0.1, 10),
            "learning_rate": 10 ** rng.uniform(-3.5 if narrow else -4, -2.5 if narrow else -1),
            "optimizer": rng.choice(["adam", "sgd"]),
            "tuner/epochs": 10,
        }
        if values["optimizer"] == "sgd":
            values["momentum"] = round(rng.randint(0, 9) * 0.1, 10)
        loss = (
            0.35
            + 0.004 * (values["conv_1_filters"] - 12) ** 2
            + 0.12 * abs(math.log10(values["learning_rate"]) + 3)
            + 0.3 * (values["dropout_1_rate"] - 0.3) ** 2
            + (0.1 if values["optimizer"] == "sgd" else 0.0)
            + rng.gauss(0, 0.04)
        )
        failed = rng.random() < 0.08
        status, score = ("FAILED", None) if failed else ("COMPLETED", round(loss, 4))
        metrics = {} if failed else {"val_loss": {"direction": "min", "observations": [{"value": [score], "step": 3}]}}
        trial = {
            "trial_id": f"{i:02d}",
            "metrics": {"metrics": metrics},
            "hyperparameters": {"space": space, "values": values},
            "score": score,
            "best_step": 3,
            "status": status,
            "message": "ResourceExhaustedError: OOM" if failed else None,
        }
        paths.trial_dir(trial["trial_id"]).mkdir(parents=True)
        paths.trial_dir(trial["trial_id"]).joinpath("trial.json").write_text(json.dumps(trial))
    return paths


def _png(path: Path) -> tuple[tuple[int, int], dict[str, str]]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size, dict(image.text)


def test_one_run(tmp_path: Path) -> None:
    wide = write_stage(tmp_path, "wide", 40, narrow=False, seed=1)
    out = plot_runs([wide], tmp_path / "plots" / "wide.png", Objective("val_loss", "min"))
    assert out == tmp_path / "plots" / "wide.png"
    assert out.stat().st_size > 30_000
    (width, height), meta = _png(out)
    assert meta["Runs"] == "1"
    # classes is fixed: no panel; tuner/epochs is Hyperband's: no panel.
    assert meta["Hyperparameters"].split(",") == [
        "conv_1_filters", "conv_1_kernel_size", "pool_1_size", "pool_2_size",
        "dropout_1_rate", "learning_rate", "optimizer", "momentum",
    ]
    assert meta["Panels"] == "9"
    assert (width, height) == (1500, 420 + 3 * 340)  # 3 columns, 1 + 3 rows of panels
    assert not list(out.parent.glob(".*"))  # no temp file left behind


def test_two_stages_and_fewer_panels(tmp_path: Path) -> None:
    wide = write_stage(tmp_path, "wide", 40, narrow=False, seed=1)
    narrow = write_stage(tmp_path, "wide-narrow", 20, narrow=True, seed=2)
    one = plot_runs([wide], tmp_path / "one.png", Objective("val_loss", "min"))
    two = plot_runs([wide, narrow], tmp_path / "two.png", Objective("val_loss", "min"))
    (w1, h1), meta1 = _png(one)
    (w2, h2), meta2 = _png(two)
    assert meta2["Runs"] == "2" and meta2["Panels"] == meta1["Panels"]
    assert (w2, h2) == (w1, h1)  # stages share the panels, in their own colours
    assert "wide-narrow" in meta2["Title"]
    assert two.stat().st_size > one.stat().st_size  # more points drawn

    # A run with only two hyperparameters: one row of two panels, at least 10 inches wide.
    small = RunPaths(tmp_path, "small")
    for i, (score, status) in enumerate([(0.5, "COMPLETED"), (None, "FAILED"), (0.4, "COMPLETED")]):
        space = [_entry("Int", "a", min_value=1, max_value=9, step=1, sampling="linear"), _entry("Choice", "b", values=["x", "y"])]
        trial = {"trial_id": str(i), "hyperparameters": {"space": space, "values": {"a": i + 1, "b": "xy"[i % 2]}},
                 "score": score, "status": status, "metrics": {"metrics": {}}, "best_step": 0}
        small.trial_dir(str(i)).mkdir(parents=True)
        small.trial_dir(str(i)).joinpath("trial.json").write_text(json.dumps(trial))
    (w, h), meta = _png(plot_runs([small], tmp_path / "small.png", Objective("val_accuracy", "max")))
    assert (w, h, meta["Panels"]) == (1000, 420 + 340, "3")


def test_nothing_to_plot(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="nothing to plot: run empty has no completed trial \\(no trials yet\\)"):
        plot_runs([RunPaths(tmp_path, "empty")], tmp_path / "x.png", Objective("val_loss", "min"))
    with pytest.raises(ConfigError, match="objective_direction"):
        plot_runs([RunPaths(tmp_path, "empty")], tmp_path / "x.png", Objective("val_loss", "down"))
    assert not (tmp_path / "x.png").exists()


def _failed_run(shared: Path, run: str, count: int) -> RunPaths:
    paths = RunPaths(shared, run)
    for i in range(count):
        trial = {"trial_id": str(i), "hyperparameters": {"space": toonvision_space(False), "values": {"conv_1_filters": 4}},
                 "score": None, "status": "FAILED", "metrics": {"metrics": {}}, "best_step": 0, "message": "OOM"}  # fmt: skip
        paths.trial_dir(str(i)).mkdir(parents=True)
        paths.trial_dir(str(i)).joinpath("trial.json").write_text(json.dumps(trial))
    paths.config.write_text("run: " + run + "\n")
    return paths


def test_a_run_without_a_completed_trial_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    _failed_run(tmp_path, "broken", 3)
    result = CliRunner().invoke(app, ["results", "--shared-dir", str(tmp_path), "--run", "broken", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: nothing to plot: run broken has no completed trial (3 trials, none completed)\n"
    assert "plot written" not in result.stdout and not (tmp_path / "p.png").exists()


def test_the_x_axis_names_trial_ids(tmp_path: Path) -> None:
    run = write_stage(tmp_path, "ids", 7, narrow=False, seed=3, first_id=20)  # ids 20..26
    _, meta = _png(plot_runs([run], tmp_path / "ids.png", Objective("val_loss", "min")))
    ticks = meta["Ticks"].split(",")
    assert ticks and set(ticks) <= {f"{i:02d}" for i in range(20, 27)}, ticks  # ids, never 0.5, 1.0, ...
    assert "20" in ticks and "26" in ticks


def _seed(paths: RunPaths, source: RunPaths, ids: list[str]) -> None:
    """Copy trials of `source` into `paths` as its warm start does: id `w<id>`, message `warm-start:<run>`."""
    for trial_id in ids:
        trial = json.loads(source.trial_dir(trial_id).joinpath("trial.json").read_text())
        trial.update(trial_id=f"{WARM_PREFIX}{trial_id}", message=f"{WARM_START_LABEL}{source.run}")
        paths.trial_dir(trial["trial_id"]).mkdir(parents=True)
        paths.trial_dir(trial["trial_id"]).joinpath("trial.json").write_text(json.dumps(trial))


def test_warm_start_points_are_drawn_once(tmp_path: Path) -> None:
    wide = write_stage(tmp_path, "wide", 10, narrow=False, seed=1)
    narrow = write_stage(tmp_path, "wide-narrow", 4, narrow=True, seed=2, first_id=0)
    seeded = [t for t in ("00", "01", "02", "03", "04") if json.loads(wide.trial_dir(t).joinpath("trial.json").read_text())["score"]]
    _seed(narrow, wide, seeded)

    _, both = _png(plot_runs([wide, narrow], tmp_path / "both.png", Objective("val_loss", "min")))
    drawn = both["Trials"].split(",")
    assert len(drawn) == len(set(drawn)) == 10 + 4  # each trial once: the seeded ones where they were trained
    assert not any(name.startswith(f"wide-narrow/{WARM_PREFIX}") for name in drawn)

    _, alone = _png(plot_runs([narrow], tmp_path / "alone.png", Objective("val_loss", "min")))
    assert sorted(alone["Trials"].split(",")) == sorted([f"wide-narrow/{i:02d}" for i in range(4)] +
                                                        [f"wide-narrow/{WARM_PREFIX}{t}" for t in seeded])  # fmt: skip
