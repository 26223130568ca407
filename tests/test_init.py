"""`tunectl init` writes a commented search.yaml; without a config `local` says which defaults it uses; `make help`
prints the values of its knobs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from helpers import REPO
from tuner_job.config import SearchConfig, load_config, parse_config

runner = CliRunner()


def test_init_writes_every_key_with_what_it_does(tmp_path: Path) -> None:
    out = tmp_path / "search.yaml"
    result = runner.invoke(app, ["init", str(out), "--image-size", "60", "20", "--max-trials", "6", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}: edit it, then `tunectl local --config {out}`\n"
    assert out.stat().st_mode & 0o777 == 0o644

    config = load_config(out)
    assert (config.image_size, config.max_trials, config.epochs, config.run) == ((60, 20), 6, 3, "toonvision")
    text = out.read_text()
    for key in SearchConfig.model_fields:
        (line,) = [line for line in text.splitlines() if re.match(rf"(# )?{key}: ", line)]
        assert "  # " in line and len(line.split("  # ", 1)[1]) > 10, line  # each key says what it does
    # Every commented key is a valid example: uncommented alone, it parses.
    for line in text.splitlines():
        match = re.match(r"# (\w+): (.*?)\s+# ", line)
        if match:
            parse_config({**yaml.safe_load(text), **yaml.safe_load(f"{match.group(1)}: {match.group(2)}")}, "example")

    again = runner.invoke(app, ["init", str(out)])
    assert again.exit_code == 2 and again.stderr == f"error: {out} exists; pass --force to overwrite it\n"
    forced = runner.invoke(app, ["init", str(out), "--force", "--run", "mine"])
    assert forced.exit_code == 0 and load_config(out).run == "mine" and load_config(out).max_trials == 100


def test_init_refuses_a_bad_value_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(tmp_path / "s.yaml"), "--image-size", "4", "4"])
    assert result.exit_code == 2
    assert result.stderr == "error: tunectl init: image_size: each side must be >= 8 pixels, but got [4, 4]\n"


def test_local_without_a_config_says_which_defaults_it_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["local", "--shared-dir", str(tmp_path / "absent"), "--tensorboard-port", "0"])
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        "note: no --config and no ./search.yaml: using the built-in defaults: run toonvision, data data/toonvision, "
        "600x200 images, random search of 100 trials x 10 epochs (the article's full search: hours on a CPU; "
        "--max-trials and --epochs shorten it). `tunectl init` writes a commented search.yaml to start from."
    )
    assert lines[1].startswith("error: shared directory not found") and result.exit_code == 2

    shorter = runner.invoke(app, ["local", "--shared-dir", str(tmp_path / "absent"), "--max-trials", "6", "--epochs", "2"])
    assert "random search of 6 trials x 2 epochs. `tunectl init`" in shorter.stderr and "hours" not in shorter.stderr

    (tmp_path / "search.yaml").write_text("run: here\n")
    found = runner.invoke(app, ["local", "--shared-dir", str(tmp_path / "absent")])
    assert found.stderr.splitlines()[0] == "config: ./search.yaml" and "built-in defaults" not in found.stderr


def test_make_help_prints_values_not_variables() -> None:
    result = subprocess.run(["make", "--no-print-directory", "help", "WORKERS=5"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert "$(" not in text
    assert re.search(r"^\s+demo\s+Synthesize a dataset and run a local search: 1 chief, 5 workers, 6 trials of 4 epochs", text, re.M)
    assert re.search(r"^\s+WORKERS=5$", text, re.M)
