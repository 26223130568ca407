"""Files we publish atomically get the mode a plain `open(path, "w")` would give: 0666 less the umask (0644 as a
rule), not mkstemp's 0600; a failed write leaves the old file and no temp file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

WRITE = """
import os, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from tuner_job.layout import atomic_write_json, atomic_write_text
atomic_write_text(Path(sys.argv[1]) / "a.yaml", "x: 1\\n")
atomic_write_json(Path(sys.argv[1]) / "sub" / "results.json", {"trials": []})
"""


@pytest.mark.parametrize(("umask", "mode"), [("022", 0o644), ("002", 0o664), ("077", 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: str, mode: int) -> None:
    subprocess.run([sys.executable, "-c", WRITE, str(tmp_path), umask], cwd=REPO, check=True, timeout=60)
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == mode
    assert (tmp_path / "sub" / "results.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a.yaml").read_text() == "x: 1\n"


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    from tuner_job.layout import atomic_output

    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer died")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
