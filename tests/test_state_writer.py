"""The chief's state writer process (`tuner_job.state_writer`), for real.

A child process writes each group; if it dies, the chief writes in-process and
loses nothing; it never outlives the chief, however the chief dies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuner_job.state_writer import Group, StateWriter, write_group

REPO = Path(__file__).resolve().parent.parent


def _group(root: Path, n: int) -> Group:
    return Group(
        trials={str(root / f"trial_{n}" / "trial.json"): {"trial_id": str(n), "values": {"units": n}}},
        journal=(str(root / "journal.jsonl"), [{"trial_id": str(n)}]),
        after={str(root / "oracle.json"): {"last": n}},
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_write_group_appends_the_journal_and_replaces_the_files(tmp_path: Path) -> None:
    write_group(_group(tmp_path, 1))
    write_group(_group(tmp_path, 2).as_text(), durable=True)  # text and objects alike
    assert json.loads((tmp_path / "trial_2" / "trial.json").read_text()) == {"trial_id": "2", "values": {"units": 2}}
    assert json.loads((tmp_path / "oracle.json").read_text()) == {"last": 2}
    assert [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()] == [{"trial_id": "1"}, {"trial_id": "2"}]
    assert not list(tmp_path.rglob("*.tmp")), "a temp file was left behind"


def test_as_text_snapshots_the_objects(tmp_path: Path) -> None:
    state = {"n": 1}
    group = Group(after={str(tmp_path / "x.json"): state})
    text = group.as_text()
    state["n"] = 2  # the loop changes the state after the group was formed
    write_group(text)
    assert json.loads((tmp_path / "x.json").read_text()) == {"n": 1}


def test_the_child_writes_and_a_lost_child_falls_back_in_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[int, int | None]:
        writer = StateWriter()
        writer.start()
        pid = writer.pid
        assert pid is not None
        await asyncio.gather(*(writer.write(_group(tmp_path, n)) for n in range(3)))
        os.kill(pid, signal.SIGKILL)
        await writer.write(_group(tmp_path, 3))  # the child is gone: written here
        await writer.write(_group(tmp_path, 4))
        after = writer.pid
        writer.close()
        return pid, after

    with caplog.at_level(logging.WARNING, logger="tuner_job.chief"):
        pid, after = asyncio.run(main())
    assert after is None
    assert [r.getMessage() for r in caplog.records if "state writer process is gone" in r.getMessage()], caplog.text
    assert len([r for r in caplog.records if "state writer" in r.getMessage()]) == 1, "warn once, not per group"
    # Trial files are checkpoints the child writes after replying: those of
    # the group it was killed after may be missing; the journal has them all.
    for n in (3, 4):
        assert json.loads((tmp_path / f"trial_{n}" / "trial.json").read_text())["trial_id"] == str(n)
    journal = [json.loads(line)["trial_id"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert journal == ["0", "1", "2", "3", "4"]
    assert json.loads((tmp_path / "oracle.json").read_text()) == {"last": 4}


def test_a_write_error_reaches_the_caller(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    async def main() -> None:
        writer = StateWriter()
        writer.start()
        try:
            with pytest.raises(OSError, match="NotADirectoryError|FileExistsError"):
                await writer.write(Group(after={str(blocker / "oracle.json"): {}}))
            await writer.write(_group(tmp_path, 7))  # the child is still there
            assert writer.pid is not None
        finally:
            writer.close()

    asyncio.run(main())
    assert (tmp_path / "trial_7" / "trial.json").is_file()


def test_the_child_ignores_signals_and_goes_when_the_chief_does(tmp_path: Path) -> None:
    """SIGTERM to the group (`tunectl local`, Ctrl-C) leaves the child to the
    chief; a chief killed with SIGKILL takes the child with it (its stdin closes)."""
    script = (
        "import asyncio, os, sys, time\n"
        "from tuner_job.state_writer import Group, StateWriter\n"
        "async def main():\n"
        "    writer = StateWriter()\n"
        "    writer.start()\n"
        f"    await writer.write(Group(after={{{str(tmp_path / 'a.json')!r}: {{'ok': 1}}}}))\n"
        "    print(writer.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    chief = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = chief.stdout.readline() if chief.stdout else ""
        assert line.strip().isdigit(), f"the chief printed {line!r}"
        child = int(line)
        assert (tmp_path / "a.json").is_file()
        os.kill(child, signal.SIGTERM)
        os.kill(child, signal.SIGINT)
        time.sleep(0.5)
        assert _alive(child), "the writer died of a signal meant for the chief"
        chief.kill()
        chief.wait(10)
        assert _wait_gone(child, 10), "the writer outlived a killed chief"
    finally:
        if chief.poll() is None:
            chief.kill()


def test_a_torn_journal_tail_is_cut_before_the_next_append(tmp_path: Path) -> None:
    pytest.importorskip("keras_tuner")
    from tuner_job.layout import RunPaths
    from tuner_job.state_store import StateStore

    paths = RunPaths(tmp_path, "r")
    store = StateStore(paths, lambda: {}, lambda: {})
    journal = paths.tuner / "journal.jsonl"
    journal.parent.mkdir(parents=True)
    from tuner_job import _kt

    trial = _kt.Trial(_kt.HyperParameters(), trial_id="0", status="COMPLETED")
    whole = {**trial.get_state(), "journal_event": "end"}
    journal.write_text(json.dumps(whole) + "\n" + json.dumps({**whole, "trial_id": "1"})[:40])  # killed mid-append
    loaded = store.load()
    assert any("last line was torn" in p for p in loaded.problems), loaded.problems
    assert set(loaded.trials) == {"0"}
    write_group(Group(journal=(str(journal), [{**whole, "trial_id": "2"}])))
    again = StateStore(paths, lambda: {}, lambda: {}).load()
    assert set(again.trials) == {"0", "2"}, again.problems
    assert not [p for p in again.problems if "torn" in p], again.problems


def test_trial_files_lag_the_journal_by_at_most_a_second_under_load(tmp_path: Path) -> None:
    from tuner_job.state_writer import CHECKPOINT_LAG

    async def main() -> bool:
        writer = StateWriter()
        writer.start()
        try:
            n, started = 0, time.monotonic()
            while time.monotonic() - started < CHECKPOINT_LAG + 0.5:  # groups back to back, 10 trial files each
                await writer.write(Group(trials={str(tmp_path / f"trial_{n}_{k}" / "trial.json"): {"n": n} for k in range(10)}))
                n += 1
            return all((tmp_path / f"trial_0_{k}" / "trial.json").is_file() for k in range(10))
        finally:
            writer.close()

    assert asyncio.run(main()), "the first group's trial files were still not written"
