"""A worker uses what it was given: its GPUs (or it stops), and threads for its CPU limit, not the node's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from tuner_job.devices import GpuNotVisibleError, configure_threads, cpu_limit, expected_gpus, require_gpus
from tuner_job.errors import ConfigError


@pytest.mark.slow
def test_a_worker_given_a_gpu_that_it_cannot_see_exits_2_at_once(search) -> None:
    """This machine has no GPU: a worker told it holds one stops with one line, and does not wait for a chief."""
    s = search(chief_wait_seconds=600)
    s.start("tuner0", TUNER_GPUS="1", TUNER_CPU_LIMIT="1")  # no chief: the check comes first
    assert s.wait("tuner0", 150) == 2, s.all_logs()
    log = s.log("tuner0")
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log
    assert "holds 1 GPU(s) (TUNER_GPUS=1) but TensorFlow sees 0" in errors[0]
    assert "worker.runtimeClassName" in errors[0]
    assert "waiting for the chief" not in log and "Traceback" not in log
    assert "CPU limit 1" in log


def test_gpu_count_is_checked_against_what_tensorflow_sees() -> None:
    assert require_gpus({"TUNER_GPUS": "1"}, visible=["/physical_device:GPU:0"]) == 1
    assert require_gpus({}, visible=[]) == 0
    with pytest.raises(GpuNotVisibleError, match="holds 2 GPU"):
        require_gpus({"TUNER_GPUS": "2"}, visible=["/physical_device:GPU:0"])
    with pytest.raises(ConfigError, match="TUNER_GPUS"):
        expected_gpus({"TUNER_GPUS": "one"})


def test_cpu_limit_comes_from_the_downward_api_else_the_cgroup(tmp_path: Path) -> None:
    assert cpu_limit({"TUNER_CPU_LIMIT": "3"}, tmp_path) == 3
    assert cpu_limit({"TUNER_CPU_LIMIT": "0.5"}, tmp_path) == 1
    with pytest.raises(ConfigError, match="TUNER_CPU_LIMIT"):
        cpu_limit({"TUNER_CPU_LIMIT": "lots"}, tmp_path)
    assert cpu_limit({}, tmp_path) is None  # no cgroup files: no limit known
    (tmp_path / "cpu.max").write_text("250000 100000\n")  # cgroup v2: 2.5 CPUs
    assert cpu_limit({}, tmp_path) == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit({}, tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")  # cgroup v1: 1.5 CPUs
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit({}, tmp_path) == 2


def test_thread_environment_is_set_once_and_respects_the_users(tmp_path: Path) -> None:
    env = {"TUNER_CPU_LIMIT": "3", "OMP_NUM_THREADS": "7"}
    assert configure_threads(env, tmp_path) == 3
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "3"
    assert env["OMP_NUM_THREADS"] == "7", "a value the user set is kept"
    empty: dict[str, str] = {}
    assert configure_threads(empty, tmp_path) is None and empty == {}


_PROBE = """
import json, os, sys
from tuner_job.devices import configure_threads
configure_threads()                   # what `python -m tuner_job` does before TensorFlow loads
import tensorflow as tf
configure_threads()                   # and what the chief and worker do once it has
tf.constant([[1.0, 2.0]]) @ tf.constant([[1.0], [2.0]])
print(json.dumps({"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter": tf.config.threading.get_inter_op_parallelism_threads(),
                  "omp": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count()}))
"""


@pytest.mark.slow
def test_tensorflow_sizes_its_pools_from_the_cpu_limit_not_the_node() -> None:
    # 3 on this 2-core machine: the value can only come from the limit.
    env = {"PATH": "/usr/bin:/bin", "TUNER_CPU_LIMIT": "3", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=180, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert (seen["intra"], seen["inter"], seen["omp"]) == (3, 3, "3"), seen
