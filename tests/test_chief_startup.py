"""The chief's start on a real cluster, as real processes: data pushed after the deploy, probes
answered before the data is ready, and a volume it may not write.

- The chief waits (bounded, with a log line) for a data folder that is not
  there yet; meanwhile grpc.health.v1 says the process is alive ("") but the
  oracle is not ready, and workers wait without spending `chief_wait_seconds`.
- A PermissionError on the volume is one line with the fix, exit 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import REPO, free_port, small_config
from tuner_job.chief_startup import DATA_WAIT_MARKER, ORACLE_SERVICE, PREPARING

pytestmark = pytest.mark.slow


def health(port: int, service: str) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def get_space_error(port: int) -> grpc.RpcError:
    from tuner_job import _kt

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _kt.pb_grpc.OracleStub(channel).GetSpace(_kt.pb.GetSpaceRequest(), timeout=5)
    return caught.value


def test_chief_waits_for_data_pushed_after_it_started_and_workers_wait_for_it(search, shared: Path, tmp_path: Path) -> None:
    # The workers give up on an absent chief after 5 s; the data arrives after about 15.
    s = search(data="data/late", max_trials=2, chief_wait_seconds=5, data_wait_seconds=300)
    s.start("chief")
    s.start("tuner0")
    s.wait_for(lambda: DATA_WAIT_MARKER in s.log("chief"), 120, "the chief's data-wait line")
    assert "tunectl data push DIR --name late" in s.log("chief")

    # Alive for the startup and liveness probes; not Ready: the oracle does not serve yet.
    assert health(s.port, "") == "SERVING"
    assert health(s.port, ORACLE_SERVICE) == "NOT_SERVING"
    error = get_space_error(s.port)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith(PREPARING) and DATA_WAIT_MARKER in error.details()

    s.wait_for(lambda: "is preparing" in s.log("tuner0"), 120, "the worker to see a preparing chief")
    time.sleep(12)  # longer than chief_wait_seconds: a preparing chief is not an absent one
    assert s.procs["tuner0"].poll() is None, s.all_logs()
    assert s.procs["chief"].poll() is None, s.all_logs()

    # `tunectl data push` makes the folder appear whole, by a rename.
    staging = shared / "data" / ".late.partial"
    shutil.copytree(shared / "data" / "toonvision", staging)
    staging.rename(shared / "data" / "late")

    assert s.wait_all(240) == {"chief": 0, "tuner0": 0}, s.all_logs()
    assert "dataset" in s.log("chief") and "arrived after" in s.log("chief")
    assert (s.run_dir / "results.json").is_file()


def test_chief_gives_up_on_data_that_never_comes_with_one_line(search) -> None:
    s = search(data="data/never", data_wait_seconds=2)
    proc = s.start("chief")
    assert s.wait("chief", 120) == 2, s.all_logs()
    errors = [line for line in s.log("chief").splitlines() if line.startswith("error:")]
    assert len(errors) == 1, s.all_logs()
    assert "data folder not found" in errors[0] and "data_wait_seconds=2" in errors[0]
    assert "tunectl data push DIR --name never" in errors[0]
    assert "Traceback" not in s.log("chief")
    assert proc.returncode == 2


def _without_root_privileges() -> list[str]:
    """A command prefix under which the file modes hold for this process too.

    Root may write anywhere because of two capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH),
    not because of its uid: ``setpriv`` (util-linux) drops them from the bounding set, so the
    chief still runs as uid 0 with the same interpreter and checkout (a CI machine keeps both
    under folders only root may enter) and is refused a folder that is not writable.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): root is refused nothing")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def test_a_volume_the_chief_may_not_write_is_one_line_with_the_fix(pristine_dataset: Path) -> None:
    """The volume's root belongs to root and is not writable: the chief cannot create runs/ (or the cache)."""
    # A folder every user may enter (pytest's tmp_path is private to its owner).
    root = Path(tempfile.mkdtemp(prefix="tuner-perm-"))
    try:
        root.chmod(0o755)
        shared = root / "shared"
        shutil.copytree(pristine_dataset, shared / "data" / "toonvision")
        config = root / "search.yaml"
        config.write_text(yaml.safe_dump(small_config()))
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        prefix = _without_root_privileges()
        for folder in (shared, shared / "data", shared / "data" / "toonvision"):
            folder.chmod(0o555)

        port = free_port()
        env = {
            **os.environ, "KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port), "TUNER_CONFIG": str(config), "TUNER_SHARED_DIR": str(shared),
            "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(root), "PYTHONPATH": str(REPO),
        }  # fmt: skip
        result = subprocess.run(
            [*prefix, sys.executable, "-m", "tuner_job"], env=env, cwd=root, capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
        # TensorFlow's own C++ start-up notes aside, one line.
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
        assert len(errors) == 1 and errors[0].startswith("error: permission denied on the shared volume"), result.stderr
        assert "storage.fixOwnership=true" in errors[0]
        assert "runs as uid" in errors[0] and "belongs to uid" in errors[0]
        assert not (shared / "runs").exists() or not any((shared / "runs").iterdir())
    finally:
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
