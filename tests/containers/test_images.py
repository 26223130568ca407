"""Both images build from the repository's Dockerfiles (through `tunectl images`), and the
tuner image runs as the chart runs it: uid 1000, read-only root, no capabilities."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chart_helpers import helm_template
from container_setup import SETUP_TIMEOUT, chart_values
from helpers import free_port
from pod_to_docker import convert_pod
from tuner_job.contract import CONFIG_MOUNT, DEFAULT_CONFIG, SHARED_MOUNT

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(SETUP_TIMEOUT + 300)]
REPO = Path(__file__).resolve().parents[2]

# What the container reports about itself, as JSON: who it runs as, what it may write.
PROBE = r"""
import errno, json, os, pathlib
def writable(path):
    try:
        pathlib.Path(path).write_text("x")
        return "yes"
    except OSError as exc:
        return errno.errorcode[exc.errno]
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "root": writable("/probe"), "venv": writable("/opt/venv/probe"), "config": writable("CONFIG_MOUNT/probe"),
    "tmp": writable("/tmp/probe"), "shared": writable("SHARED_MOUNT/probe"),
    "search_yaml": open("DEFAULT_CONFIG").read(),
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
}))
"""


def _probe() -> str:
    # DEFAULT_CONFIG before CONFIG_MOUNT: the one contains the other's name.
    paths = {"DEFAULT_CONFIG": DEFAULT_CONFIG, "CONFIG_MOUNT": CONFIG_MOUNT, "SHARED_MOUNT": SHARED_MOUNT}
    text = PROBE
    for name, path in paths.items():
        text = text.replace(name, path)
    return text


def test_both_images_build_from_the_repository_dockerfiles(images, base_image, docker):
    tuner, board, base = (docker.inspect(ref) for ref in (images["tuner"], images["tensorboard"], base_image))

    for image in (tuner, board):
        assert image["Config"]["User"] == "1000:1000", image["Config"]
        # Built on the given base (PYTHON_IMAGE): its layer is their first.
        assert image["RootFS"]["Layers"][0] == base["RootFS"]["Layers"][0]
    assert tuner["Config"]["Entrypoint"] == ["python", "-m", "tuner_job"]
    assert board["Config"]["Entrypoint"][0] == "tensorboard"
    # TF_FLAVOUR=cpu reached the build: tensorflow-cpu, not the CUDA build.
    versions = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", images["tuner"], "-c",
        "import importlib.metadata as m; print(m.version('tensorflow-cpu'), m.version('keras-tuner-cluster'))",
        timeout=120,
    ).stdout.split()  # fmt: skip
    assert versions[0] == "2.21.0" and len(versions) == 2, versions


def test_tuner_image_runs_as_uid_1000_with_a_read_only_root(images, pods, tmp_path):
    values = chart_values(workers=1, chief_port=free_port(), tensorboard_port=free_port(), search={"run": "probe"})
    objects = helm_template(set_values=values)
    (claim,) = (o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim")
    shared = tmp_path / "shared"
    shared.mkdir()
    pod = convert_pod(objects, ("Job", "chief"), workdir=tmp_path / "pods", claims={claim: shared})
    (chief,) = pod.containers

    pods.prepare(pod)
    pods.run(chief, command=["python", "-c", _probe()])  # the rendered container, the probe for its command
    assert pods.wait(chief, 120) == 0, pods.logs(chief)
    seen = json.loads(pods.logs(chief).strip().splitlines()[-1])

    assert (seen["uid"], seen["gid"]) == (1000, 1000) and 1000 in seen["groups"], seen
    assert seen["root"] == seen["venv"] == seen["config"] == "EROFS", seen
    assert seen["tmp"] == seen["shared"] == "yes", seen
    assert (shared / "probe").stat().st_uid == 1000, "written as uid 1000 on the shared volume"
    assert seen["search_yaml"] == (chief.mounts[CONFIG_MOUNT][0] / "search.yaml").read_text()
    assert int(seen["cap_eff"], 16) == 0 and seen["no_new_privs"] == "1", seen


def test_doctor_recognises_the_engine_through_docker_host(docker):
    env = {**os.environ, "DOCKER_HOST": docker.host}
    done = subprocess.run([sys.executable, "-m", "cluster", "doctor"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)

    line = next((line for line in done.stdout.splitlines() if "docker engine" in line), "")
    assert "│ ok" in line and "server " in line, done.stdout
    assert docker.host in done.stdout, done.stdout
