"""A stock KerasTuner worker joins our chief: the wire protocol is KerasTuner's own.

Our chief is `python -m tuner_job` (KERASTUNER_TUNER_ID=chief). The worker is
plain KerasTuner: `keras_tuner.RandomSearch(...).search(...)` in a process with
KERASTUNER_TUNER_ID=tuner0 and the chief's address, its own project folder, the
same hypermodel (so the same space) and the same synthetic data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import SMALL_SIZE, trial_files

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent(
    """
    import functools, sys
    import keras_tuner
    from tuner_job.data import load_image_folder
    from tuner_job.hypermodels import build_toonvision

    data_dir, project_dir, height, width, max_trials = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    data = load_image_folder(__import__("pathlib").Path(data_dir), (height, width), 0.2, 42)
    build = functools.partial(build_toonvision, input_shape=data.input_shape, num_classes=data.num_classes)
    tuner = keras_tuner.RandomSearch(
        hypermodel=build, objective="val_loss", max_trials=max_trials, directory=project_dir, project_name="stock_worker",
    )
    assert type(tuner.oracle).__name__ == "OracleClient", type(tuner.oracle)  # a worker, not a chief
    tuner.search(data.x_train[:], data.y_train[:], validation_data=(data.x_val[:], data.y_val[:]), epochs=1, batch_size=16, verbose=0)
    print("stock worker done", flush=True)
    """
)


def test_stock_keras_tuner_worker_against_our_chief(search, tmp_path: Path) -> None:
    s = search(max_trials=3, epochs=1)
    s.start("chief")
    # A stock worker does not wait for a chief that is still preparing (it answers UNAVAILABLE
    # "chief preparing" until then, and KerasTuner's client does not retry that): start it after.
    s.wait_for(lambda: "oracle serving on" in s.log("chief"), timeout=120, what="the chief to serve")
    script = tmp_path / "stock_worker.py"
    script.write_text(WORKER)
    log = s.workdir / "tuner0.stock.log"
    s.logs["tuner0"] = [log]
    with open(log, "wb") as handle:
        s.procs["tuner0"] = subprocess.Popen(
            [sys.executable, str(script), str(s.shared / "data" / "toonvision"), str(tmp_path / "elsewhere"),
             str(SMALL_SIZE[0]), str(SMALL_SIZE[1]), "3"],
            env=s.env("tuner0"), stdout=handle, stderr=subprocess.STDOUT, cwd=s.workdir,
        )
    codes = s.wait_all(timeout=240)
    assert codes == {"chief": 0, "tuner0": 0}, s.all_logs()
    assert "stock worker done" in s.log("tuner0")
    trials = trial_files(s.run_dir)
    assert len(trials) == 3, s.all_logs()
    assert {t["status"] for t in trials.values()} == {"COMPLETED"}, {k: t["status"] for k, t in trials.items()}
    assert all(t["score"] is not None for t in trials.values())
    status = json.loads((s.run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["completed"] == 3
    # The stock worker wrote only into its own project folder, not the run's.
    assert (tmp_path / "elsewhere" / "stock_worker").is_dir()
