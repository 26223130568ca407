"""Narrowing (`tuner_job.narrowing`, `tuner_job.space_model`): the rules, the never-wider property,
top selection, and `tunectl narrow` end to end."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from cluster.narrow import narrow_run
from tuner_job.config import ChoiceOverride, FixedOverride, RangeOverride, load_config
from tuner_job.errors import NarrowingError
from tuner_job.layout import RunPaths
from tuner_job.narrowing import narrow_space, select_top
from tuner_job.objective import Objective
from tuner_job.space_model import Hyperparameter, apply_overrides, space_from_trials
from tuner_job.trials import read_trials

LOSS = Objective("val_loss", "min")

# --- a run on disk, in KerasTuner 1.4.8's trial.json format ------------------------------------------


def _int(name: str, lo: int, hi: int, step: int | None = 1, sampling: str = "linear", parent: tuple | None = None) -> dict:
    return _entry("Int", name, parent, min_value=lo, max_value=hi, step=step, sampling=sampling, default=None)


def _float(name: str, lo: float, hi: float, step: float | None = None, sampling: str = "linear") -> dict:
    return _entry("Float", name, None, min_value=lo, max_value=hi, step=step, sampling=sampling, default=lo)


def _choice(name: str, values: list, parent: tuple | None = None) -> dict:
    return _entry("Choice", name, parent, values=values, ordered=False, default=values[0])


def _entry(class_name: str, name: str, parent: tuple | None, **config: Any) -> dict:
    conditions = [] if parent is None else [{"class_name": "Parent", "config": {"name": parent[0], "values": parent[1]}}]
    return {"class_name": class_name, "config": {"name": name, "conditions": conditions, **config}}


SPACE = [
    _int("conv_1_filters", 4, 16, step=4),
    _choice("conv_1_kernel_size", [3, 5, 7]),
    _int("pool_1_size", 2, 4),
    _float("dropout_1_rate", 0.0, 0.9, step=0.1),
    _float("learning_rate", 1e-4, 1e-1, sampling="log"),
    {"class_name": "Boolean", "config": {"name": "batch_norm", "default": False, "conditions": []}},
    {"class_name": "Boolean", "config": {"name": "augment", "default": False, "conditions": []}},
    {"class_name": "Fixed", "config": {"name": "classes", "conditions": [], "value": 4}},
    _choice("model_type", ["cnn", "mlp", "transformer"]),
    _int("units", 8, 64, step=8, parent=("model_type", ["cnn"])),
    _int("heads", 1, 8, parent=("model_type", ["transformer"])),
]

# (score, status, values) in trial order; val_loss, lower is better.
TRIALS = [
    (0.30, "COMPLETED", dict(conv_1_filters=8, conv_1_kernel_size=7, pool_1_size=2, dropout_1_rate=0.30000000000000004,
                             learning_rate=3e-4, batch_norm=True, augment=False, model_type="cnn", units=16)),
    (0.90, "COMPLETED", dict(conv_1_filters=16, conv_1_kernel_size=5, pool_1_size=4, dropout_1_rate=0.9,
                             learning_rate=0.09, batch_norm=False, augment=True, model_type="transformer", heads=4)),
    (0.35, "COMPLETED", dict(conv_1_filters=12, conv_1_kernel_size=3, pool_1_size=2, dropout_1_rate=0.6000000000000001,
                             learning_rate=2e-3, batch_norm=True, augment=True, model_type="mlp")),
    (None, "FAILED", dict(conv_1_filters=4, conv_1_kernel_size=5, pool_1_size=3, dropout_1_rate=0.0,
                          learning_rate=1e-4, batch_norm=False, augment=False, model_type="transformer", heads=8)),
    (0.32, "COMPLETED", dict(conv_1_filters=8, conv_1_kernel_size=3, pool_1_size=2, dropout_1_rate=0.4,
                             learning_rate=1e-3, batch_norm=True, augment=False, model_type="cnn", units=40)),
    (0.80, "COMPLETED", dict(conv_1_filters=4, conv_1_kernel_size=5, pool_1_size=3, dropout_1_rate=0.1,
                             learning_rate=0.05, batch_norm=False, augment=True, model_type="mlp")),
    (0.31, "COMPLETED", dict(conv_1_filters=12, conv_1_kernel_size=7, pool_1_size=2, dropout_1_rate=0.5,
                             learning_rate=5e-4, batch_norm=True, augment=True, model_type="cnn", units=24,
                             **{"tuner/epochs": 4, "tuner/trial_id": "00"})),
    (0.36, "COMPLETED", dict(conv_1_filters=16, conv_1_kernel_size=3, pool_1_size=2, dropout_1_rate=0.2,
                             learning_rate=1e-2, batch_norm=True, augment=False, model_type="cnn", units=64)),
    (None, "RUNNING", dict(conv_1_filters=4, conv_1_kernel_size=5, pool_1_size=4, dropout_1_rate=0.0,
                           learning_rate=1e-4, batch_norm=False, augment=False, model_type="mlp")),
]
# Top 5 by score: trials 00 (0.30), 06 (0.31), 04 (0.32), 02 (0.35), 07 (0.36).


def trial_json(trial_id: str, score: float | None, status: str, values: dict, space: list = SPACE) -> dict:
    metrics = {} if score is None else {"val_loss": {"direction": "min", "observations": [{"value": [score], "step": 1}]}}
    return {
        "trial_id": trial_id,
        "metrics": {"metrics": metrics},
        "hyperparameters": {"space": space, "values": values},
        "score": score,
        "best_step": 1 if score is not None else 0,
        "status": status,
        "message": None,
    }


def write_run(shared: Path, run: str, trials: list = TRIALS, config: dict | None = None) -> RunPaths:
    paths = RunPaths(shared, run)
    paths.root.mkdir(parents=True)
    paths.config.write_text(yaml.safe_dump({"run": run, "tuner": "random", "max_trials": 100, **(config or {})}))
    for i, (score, status, values) in enumerate(trials):
        trial_id = f"{i:02d}"
        paths.trial_dir(trial_id).mkdir(parents=True)
        paths.trial_dir(trial_id).joinpath("trial.json").write_text(json.dumps(trial_json(trial_id, score, status, values)))
    return paths


@pytest.fixture
def run(tmp_path: Path) -> RunPaths:
    return write_run(tmp_path / "shared", "wide")


def _narrowed(paths: RunPaths, direction: str = "min", **kwargs: Any):
    trials = list(read_trials(paths).trials.values())
    space = space_from_trials(trials)
    return narrow_space(trials, space, Objective("val_loss", direction), **kwargs)


# --- the rules, exactly ------------------------------------------------------------------------------


def test_narrowing_rules_on_a_constructed_run(run: RunPaths) -> None:
    result = _narrowed(run, top_k=5)
    assert result.top_ids == ["00", "06", "04", "02", "07"]
    assert result.completed == 7
    o = result.overrides
    assert o["conv_1_filters"] == RangeOverride(min=8, max=16)  # int on its step-4 grid
    assert o["conv_1_kernel_size"] == ChoiceOverride(values=[3, 7])  # 5 dropped, order kept
    assert o["pool_1_size"] == FixedOverride(value=2)  # constant among the top trials
    assert o["dropout_1_rate"] == RangeOverride(min=0.2, max=0.6)  # float noise snapped to the 0.1 grid
    assert o["learning_rate"] == RangeOverride(min=3e-4, max=1e-2)  # log, no step: the observed span
    assert o["batch_norm"] == FixedOverride(value=True)  # a boolean constant among the top trials
    assert "augment" not in o  # both seen: no narrowing, so no override
    assert o["model_type"] == ChoiceOverride(values=["cnn", "mlp"])  # keeps the original order
    assert o["units"] == RangeOverride(min=16, max=64)  # only the 4 cnn trials count
    assert "heads" not in o  # never active in a top trial: unchanged
    assert "classes" not in o  # fixed by the hypermodel already
    assert not any(name.startswith("tuner/") for name in o)

    rows = {row.name: row for row in result.rows}
    assert rows["units"].backed == 4 and "4 of 5" in rows["units"].note
    assert rows["heads"].backed == 0 and "inactive in all top trials" in rows["heads"].note
    assert rows["pool_1_size"].after == "= 2"
    assert rows["conv_1_filters"].before == "4 .. 16 step 4" and rows["conv_1_filters"].after == "8 .. 16 step 4"


def test_top_three_fixes_and_drops(run: RunPaths) -> None:
    o = _narrowed(run, top_k=3).overrides  # 00, 06, 04: all cnn with batch_norm
    assert o["conv_1_filters"] == RangeOverride(min=8, max=12)
    assert o["conv_1_kernel_size"] == ChoiceOverride(values=[3, 7])
    assert o["model_type"] == FixedOverride(value="cnn")
    assert o["units"] == RangeOverride(min=16, max=40)
    assert o["learning_rate"] == RangeOverride(min=3e-4, max=1e-3)
    assert o["dropout_1_rate"] == RangeOverride(min=0.3, max=0.5)


def test_maximised_objective_picks_the_other_end(run: RunPaths) -> None:
    result = _narrowed(run, top_k=2, direction="max")
    assert result.top_ids == ["01", "05"]
    assert result.overrides["pool_1_size"] == RangeOverride(min=3, max=4)


def test_step_snapping_goes_outward_and_stays_inside() -> None:
    dropout = Hyperparameter("d", "float", min=0.0, max=0.95, step=0.1)
    trials = [_scored("1", 0.1, d=0.25), _scored("2", 0.2, d=0.91)]
    narrowed = narrow_space(trials, {"d": dropout}, LOSS, top_k=2).narrowed["d"]
    assert (narrowed.min, narrowed.max) == (0.2, 0.95)  # 1.0 would be wider than before

    units = Hyperparameter("u", "int", min=32, max=512, step=2, sampling="log")  # 32, 64, 128, 256, 512
    trials = [_scored("1", 0.1, u=70), _scored("2", 0.2, u=200)]
    narrowed = narrow_space(trials, {"u": units}, LOSS, top_k=2).narrowed["u"]
    assert (narrowed.min, narrowed.max) == (64, 256)


def test_existing_overrides_are_the_starting_point(tmp_path: Path) -> None:
    config = {"space": {"conv_1_filters": {"min": 8, "max": 16}, "classes": {"value": 4}, "gone": {"values": ["a", "b"]}}}
    write_run(tmp_path, "wide", config=config)
    result, new = narrow_run(tmp_path, "wide", top_k=5, out=tmp_path / "out.yaml")
    assert new.space["conv_1_filters"] == RangeOverride(min=8, max=16)  # unchanged, but still pinned
    assert new.space["classes"] == FixedOverride(value=4)
    assert new.space["gone"] == ChoiceOverride(values=["a", "b"])  # not in any trial: kept as it was
    assert new.space["pool_1_size"] == FixedOverride(value=2)
    assert {row.name for row in result.rows} >= {"gone", "classes"}


def test_apply_overrides_cuts_the_definitions_down() -> None:
    space = space_from_trials([trial_json("0", 1.0, "COMPLETED", {})])
    cut = apply_overrides(space, {"conv_1_filters": RangeOverride(min=5.0, max=100.0), "units": FixedOverride(value=8)})
    assert (cut["conv_1_filters"].min, cut["conv_1_filters"].max) == (5, 16)
    assert cut["units"].kind == "fixed" and cut["units"].conditions == (("model_type", ("cnn",)),)


# --- top selection -----------------------------------------------------------------------------------


def _scored(trial_id: str, score: float | None, status: str = "COMPLETED", **values: Any) -> dict:
    return {"trial_id": trial_id, "status": status, "score": score, "hyperparameters": {"values": values}}


def test_top_and_quantile_selection() -> None:
    trials = [_scored(str(i), float(s), x=i) for i, s in enumerate([5, 3, 9, 1, 7, 2, 8, 4, 6, 0])]
    trials.append(_scored("f", None, "FAILED", x=10))
    trials.append(_scored("n", float("nan"), x=11))
    trials.append(_scored("r", -100.0, "RUNNING", x=12))
    top, completed = select_top(trials, LOSS)
    assert completed == 10 and [t["trial_id"] for t in top] == ["9", "3", "5", "1", "7"]  # default 5
    assert [t["trial_id"] for t in select_top(trials, LOSS, top_k=2)[0]] == ["9", "3"]
    assert len(select_top(trials, LOSS, top_k=50)[0]) == 10  # at most the completed ones
    assert [t["trial_id"] for t in select_top(trials, LOSS, quantile=0.2)[0]] == ["9", "3"]
    assert len(select_top(trials, LOSS, quantile=0.25)[0]) == 3  # ceil(2.5)
    assert len(select_top(trials, LOSS, quantile=0.01)[0]) == 1
    assert [t["trial_id"] for t in select_top(trials, Objective("val_auc", "max"), top_k=1)[0]] == ["2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 3, "quantile": 0.5}, "cannot be used together"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"quantile": 1.5}, "quantile must be in (0, 1]"),
        ({"quantile": 0.0}, "quantile must be in (0, 1]"),
    ],
)
def test_bad_selection_is_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(NarrowingError, match=message.replace("(", r"\(").replace("]", r"\]")) as raised:
        select_top([_scored("1", 1.0)], LOSS, **kwargs)
    assert "--" not in str(raised.value)  # the core names no launcher flag: the chief has none


def test_no_completed_trial_is_an_error() -> None:
    with pytest.raises(NarrowingError, match="no COMPLETED trial"):
        select_top([_scored("1", None, "FAILED"), _scored("2", 0.5, "RUNNING"), _scored("3", float("nan"))], LOSS)


# --- property: never wider, always contains the top trials ---------------------------------------------


def _random_space(rng: random.Random) -> dict[str, Hyperparameter]:
    space: dict[str, Hyperparameter] = {}
    lo = rng.randint(-10, 10)
    space["i"] = Hyperparameter("i", "int", min=lo, max=lo + rng.randint(1, 40), step=rng.choice([None, 1, 2, 3, 5]))
    step = rng.choice([0.1, 0.05, 0.25, 0.3])
    flo = rng.choice([0.0, 0.1, -1.0])
    space["f"] = Hyperparameter("f", "float", min=flo, max=flo + step * rng.randint(1, 12) + rng.choice([0, 0.01]), step=step)
    space["c"] = Hyperparameter("c", "float", min=-3.0, max=3.0)
    space["lg"] = Hyperparameter("lg", "float", min=1e-5, max=1e-1, sampling="log")
    space["li"] = Hyperparameter("li", "int", min=2, max=2 * 2 ** rng.randint(1, 8), step=2, sampling="log")
    space["rl"] = Hyperparameter("rl", "float", min=0.5, max=0.5 + 0.5 * 3 ** 4, step=3, sampling="reverse_log")
    space["ch"] = Hyperparameter("ch", "choice", values=tuple(rng.sample(["a", "b", "c", 1, 2, True, 0.5], rng.randint(1, 6))))
    space["b"] = Hyperparameter("b", "boolean", values=(True, False))
    space["cond"] = Hyperparameter("cond", "int", min=0, max=9, step=3, conditions=(("b", (True,)),))
    return space


def _sample(hp: Hyperparameter, rng: random.Random) -> Any:
    if hp.kind in ("choice", "boolean"):
        return rng.choice(hp.values)
    if hp.name == "c" or hp.name == "lg":
        return rng.uniform(hp.min, hp.max) if hp.name == "c" else math.exp(rng.uniform(math.log(hp.min), math.log(hp.max)))
    step = hp.step or 1
    if hp.sampling == "log":
        return int(hp.min * step ** rng.randint(0, round(math.log(hp.max / hp.min, step))))
    if hp.sampling == "reverse_log":
        return hp.max + hp.min - hp.min * step ** rng.randint(0, 4)
    if hp.kind == "float" and rng.random() < 0.2:
        return rng.uniform(hp.min, hp.max)  # off the grid, as after a change of step between stages
    count = int((hp.max - hp.min) / step + 1e-9)
    value = hp.min + rng.randint(0, count) * step  # with KerasTuner's float noise, e.g. 0.30000000000000004
    return value if hp.kind == "float" else int(value)


def _within(new: Hyperparameter, old: Hyperparameter) -> bool:
    if new.kind == "fixed":
        return old.contains(new.values[0])
    if old.is_range:
        return new.is_range and old.min <= new.min <= new.max <= old.max and new.step == old.step
    return set(map(repr, new.values)) <= set(map(repr, old.values))


def test_property_never_wider_and_contains_every_top_value() -> None:
    rng = random.Random(20240601)
    for case in range(300):
        space = _random_space(rng)
        trials = []
        for i in range(rng.randint(1, 30)):
            values = {name: _sample(hp, rng) for name, hp in space.items() if name != "cond"}
            if values["b"] is True:
                values["cond"] = _sample(space["cond"], rng)
            status = rng.choice(["COMPLETED"] * 5 + ["FAILED", "RUNNING"])
            trials.append(_scored(str(i), rng.random(), status, **values))
        if not any(t["status"] == "COMPLETED" for t in trials):
            continue
        kwargs = {"top_k": rng.randint(1, 10)} if rng.random() < 0.5 else {"quantile": rng.uniform(0.01, 1.0)}
        objective = Objective("val_loss", rng.choice(["min", "max"]))
        try:
            result = narrow_space(trials, space, objective, **kwargs)
        except NarrowingError as exc:  # refused only when the top trials are one configuration
            assert "are one configuration" in str(exc) and len(select_top(trials, objective, **kwargs)[0]) == 1, (case, exc)
            continue
        top = [t for t in trials if t["trial_id"] in result.top_ids]
        for name, old in space.items():
            new = result.narrowed[name]
            assert _within(new, old), (case, name, old, new)
            for trial in top:
                values = trial["hyperparameters"]["values"]
                if name in values:
                    assert new.contains(values[name]), (case, name, new, values[name])


# --- the command, end to end ---------------------------------------------------------------------------


def test_cli_writes_a_valid_next_stage(run: RunPaths, tmp_path: Path) -> None:
    out = tmp_path / "next.yaml"
    result = CliRunner().invoke(
        app, ["narrow", "--run", "wide", "--shared-dir", str(run.shared_dir), "--top", "3", "--out", str(out), "--max-trials", "30"]
    )
    assert result.exit_code == 0, result.output
    config = load_config(out)
    assert config.run == "wide-narrow" and config.warm_start == "wide"
    assert config.tuner == "bayesian" and config.max_trials == 30
    assert config.space["model_type"] == FixedOverride(value="cnn")
    for text in ("conv_1_filters", "4 .. 16 step 4", "8 .. 12 step 4", "unchanged", "top 3 of 7", "wrote"):
        assert text in result.output, result.output


def test_cli_writes_ints_for_an_int_warns_on_a_short_top_and_says_what_next(run: RunPaths, tmp_path: Path) -> None:
    out = tmp_path / "stage2.yaml"
    result = CliRunner().invoke(app, ["narrow", "--run", "wide", "--shared-dir", str(run.shared_dir), "--top", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: --top 20, but run 'wide' has only 7 completed trials: narrowing around all 7 of them\n"
    assert "top 7 of 7" in result.stdout
    assert result.stdout.splitlines()[-1] == f"next: tunectl local --config {out} --shared-dir {run.shared_dir}"
    written = yaml.safe_load(out.read_text())["space"]
    ints = {name: o for name, o in written.items() if name in ("conv_1_filters", "pool_1_size", "units", "heads") and "min" in o}
    assert ints and all(type(o["min"]) is int and type(o["max"]) is int for o in ints.values()), written  # `min: 8`, not 8.0
    assert "  units:\n    min: 16\n    max: 64\n" in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o644
    assert load_config(out).space == narrow_run(run.shared_dir, "wide", top_k=20, out=tmp_path / "again.yaml")[1].space

    kept = out.read_text()
    again = CliRunner().invoke(app, ["narrow", "--run", "wide", "--shared-dir", str(run.shared_dir), "--top", "3", "--out", str(out)])
    assert again.exit_code == 2 and again.stderr == f"error: {out} exists; pass --force to overwrite it\n" and out.read_text() == kept
    enough = CliRunner().invoke(app, ["narrow", "--run", "wide", "--shared-dir", str(run.shared_dir), "--top", "3", "--out", str(out), "--force"])
    assert enough.exit_code == 0 and enough.stderr == "" and out.read_text() != kept


def test_cli_quantile_env_and_names(run: RunPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNER_SHARED_DIR", str(run.shared_dir))
    result = CliRunner().invoke(app, ["narrow", "--run", "wide", "--quantile", "0.3", "--new-run", "stage-2", "--tuner", "hyperband"])
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "search-narrowed.yaml")
    assert (config.run, config.tuner, config.max_trials) == ("stage-2", "hyperband", 100)
    assert "top 3 of 7" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top", "3", "--quantile", "0.2"], "error: --top and --quantile cannot be used together"),
        (["--quantile", "2"], "error: --quantile must be in (0, 1]"),
        (["--tuner", "genetic"], "error: "),
        (["--new-run", "Bad Name"], "error: "),
    ],
)
def test_cli_bad_flags_are_one_line(run: RunPaths, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "never.yaml"
    result = CliRunner().invoke(app, ["narrow", "--run", "wide", "--shared-dir", str(run.shared_dir), "--out", str(out), *args])
    assert result.exit_code != 0
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_cli_missing_run_and_no_completed_trials(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["narrow", "--run", "nope", "--shared-dir", str(tmp_path)])
    assert result.exit_code != 0 and "run 'nope' not found" in result.stderr
    write_run(tmp_path, "broken", trials=[(None, "FAILED", {"conv_1_filters": 4})])
    result = CliRunner().invoke(app, ["narrow", "--run", "broken", "--shared-dir", str(tmp_path)])
    assert result.exit_code != 0 and "no COMPLETED trial" in result.stderr


def test_reads_what_keras_tuner_writes() -> None:
    kt = pytest.importorskip("keras_tuner")
    hp = kt.HyperParameters()
    hp.Int("filters", 4, 16, step=4)
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Boolean("bn")
    if hp.Choice("model_type", ["cnn", "mlp"]) == "cnn":
        with hp.conditional_scope("model_type", ["cnn"]):
            hp.Int("units", 8, 64, step=8)
    state = kt.engine.trial.Trial(hp, trial_id="1").get_state()
    space = space_from_trials([state])
    assert space["filters"] == Hyperparameter("filters", "int", min=4, max=16, step=4)
    assert space["lr"].sampling == "log" and space["lr"].step is None
    assert space["bn"].kind == "boolean"
    assert space["units"].conditions == (("model_type", ("cnn",)),)
    assert space["units"].is_active(state["hyperparameters"]["values"])


def test_a_promotion_counts_once_with_its_parent_at_the_better_score() -> None:
    """asha and Hyperband train a configuration again (`tuner/trial_id`): the top trials are distinct configurations."""
    units = Hyperparameter("u", "int", min=8, max=64, step=8)
    trials = [
        _scored("1", 0.5, u=16), _scored("2", 0.4, u=32), _scored("3", 0.6, u=56),
        _scored("4", 0.3, u=32, **{"tuner/trial_id": "2", "tuner/epochs": 3}),  # 2, promoted: better with more epochs
    ]
    top, completed = select_top(trials, LOSS, top_k=2)
    assert [t["trial_id"] for t in top] == ["4", "1"] and completed == 4
    assert narrow_space(trials, {"u": units}, LOSS, top_k=2).narrowed["u"].describe() == Hyperparameter("u", "int", min=16, max=32, step=8).describe()


def test_narrowing_to_one_configuration_is_refused() -> None:
    """Nothing left to search: the next stage's Bayesian oracle would fail at every CreateTrial (issue 11's bad input)."""
    space = {"u": Hyperparameter("u", "int", min=8, max=64, step=8), "act": Hyperparameter("act", "choice", values=("relu", "elu"))}
    trials = [_scored("1", 0.5, u=16, act="relu"), _scored("2", 0.3, u=16, act="relu", **{"tuner/trial_id": "1"}), _scored("3", 0.9, u=40, act="elu")]
    with pytest.raises(NarrowingError, match=r"the top 1 of 3 completed trial\(s\) are one configuration"):
        narrow_space(trials, space, LOSS, top_k=1)
    assert set(narrow_space(trials, space, LOSS, top_k=2).narrowed) == {"u", "act"}  # two configurations: fine
