"""search.yaml validation: one line that names the key; the role from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner_job.config import load_config, parse_config
from tuner_job.env import read_role
from tuner_job.errors import ConfigError


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"tunr": "random"}, "unknown key 'tunr'"),
        ({"max_trials": "ten"}, "max_trials: "),
        ({"max_trials": 0}, "max_trials: "),
        ({"tuner": "grad"}, "tuner: "),
        ({"image_size": [4, 200]}, "image_size: each side must be >= 8"),
        ({"validation_split": 1.5}, "validation_split"),
        ({"run": "Bad Name"}, "run: must be lowercase"),
        ({"data": "../escape"}, "data: must be a path inside the shared volume"),
        ({"space": {"conv_1_filters": {"min": 12, "max": 4}}}, "space.conv_1_filters: min must be <= max"),
        ({"space": {"conv_1_filters": {"low": 4}}}, "space.conv_1_filters"),
        ({"stages": "random:30"}, "stages: a staged search needs at least two stages"),
        ({"stages": "random:30,grad:10"}, "stages: 'grad:10' is not tuner:trials"),
        # A seeded grid search proposes nothing: refused, not a run that trains nothing (tests/test_no_repeats.py).
        ({"tuner": "grid", "warm_start": "earlier"}, "warm_start: KerasTuner's grid search proposes nothing once seeded"),
        ({"stages": "random:30,grid:10"}, "stages: grid can only be the first stage"),
        ({"tuner": "asha", "epochs": 5, "asha_min_epochs": 6}, "asha_min_epochs: must be <= epochs (5), but got 6"),
        ({"asha_max_total_epochs": 0}, "asha_max_total_epochs: "),
        ({"bayesian_liar": "sometimes"}, "bayesian_liar: Input should be 'believer', 'worst', 'mean', 'best' or 'off'"),
    ],
)
def test_bad_config_names_the_key(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "search.yaml")
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message


def test_defaults_follow_the_article() -> None:
    config = parse_config({})
    assert (config.tuner, config.objective, config.max_trials, config.image_size, config.seed) == ("random", "val_loss", 100, (600, 200), 42)


def test_load_config_reports_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("run: a\nmax_trials: 3\n")
    assert load_config(good, {"max_trials": 5, "epochs": None}).max_trials == 5
    with pytest.raises(ConfigError, match=f"config file {tmp_path} is a folder"):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n"])
def test_an_empty_config_file_is_the_defaults_and_the_overrides_apply(tmp_path: Path, text: str) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(text)
    config = load_config(path, {"run": "mine", "max_trials": 1, "epochs": 2, "tuner": None})
    assert (config.run, config.max_trials, config.epochs, config.tuner) == ("mine", 1, 2, "random")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KERASTUNER_TUNER_ID": "chief"}, ("chief", True, "0.0.0.0", 8000)),
        ({"KERASTUNER_TUNER_ID": "tuner3", "KERASTUNER_ORACLE_IP": "svc", "KERASTUNER_ORACLE_PORT": "9000"}, ("tuner3", False, "svc", 9000)),
    ],
)
def test_role(env: dict, expected: tuple) -> None:
    role = read_role(env)
    assert (role.tuner_id, role.is_chief, role.oracle_host, role.oracle_port) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "KERASTUNER_TUNER_ID"),
        ({"KERASTUNER_TUNER_ID": "mischief-1"}, 'contains "chief"'),
        ({"KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_IP": "x"}, '"KERASTUNER_ORACLE_PORT" was not'),
        ({"KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_IP": "x", "KERASTUNER_ORACLE_PORT": "http"}, "must be a port number"),
    ],
)
def test_bad_role(env: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        read_role(env)
