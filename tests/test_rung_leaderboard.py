"""asha's and hyperband's leaderboards show each trial's rung and epochs, and which trial a promotion continues.

The fault (a user's report): with `tuner: asha`, `tunectl results` and the
summary of `tunectl local` showed a promotion as a second row of the same
configuration, with nothing to say it trained longer or what it continued.
Now every trial stays a row (as Ray Tune and Katib list each trial with its
iterations), with `rung` and `epochs` columns and "promoted from trial N";
`results.json` gains `rung`, `epochs`, `promoted_from` per trial, and
`leaderboard.csv` their columns (a random search's files keep their columns).

Real parts: the asha oracle behind our `OracleServer` on loopback, its real
journal and trial files, the real `tunectl results`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from cluster.cli import app
from test_asha_server import _asha_oracle, _loss
from tuner_job.layout import RunPaths
from tuner_job.objective import resolve_objective
from tuner_job.results import leaderboard_text, write_results


def test_a_promotion_is_its_own_row_with_its_rung_epochs_and_parent(running, tmp_path: Path) -> None:
    r = running(oracle=_asha_oracle(max_trials=3, epochs=3))  # rungs at 1 and 3 epochs
    trials = [r.create(f"tuner{i}")[0] for i in range(3)]
    for trial in trials:
        r.end(trial, loss=_loss(trial))
    promoted, _ = r.create("tuner0")
    parent = promoted.hyperparameters.values["tuner/trial_id"]
    r.end(promoted, loss=0.01)
    paths = RunPaths(tmp_path, "r")

    ranked = write_results(paths, resolve_objective("val_loss", None))

    by_id = {record.trial_id: record for record in ranked}
    assert (by_id[promoted.trial_id].rung, by_id[promoted.trial_id].epochs, by_id[promoted.trial_id].promoted_from) == (1, 3, parent)
    assert all((by_id[t.trial_id].rung, by_id[t.trial_id].epochs, by_id[t.trial_id].promoted_from) == (0, 1, None) for t in trials)
    document = json.loads(paths.results_json.read_text())
    assert {k: document["trials"][0][k] for k in ("trial_id", "rung", "epochs", "promoted_from")} == {
        "trial_id": promoted.trial_id, "rung": 1, "epochs": 3, "promoted_from": parent,
    }  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(paths.leaderboard_csv.read_text())))
    assert (rows[0]["trial_id"], rows[0]["rung"], rows[0]["epochs"], rows[0]["promoted_from"]) == (promoted.trial_id, "1", "3", parent)

    text = leaderboard_text(ranked, "val_loss").splitlines()  # the chief's log, outside `tunectl local`
    assert text[0].split()[6:8] == ["rung", "epochs"], text[0]
    assert f"(promoted from trial {parent})" in text[1] and text[1].split()[6:8] == ["1", "3"], text[1]

    result = CliRunner().invoke(app, ["results", "--shared-dir", str(tmp_path), "--run", "r"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "trial" in line and "status" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]][6:8] == ["rung", "epochs"], result.output
    first = next(line for line in result.output.splitlines() if f" {promoted.trial_id} " in line and "COMPLETED" in line)
    cells = [cell.strip() for cell in first.split("│")[1:-1]]
    assert cells[6:8] == ["1", "3"] and cells[8].startswith(f"promoted from trial {parent}:"), result.output
    # max_trials counts new configurations: 3 of them and a promotion are 4 trials, not "4/3 trials done"
    assert "3/3 configurations done, 4 trials with promotions" in result.output, result.output


def test_other_tuners_keep_their_columns(running, tmp_path: Path) -> None:
    r = running(max_trials=1)
    trial, _ = r.create("tuner0")
    r.end(trial, loss=0.5)
    paths = RunPaths(tmp_path, "r")

    ranked = write_results(paths, resolve_objective("val_loss", None))

    assert ranked[0].rung is None and ranked[0].epochs is None and ranked[0].promoted_from is None
    assert paths.leaderboard_csv.read_text().splitlines()[0].startswith("rank,trial_id,status,worker,score,seconds,val_loss,")
    assert "rung" not in leaderboard_text(ranked, "val_loss")


def test_hyperband_trials_show_their_round_and_epochs() -> None:
    """KerasTuner's Hyperband keeps `tuner/round` where asha keeps `tuner/rung`."""
    from tuner_job.results import _rungs

    values = {"units": 8, "tuner/epochs": 9, "tuner/initial_epoch": 3, "tuner/bracket": 2, "tuner/round": 2, "tuner/trial_id": "0007"}
    assert _rungs(values) == {"rung": 2, "epochs": 9, "promoted_from": "0007"}
    assert _rungs({"units": 8, "tuner/epochs": 3, "tuner/bracket": 2, "tuner/round": 0}) == {"rung": 0, "epochs": 3, "promoted_from": None}


def test_the_csv_shows_a_stepped_float_as_the_step_reads() -> None:
    """KerasTuner computes a stepped Float as min + i * step: 0.1 + 2 * 0.1 is 0.30000000000000004, which a spreadsheet shows as typed."""
    from tuner_job.results import TrialRecord, _csv

    stepped = 0.1 + 2 * 0.1
    assert stepped != 0.3
    record = TrialRecord("00", "COMPLETED", "tuner0", {"dropout": stepped, "units": 32, "lr": 1.234567890123456e-4}, {"val_loss": 0.5}, 0.5, 0, 12.0)
    row = next(csv.DictReader(io.StringIO(_csv([record]))))
    assert (row["dropout"], row["units"], row["lr"]) == ("0.3", "32", "0.000123456789012"), row
