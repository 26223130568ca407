"""A hypermodel named by a file path resolves against the folder of the config file that names it.

The fault (a user's report): `hypermodel: models/my_model.py:build` in
`conf/search.yaml` was looked for in the current directory, so `tunectl local
--config conf/search.yaml` run from anywhere but `conf/` failed with
`hypermodel file not found: models/my_model.py`, and a worker or chief with
another working directory could load another file or none. Now `load_config`
makes a relative path absolute against the config's folder (as docker-compose
and Helm resolve theirs), an absolute one is kept, the run's copy of the
config holds the absolute path, and a missing file is named as looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from helpers import small_config, trial_files
from tuner_job.config import dump_config, load_config, parse_config
from tuner_job.errors import ConfigError

MODEL = "from tuner_job.hypermodels import build_toonvision as build\n"


def _config(folder: Path, **overrides: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(small_config(**overrides)))
    return path


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("models/m.py:build", "{conf}/models/m.py:build"),
        ("./m.py:Model", "{conf}/m.py:Model"),
        ("../shared/m.py:build", "{root}/shared/m.py:build"),
        ("/opt/models/m.py:build", "/opt/models/m.py:build"),
        ("~/models/m.py:build", "{home}/models/m.py:build"),
        ("my_package.models:build", "my_package.models:build"),
        ("toonvision_extended", "toonvision_extended"),
    ],
)
def test_a_relative_file_resolves_against_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, expected: str
) -> None:
    conf = tmp_path / "project" / "conf"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _config(conf, hypermodel=written)

    for named in (path, Path(os.path.relpath(path, elsewhere))):  # --config given absolute or relative
        config = load_config(named)
        assert config.hypermodel == expected.format(conf=conf, root=tmp_path / "project", home=tmp_path / "home")


def test_the_runs_copy_of_the_config_names_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chief writes runs/<run>/search.yaml and `tunectl local` hands its children a copy elsewhere: both resolve alike."""
    conf = tmp_path / "conf"
    config = load_config(_config(conf, hypermodel="models/m.py:build"))
    copy = tmp_path / "shared" / "runs" / "t" / "search.yaml"
    copy.parent.mkdir(parents=True)
    copy.write_text(dump_config(config))
    monkeypatch.chdir(copy.parent)

    assert load_config(copy).hypermodel == f"{conf}/models/m.py:build" == config.hypermodel
    assert load_config(copy) == config


def test_a_config_without_a_file_keeps_the_spec_as_written() -> None:
    """The command line's defaults and `parse_config` of a mapping have no folder to resolve against."""
    assert parse_config({"hypermodel": "models/m.py:build"}).hypermodel == "models/m.py:build"


def test_a_missing_hypermodel_file_names_the_path_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("keras_tuner")
    from tuner_job.errors import HypermodelError
    from tuner_job.hypermodels import load_hypermodel

    monkeypatch.chdir(tmp_path)
    config = load_config(_config(tmp_path / "conf", hypermodel="models/missing.py:build"))
    with pytest.raises(HypermodelError) as raised:
        load_hypermodel(config.hypermodel, (24, 16, 3), 4)
    assert str(raised.value).startswith(f"hypermodel file not found: {tmp_path}/conf/models/missing.py (from hypermodel ")
    assert "resolved against the folder of the config file" in str(raised.value)
    (tmp_path / "conf" / "models" / "missing.py").mkdir(parents=True)
    with pytest.raises(HypermodelError, match=r"hypermodel file a folder, not a file: .*/conf/models/missing\.py"):
        load_hypermodel(config.hypermodel, (24, 16, 3), 4)


def test_a_run_saved_with_a_relative_path_resumes_with_the_resolved_one(tmp_path: Path) -> None:
    """A run an earlier version saved (`file.py:name` kept as written) is not refused as a changed hypermodel."""
    from tuner_job.prepare import resume_conflicts

    conf = tmp_path / "conf"
    new = load_config(_config(conf, hypermodel="models/m.py:build"))
    saved = load_config(_config(tmp_path / "shared" / "runs" / "t", hypermodel="models/m.py:build"))  # read back from the run's folder
    assert resume_conflicts(saved, new) == []
    other = load_config(_config(conf, hypermodel="models/other.py:build"))
    assert resume_conflicts(saved, other) == ["hypermodel"]
    (tmp_path / "shared" / "runs" / "t" / "models").mkdir()
    (tmp_path / "shared" / "runs" / "t" / "models" / "m.py").write_text(MODEL)  # a file that is there is another file
    assert resume_conflicts(saved, new) == ["hypermodel"]


def test_a_bad_config_file_is_still_one_line(tmp_path: Path) -> None:
    path = _config(tmp_path, hypermodel=3)
    with pytest.raises(ConfigError, match="hypermodel"):
        load_config(path)


@pytest.mark.slow
def test_tunectl_local_from_another_folder_loads_the_file_next_to_the_config(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's case end to end: the launcher's checks, the chief and the worker all find `conf/models/m.py`."""
    from typer.testing import CliRunner

    from cluster.cli import app

    conf = tmp_path / "conf"
    (conf / "models").mkdir(parents=True)
    (conf / "models" / "m.py").write_text(MODEL)
    _config(conf, run="paths", hypermodel="models/m.py:build", max_trials=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = CliRunner().invoke(
        app,
        ["local", "--config", "../conf/search.yaml", "--shared-dir", str(shared), "--workers", "1", "--tensorboard-port", "0", "--max-restarts", "0"],
    )

    assert result.exit_code == 0, result.output[-5000:]
    run = shared / "runs" / "paths"
    assert [t["status"] for t in trial_files(run).values()] == ["COMPLETED"]
    saved = yaml.safe_load((run / "search.yaml").read_text())
    assert saved["hypermodel"] == f"{conf}/models/m.py:build"
