"""Run converted pods (`pod_to_docker.PodRun`) on a Docker engine, as a kubelet would, and clean up.

`Docker` is the docker CLI with a time limit on every call. `PodRunner` does
for a pod what the kubelet does before and while it runs: it makes the
pod's folders, gives the fsGroup the volumes that get one (group-owned,
group-writable, setgid folders), refuses an image whose user is root when
runAsNonRoot asks for a non-root one and no runAsUser is set, runs the init
containers one by one to exit 0, then starts the containers. It waits for a
container's exit or its readiness (its rendered startup and readiness probes:
httpGet, tcpSocket, grpc), reads `docker logs`, sends `docker kill`.
`close()` removes every container it created, running or not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pod_to_docker import ContainerRun, ConversionError, PodRun

__all__ = ["Docker", "DockerError", "PodRunner"]


class DockerError(Exception):
    """A docker call failed or ran out of time; the message has its command and last output."""


class Docker:
    """The docker CLI pointed at one engine (`DOCKER_HOST`)."""

    def __init__(self, host: str, private: bool = False) -> None:
        self.host = host
        self.env = {**os.environ, "DOCKER_HOST": host}
        # Our own engine (scripts/docker-engine.sh): everything in it is ours to clean.
        self.private = private

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DockerError(f"`docker {' '.join(args[:3])} ...` did not finish within {timeout:g} s") from None
        if check and done.returncode != 0:
            raise DockerError(f"`docker {' '.join(args[:3])} ...` exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def answers(self) -> bool:
        return self("version", "--format", "{{.Server.Version}}", timeout=20, check=False).returncode == 0

    def inspect(self, what: str) -> dict[str, Any]:
        return json.loads(self("inspect", what, timeout=30).stdout)[0]


def _give_to_group(folder: Path, group: int) -> None:
    """What the kubelet does to a volume for fsGroup: group-owned, group rw, setgid folders."""
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(root) / name
            os.chown(path, -1, group, follow_symlinks=False)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o2770 if path.is_dir() else 0o660))
    os.chown(folder, -1, group)
    folder.chmod(folder.stat().st_mode | 0o2770)


class PodRunner:
    """Starts pods on `docker` and removes every container it made at `close()`."""

    def __init__(self, docker: Docker) -> None:
        self.docker = docker
        self.created: list[str] = []

    def prepare(self, pod: PodRun) -> None:
        """What the kubelet does before a pod's first container: its folders, the fsGroup, runAsNonRoot.

        Raises ConversionError for runAsNonRoot with an image whose user is root.
        """
        for folder in pod.make_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)  # an emptyDir is world-writable
        for folder in pod.fs_group_dirs if pod.fs_group is not None else []:
            _give_to_group(folder, pod.fs_group)
        for container in pod.init_containers + pod.containers:
            if container.check_image_non_root:
                self._check_non_root(container)

    def start(self, pod: PodRun, *, init_timeout: float = 300) -> None:
        """`prepare` the pod, run its init containers one by one to exit 0, then start its containers.

        Raises ConversionError (see `prepare`), DockerError when docker fails or an
        init container does not exit 0 within `init_timeout` seconds.
        """
        self.prepare(pod)
        for container in pod.init_containers:
            self.created.append(container.docker_name)
            self.docker(*container.argv(), timeout=init_timeout)
            code = self.wait(container, init_timeout)
            if code != 0:
                raise DockerError(f"init container {container.name} exited {code}:\n{self.logs(container)[-3000:]}")
        for container in pod.containers:
            self.run(container)

    def run(self, container: ContainerRun, command: list[str] | None = None) -> None:
        """`docker run --detach` one container (with `command` in place of its own, if given)."""
        argv = container.argv(command)
        self.created.append(container.docker_name)
        self.docker(argv[0], "--detach", *argv[1:], timeout=120)

    def _check_non_root(self, container: ContainerRun) -> None:
        user = self.docker.inspect(container.image)["Config"].get("User") or "0"
        uid = user.split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            raise ConversionError(f"{container.name}: runAsNonRoot, and the image's user {user!r} is not a non-zero uid")

    def wait(self, container: ContainerRun, timeout: float) -> int | None:
        """The container's exit code, or None if it still runs after `timeout` seconds."""
        try:
            done = self.docker("wait", container.docker_name, timeout=timeout)
        except DockerError:
            if self.state(container)["Running"]:
                return None
            raise
        return int(done.stdout.strip())

    def state(self, container: ContainerRun) -> dict[str, Any]:
        return self.docker.inspect(container.docker_name)["State"]

    def logs(self, container: ContainerRun) -> str:
        done = self.docker("logs", container.docker_name, timeout=60, check=False)
        return done.stdout + done.stderr

    def kill(self, container: ContainerRun, signal: str = "KILL") -> None:
        self.docker("kill", "--signal", signal, container.docker_name, timeout=60)

    def wait_ready(self, container: ContainerRun, timeout: float) -> None:
        """Poll the container's startup, then readiness probe until it passes; DockerError after `timeout` s or an exit."""
        deadline = time.monotonic() + timeout
        for probe in (container.startup, container.readiness):
            while probe is not None and not _probe_passes(probe):
                if not self.state(container)["Running"]:
                    raise DockerError(f"{container.name} exited before it was ready:\n{self.logs(container)[-3000:]}")
                if time.monotonic() > deadline:
                    raise DockerError(f"{container.name} not ready after {timeout:g} s:\n{self.logs(container)[-3000:]}")
                time.sleep(0.5)

    def close(self) -> None:
        """Remove (force: a running one is killed first) every container this runner created."""
        for name in reversed(self.created):
            self.docker("rm", "--force", "--volumes", name, timeout=120, check=False)
        self.created.clear()


def _probe_passes(probe: dict[str, Any]) -> bool:
    """One probe of the host network's 127.0.0.1, as the kubelet would make it of the pod's IP."""
    seconds = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe:
        url = f"http://127.0.0.1:{probe['httpGet']['port']}{probe['httpGet'].get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=seconds) as response:
                return 200 <= response.status < 400
        except (urllib.error.URLError, OSError):
            return False
    if "tcpSocket" in probe:
        try:
            with socket.create_connection(("127.0.0.1", probe["tcpSocket"]["port"]), timeout=seconds):
                return True
        except OSError:
            return False
    if "grpc" in probe:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{probe['grpc']['port']}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=seconds
                )
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    raise ConversionError(f"probe {sorted(probe)} is not run by tests/containers/docker_pods.py")
