"""What this process may use: the GPUs it was given, and as many CPU threads as its limit.

- `TUNER_GPUS` (the chart sets it from `worker.gpus`) is how many GPUs the
  worker holds. A worker that holds GPUs but whose TensorFlow sees fewer
  would train on the CPU, unnoticed and many times slower (on kind or k3s the
  pod needs the `nvidia` RuntimeClass, NVIDIA/nvidia-container-toolkit#555):
  `require_gpus` makes that exit 2, with one line that says why.
- TensorFlow sizes its thread pools to the node's cores, not to the
  container's CPU limit (tensorflow/tensorflow#17206): 64 threads in a
  2-CPU container are throttled by the CFS quota. `configure_threads` sizes
  them from `TUNER_CPU_LIMIT` (the chart's downward API, whole cores), else
  from the cgroup's CPU quota.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from tuner_job.errors import ConfigError, TunerJobError

__all__ = ["CPU_LIMIT_ENV", "GPUS_ENV", "GpuNotVisibleError", "configure_threads", "cpu_limit", "expected_gpus", "require_gpus"]

log = logging.getLogger("tuner_job")

GPUS_ENV = "TUNER_GPUS"
CPU_LIMIT_ENV = "TUNER_CPU_LIMIT"
_THREAD_ENV = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
_CGROUP = Path("/sys/fs/cgroup")


class GpuNotVisibleError(TunerJobError):
    """The worker holds GPUs that TensorFlow cannot see (exit 2: every worker would fail alike)."""


def expected_gpus(environ: Mapping[str, str] | None = None) -> int:
    """The GPUs this process holds (`TUNER_GPUS`, default 0); ConfigError names a bad value."""
    env = os.environ if environ is None else environ
    text = env.get(GPUS_ENV, "").strip() or "0"
    if not text.isdigit():
        raise ConfigError(f"{GPUS_ENV} must be a whole number of GPUs, but got {text!r}")
    return int(text)


def require_gpus(environ: Mapping[str, str] | None = None, visible: list[object] | None = None) -> int:
    """Check that TensorFlow sees the GPUs the worker holds; returns how many it sees.

    `visible` defaults to `tf.config.list_physical_devices("GPU")`. Raises
    GpuNotVisibleError when fewer are visible than `TUNER_GPUS` says.
    """
    env = os.environ if environ is None else environ
    wanted = expected_gpus(env)
    if visible is None:
        if wanted == 0:
            return 0
        import tensorflow as tf

        visible = tf.config.list_physical_devices("GPU")
        built = "yes" if tf.test.is_built_with_cuda() else "no (a CPU-only TensorFlow: build the image with TF_FLAVOUR=gpu)"
    else:
        built = "unknown"
    if len(visible) < wanted:
        raise GpuNotVisibleError(
            f"this worker holds {wanted} GPU(s) ({GPUS_ENV}={wanted}) but TensorFlow sees {len(visible)} "
            f"(NVIDIA_VISIBLE_DEVICES={env.get('NVIDIA_VISIBLE_DEVICES', 'unset')}, TensorFlow built with CUDA: {built}); "
            "give the worker pods the NVIDIA runtime (worker.runtimeClassName, e.g. nvidia) and check the node's "
            "device plugin: the worker stops rather than train on the CPU"
        )
    return len(visible)


def _cgroup_cpus(root: Path) -> float | None:
    """The cgroup's CPU quota in cores (v2 `cpu.max`, else v1 `cpu.cfs_*`); None when unlimited or unknown."""
    try:
        quota, _, period = (root / "cpu.max").read_text().partition(" ")
        if quota.strip() != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cpu_limit(environ: Mapping[str, str] | None = None, cgroup_root: Path = _CGROUP) -> int | None:
    """Whole CPUs this process may use: `TUNER_CPU_LIMIT`, else the cgroup quota rounded up; None = no limit."""
    env = os.environ if environ is None else environ
    text = env.get(CPU_LIMIT_ENV, "").strip()
    if text:
        try:
            cores = float(text)
        except ValueError:
            cores = 0.0
        if not cores > 0:
            raise ConfigError(f"{CPU_LIMIT_ENV} must be a positive number of CPUs, but got {text!r}")
        return max(1, math.ceil(cores))
    quota = _cgroup_cpus(cgroup_root)
    return None if quota is None else max(1, math.ceil(quota))


def configure_threads(environ: MutableMapping[str, str] | None = None, cgroup_root: Path = _CGROUP) -> int | None:
    """Size OpenMP's and TensorFlow's thread pools to the CPU limit; returns it (None: left to TensorFlow).

    Before TensorFlow is imported it sets `OMP_NUM_THREADS`,
    `TF_NUM_INTRAOP_THREADS` and `TF_NUM_INTEROP_THREADS` (unless the user
    set them); once it is imported, `tf.config.threading` too (call it again
    then: it is idempotent, and a no-op once TensorFlow has started).
    """
    env = os.environ if environ is None else environ
    cores = cpu_limit(env, cgroup_root)
    if cores is None:
        return None
    for name in _THREAD_ENV:
        env.setdefault(name, str(cores))
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        threading = tf.config.threading
        try:
            if threading.get_intra_op_parallelism_threads() != int(env["TF_NUM_INTRAOP_THREADS"]):
                threading.set_intra_op_parallelism_threads(int(env["TF_NUM_INTRAOP_THREADS"]))
            if threading.get_inter_op_parallelism_threads() != int(env["TF_NUM_INTEROP_THREADS"]):
                threading.set_inter_op_parallelism_threads(int(env["TF_NUM_INTEROP_THREADS"]))
        except (RuntimeError, ValueError) as exc:  # TensorFlow already ran an op: its pools are fixed
            log.debug("TensorFlow's thread pools left as they are: %s", exc)
    return cores
