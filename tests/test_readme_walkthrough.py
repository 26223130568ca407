"""The README's "Run it yourself" works as written: each command of its console block runs, in order, in an empty
folder (a fresh clone's working directory), as real processes. Then what it promises: a warm-started search's
progress ends at the true count (seeded trials included, as `results` counts them), the plot draws each trial
once, `narrow` writes integers for an Int and says what to run next, and every file written is 0644.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers import REPO

pytestmark = pytest.mark.slow


def readme_commands(section: str = "## Run it yourself") -> list[list[str]]:
    """The `$ ...` lines of the first console block after `section`, comments dropped."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(section):].split("```console\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line[2:], comments=True) for line in block.splitlines() if line.startswith("$ ")]


def test_run_it_yourself_works_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert [c[:2] for c in commands] == [["tunectl", "data"], ["tunectl", "init"], ["tunectl", "local"], ["tunectl", "results"],
                                         ["tunectl", "narrow"], ["tunectl", "local"], ["tunectl", "results"]]  # fmt: skip
    env = {**os.environ, "TUNECTL_TENSORBOARD_PORT": "0", "COLUMNS": "200"}  # no TensorBoard on the shared machine's 6006
    env.pop("TUNER_SHARED_DIR", None)
    outputs = []
    for argv in commands:
        done = subprocess.run([sys.executable, "-m", "cluster", *argv[1:]], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=600, preexec_fn=lambda: os.umask(0o022))  # fmt: skip
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout + done.stderr)
    _, init, first, _, narrow, second, _ = outputs

    assert "wrote search.yaml" in init
    assert "run toonvision: completed, 6/6 trials done" in first
    # narrow: an Int's bounds are integers, fewer completed trials than --top is said, the next step is printed.
    stage2 = yaml.safe_load((tmp_path / "stage2.yaml").read_text())
    for name, override in stage2["space"].items():
        if name.startswith(("conv_", "pool_")) and "min" in override:
            assert isinstance(override["min"], int) and isinstance(override["max"], int), (name, override)
    assert "next: tunectl local --config stage2.yaml --shared-dir shared" in narrow

    # The second search is warm-started: its progress and its leaderboard count the seeded trials alike.
    results = (tmp_path / "shared" / "runs" / "toonvision-narrow" / "results.json").read_text()
    seeded = results.count('"worker": "warm-start:toonvision"')
    assert seeded >= 1, results[:2000]
    total = 6 + seeded
    assert f"run toonvision-narrow: completed, {total}/{total} trials done" in second, second[-3000:]
    bars = re.findall(r"run toonvision-narrow\s+\S*\s+(\d+)/(\d+)", second)
    assert bars and bars[-1] == (str(total), str(total)), bars

    # The study's plot draws each trial once: the seeded ones where they were trained.
    with Image.open(tmp_path / "study.png") as image:
        drawn = image.text["Trials"].split(",")
    assert len(drawn) == len(set(drawn)) == 6 + 6 and not any("/w" in name for name in drawn), drawn

    # Every file a user reads is 0644 (mkstemp makes 0600), under the usual umask 022.
    run = tmp_path / "shared" / "runs" / "toonvision"
    for path in (run / "results.json", run / "leaderboard.csv", run / "best" / "hyperparameters.yaml", run / "search.yaml",
                 run / "status.json", tmp_path / "results.png", tmp_path / "study.png", tmp_path / "stage2.yaml",
                 tmp_path / "search.yaml"):  # fmt: skip
        assert path.stat().st_mode & 0o777 == 0o644, path
