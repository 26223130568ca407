"""Every usage or input error exits 2, everywhere (issue 11, item 7).

The fault: a data folder with one class, a missing data folder, a missing
shared folder, `study --stages foo`, `narrow --top 0`, `logs` with no
selector... exited 1, which the README's table keeps for "the search failed".
One table drives every `tunectl` command's bad inputs (Typer's own usage
errors are in it too: they exit 2 already); the chief and the worker get the
data and folder mistakes. Each: exit 2, one `error:` line naming the key,
file or value (Typer prints its own box), nothing on the shared volume changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, error_lines, free_port, small_config, snapshot
from tuner_job.contract import CHIEF_ID, process_env, worker_id

ONE_CLASS = "must hold at least 2 class folders (<class>/*.png|jpg), found 1"


def _one_class(shared: Path) -> None:
    folder = shared / "data" / "one" / "bossbot"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"\x89PNG")


def _config(tmp: Path, **overrides: object) -> str:
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(small_config(**overrides)))
    return str(path)


def _finished_run(shared: Path) -> None:
    run = shared / "runs" / "done"
    (run / "tuner").mkdir(parents=True)
    (run / "search.yaml").write_text(yaml.safe_dump({"run": "done"}))


# (command line, what the one `error:` line says, usage errors included (`cli_style`)). `{shared}`, `{tmp}`, `{config}` are filled in.
CASES = {
    "local: missing shared folder": (["local", "--config", "{config}", "--shared-dir", "{tmp}/nowhere"], "shared directory not found: "),
    "local: missing data folder": (["local", "--config", "{config:data=data/nowhere}", "--shared-dir", "{shared}"], "data folder not found: "),
    "local: data folder with one class": (
        ["local", "--config", "{config:data=data/one}", "--shared-dir", "{shared}"], ONE_CLASS,
    ),
    "local: missing config file": (["local", "--config", "{tmp}/none.yaml", "--shared-dir", "{shared}"], "config file not found: "),
    "local: unknown config key": (["local", "--config", "{config:max_trails=3}", "--shared-dir", "{shared}"], "unknown key 'max_trails'"),
    "local: unknown tuner": (["local", "--config", "{config}", "--shared-dir", "{shared}", "--tuner", "grad"], "tuner: Input should be"),
    "local: no workers": (["local", "--workers", "0"], "--workers: must be at least 1, but got 0 (see 'tunectl local -h')"),
    "study: --stages foo": (["study", "--config", "{config}", "--shared-dir", "{shared}", "--stages", "foo"], "--stages: 'foo' is not tuner:trials"),
    "study: one stage": (["study", "--config", "{config}", "--shared-dir", "{shared}", "--stages", "random:3"], "at least two stages"),
    "study: its own warm_start": (
        ["study", "--config", "{config:warm_start=done}", "--shared-dir", "{shared}"], "warm_start: a study sets it for each stage itself",
    ),
    "narrow: --top 0": (["narrow", "--run", "done", "--shared-dir", "{shared}", "--top", "0"], "--top must be at least 1, but got 0"),
    "narrow: --quantile 2": (["narrow", "--run", "done", "--shared-dir", "{shared}", "--quantile", "2"], "--quantile must be in (0, 1]"),
    "narrow: no such run": (["narrow", "--run", "nope", "--shared-dir", "{shared}"], "run 'nope' not found"),
    "narrow: a run without trials": (["narrow", "--run", "done", "--shared-dir", "{shared}"], "run 'done' has no trials yet"),
    "narrow: no --run": (["narrow", "--shared-dir", "{shared}"], "missing option --run NAME (see 'tunectl narrow -h')"),
    "results: no such run": (["results", "--shared-dir", "{shared}", "--run", "nope"], "run 'nope' not found under"),
    "results: no runs at all": (["results", "--shared-dir", "{tmp}"], "no runs under"),
    "results: --top 0": (["results", "--shared-dir", "{shared}", "--top", "0"], "--top: must be at least 1, but got 0"),
    "data synth: too small": (["data", "synth", "--out", "{tmp}/synth", "--size", "4", "4"], "--size must be at least 8x8 pixels"),
    "data push: not a folder": (["data", "push", "{config}", "--shared-dir", "{shared}"], "is not a folder"),
    "data push: one class": (["data", "push", "{shared}/data/one", "--shared-dir", "{shared}"], "is not a dataset of <class>/*.png|jpg"),
    "logs: no selector": (["logs"], "pass exactly one of --chief or --worker I"),
    "logs: two selectors": (["logs", "--chief", "--worker", "0"], "pass exactly one of --chief or --worker I"),
    "up: missing kind config": (["up", "--config", "{tmp}/kind.yaml"], "kind.yaml' does not exist (see 'tunectl up -h')"),
    "scale: no workers": (["scale", "--workers", "0"], "--workers: must be at least 1, but got 0"),
    "scale: no --workers": (["scale"], "missing option --workers N"),
    "an unknown command": (["lokal"], "no such command 'lokal'. Did you mean 'local'?"),
}


def _fill(arg: str, shared: Path, tmp: Path) -> str:
    if arg.startswith("{config"):
        key, _, value = arg.strip("{}").removeprefix("config").removeprefix(":").partition("=")
        return _config(tmp, **({key: int(value) if value.isdigit() else value} if key else {}))
    return arg.format(shared=shared, tmp=tmp)


@pytest.mark.parametrize("case", list(CASES))
def test_every_tunectl_command_exits_2_on_bad_input(case: str, shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    args, line = CASES[case]
    _one_class(shared)
    _finished_run(shared)
    argv = [_fill(a, shared, tmp_path) for a in args]
    before = snapshot(shared)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{result.output}"
    errors = error_lines(result.output)
    assert len(errors) == 1 and line in errors[0], result.output
    assert "Traceback" not in result.output and "started (pid" not in result.output
    assert snapshot(shared) == before


PROCESS_CASES = {
    "chief: data folder with one class": (CHIEF_ID, {"data": "data/one"}, ONE_CLASS),
    "worker: data folder with one class": (worker_id(0), {"data": "data/one"}, ONE_CLASS),
    "chief: missing shared folder": (CHIEF_ID, {}, "shared directory not found: "),
    "worker: missing shared folder": (worker_id(0), {}, "shared directory not found: "),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PROCESS_CASES))
def test_the_chief_and_the_workers_exit_2_on_bad_input(case: str, shared: Path, tmp_path: Path) -> None:
    """A worker with a bad data folder stops at once, without waiting for a chief (none runs here)."""
    tuner_id, overrides, line = PROCESS_CASES[case]
    _one_class(shared)
    config = _config(tmp_path, chief_wait_seconds=600, data_wait_seconds=0, **overrides)
    folder = shared if "missing" not in case else tmp_path / "nowhere"
    before = snapshot(shared)
    env = {**os.environ, **process_env(tuner_id, "127.0.0.1", free_port(), config, str(folder)), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "tuner_job"], env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and line in errors[0] and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert snapshot(shared) == before


@pytest.mark.slow
def test_a_worker_lists_the_data_folder_only_before_a_chief_has_prepared_it(shared: Path, tmp_path: Path) -> None:
    """Once a cache is prepared for the search's settings, a worker opens it without listing the folder
    (seconds per worker on a large network volume); before that it checks the layout at once."""
    from tuner_job.data import load_image_folder

    config_path = _config(tmp_path, chief_wait_seconds=3, data_wait_seconds=0)
    config = yaml.safe_load(Path(config_path).read_text())
    folder = shared / config["data"]
    load_image_folder(folder, tuple(config["image_size"]), 0.2, 42)  # as the chief does, with the defaults
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for extra in classes[1:]:
        shutil.rmtree(extra)  # now a one-class folder: a listing says so
    env = {**os.environ, **process_env(worker_id(0), "127.0.0.1", free_port(), config_path, str(shared)), "TF_CPP_MIN_LOG_LEVEL": "3"}

    waited = subprocess.run([sys.executable, "-m", "tuner_job"], env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert waited.returncode == 3, waited.stderr[-2000:]  # no listing: it waited for a chief (none runs)
    assert ONE_CLASS not in waited.stderr

    shutil.rmtree(folder / ".cache")
    listed = subprocess.run([sys.executable, "-m", "tuner_job"], env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert listed.returncode == 2 and ONE_CLASS in listed.stderr, listed.stderr[-2000:]
