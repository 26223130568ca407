"""A changed config on resume is never silent (issue 11, item 5).

The fault: a finished run re-launched with a narrower `space` and a larger
`max_trials` logged "the config differs", saved the new one, and handed out
trials from the old space: the oracle reloads its saved space. The choice made
here: a key the saved state would ignore (or that would make old and new
scores incomparable) refuses the launch with one line naming the keys and the
ways forward (`--fresh`, or a new run warm-started from this one); the other
keys (`max_trials` here) take effect, and the log says so. Both directions of a
space change (narrower, wider) are refused, with and without a larger budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import error_lines, snapshot, trial_files

pytestmark = pytest.mark.slow

KERNEL_3 = {"conv_1_kernel_size": {"values": [3]}}


def _refused(s, shared: Path, **config) -> str:  # noqa: ANN001
    """Start the chief of run `s` with `config` changed; it must exit 2 with one line and change nothing."""
    before = snapshot(shared)
    s.config_file.write_text(yaml.safe_dump({**s.config, **config}))
    s.start("chief")
    assert s.wait("chief", timeout=180) == 2, s.log("chief")[-3000:]
    log = s.logs["chief"][-1].read_text()  # this start's log only
    errors = error_lines(log)
    assert len(errors) == 1 and "Traceback" not in log, log[-3000:]
    assert snapshot(shared) == before  # the run's search.yaml, trials and state untouched
    return errors[0]


def test_a_changed_space_is_refused_with_the_keys_and_a_larger_budget_takes_effect(search, shared: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cluster.cli import app

    s = search(run="r", max_trials=2, space=KERNEL_3)
    s.start_all(workers=1)
    assert s.wait_all(timeout=300) == {"chief": 0, "tuner0": 0}, s.all_logs()
    assert len(trial_files(s.run_dir)) == 2

    narrower = _refused(s, shared, max_trials=4, space={**KERNEL_3, "conv_1_filters": {"min": 8, "max": 12}})
    assert "run 'r' already has trials" in narrower and "changed space.conv_1_filters " in narrower, narrower
    assert "--fresh" in narrower and "warm_start: r" in narrower, narrower
    wider = _refused(s, shared, max_trials=4, space={})
    assert "changed space.conv_1_kernel_size " in wider, wider
    tuner = _refused(s, shared, tuner="bayesian")
    assert "changed tuner " in tuner, tuner

    # The same refusal before any process starts, from `tunectl local`'s check.
    config = tmp_path / "narrower.yaml"
    config.write_text(yaml.safe_dump({**s.config, "max_trials": 4, "space": {**KERNEL_3, "conv_1_filters": {"min": 8, "max": 12}}}))
    before = snapshot(shared)
    result = CliRunner().invoke(app, ["local", "--config", str(config), "--shared-dir", str(shared), "--tensorboard-port", "0"])
    assert result.exit_code == 2 and "changed space.conv_1_filters" in result.output and "started" not in result.output, result.output
    assert snapshot(shared) == before

    # What the saved state does not hold takes effect: a larger budget extends the run, and the log says what changed.
    s.config_file.write_text(yaml.safe_dump({**s.config, "max_trials": 3}))
    s.start_all(workers=1)
    assert s.wait_all(timeout=300) == {"chief": 0, "tuner0": 0}, s.all_logs()
    trials = trial_files(s.run_dir)
    assert len(trials) == 3 and all(t["hyperparameters"]["values"]["conv_1_kernel_size"] == 3 for t in trials.values())
    assert "resumes with a changed config (max_trials 2 -> 3): the new values take effect" in s.log("chief"), s.log("chief")[-3000:]

    # The way forward the line names: --fresh, and the new space governs every trial.
    s.config_file.write_text(yaml.safe_dump({**s.config, "max_trials": 2, "space": {**KERNEL_3, "conv_1_filters": {"min": 8, "max": 12}}}))
    s.start("chief", "--fresh")
    # As `tunectl local --fresh` does (`_wait_for_fresh_start`): the worker starts once the fresh chief serves; before
    # that, the old run's status.json still says "completed" and a worker would leave at once.
    s.wait_for(lambda: "oracle serving on" in s.logs["chief"][-1].read_text(errors="replace"), 120, "the fresh chief to serve")
    s.start("tuner0")
    assert s.wait_all(timeout=300) == {"chief": 0, "tuner0": 0}, s.all_logs()
    fresh = trial_files(s.run_dir)
    assert len(fresh) == 2 and all(8 <= t["hyperparameters"]["values"]["conv_1_filters"] <= 12 for t in fresh.values()), fresh
