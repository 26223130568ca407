"""What the container tests build, render and run: the image tag, the chart values, the time limits."""

from __future__ import annotations

from typing import Any

__all__ = ["BUILD_TIMEOUT", "IMAGES", "SETUP_TIMEOUT", "TAG", "chart_values"]

# Not the chart's appVersion: a user's own images of that tag are left alone.
TAG = "containers-test"
IMAGES = {"tuner": f"keras-tuner-cluster/tuner:{TAG}", "tensorboard": f"keras-tuner-cluster/tensorboard:{TAG}"}
# A cold run on two loaded cores took: docker.io about 20 s, the base 80 to
# 100 s, both images about 6.5 minutes (pip downloads TensorFlow). The limits
# leave 4 to 15 times that, yet keep a hung setup (40 minutes at worst) plus
# a test's own limit plus the rest of `make test` inside CI's 90 minutes.
ENGINE_TIMEOUT = 300
BASE_TIMEOUT = 600
BUILD_TIMEOUT = 1500
# A test's limit when the session's setup (engine, base, images) falls in it.
SETUP_TIMEOUT = ENGINE_TIMEOUT + BASE_TIMEOUT + BUILD_TIMEOUT


def _resources(cpu: str, memory: str) -> dict[str, Any]:
    return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": cpu, "memory": memory}}


def chart_values(
    *,
    workers: int,
    chief_port: int,
    tensorboard_port: int,
    search: dict[str, Any],
    worker_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`--set-json` values: the test images, no GPUs, one CPU per container, free ports, a tiny search.

    TensorBoard's Service port equals its container port: on the host
    network there is no kube-proxy between them.
    """
    return {
        "workers": workers,
        "image.tag": TAG,
        "tensorboard.image.tag": TAG,
        "worker.gpus": 0,
        # The chart's PVC (what a real cluster gets); the tests bind a host folder for it.
        "storage.storageClassName": "test-rwx",
        "worker.resources": _resources("1", "3Gi"),
        "worker.extraEnv": [{"name": k, "value": v} for k, v in (worker_env or {}).items()],
        "chief.resources": _resources("1", "2Gi"),
        "chief.port": chief_port,
        "tensorboard.resources": _resources("1", "1Gi"),
        "tensorboard.port": tensorboard_port,
        "tensorboard.service.port": tensorboard_port,
        "search": search,
    }
