"""NOTES.txt says where the logs and TensorBoard are; the helm test pod's script works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from chart_helpers import CHART, NAMESPACE, by_kind_and_component, helm_template, require_tool


def render_notes(tmp_path: Path, values: Path | None = None) -> str:
    """NOTES.txt rendered by helm: `helm template` skips it, so a copy of the
    chart turns it into a define that a one-line template prints."""
    helm = require_tool("helm")
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "test.notes" -}}\n' + notes + "{{- end }}\n")
    (chart / "templates" / "notes.yaml").write_text('notes: {{ include "test.notes" . | toJson }}\n')
    args = [helm, "template", "tuner", str(chart), "--namespace", NAMESPACE, "--show-only", "templates/notes.yaml"]
    if values is not None:
        args += ["--values", str(values)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["notes"]


def test_notes_name_the_log_commands_and_tensorboard(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, CHART / "ci" / "default-values.yaml")
    assert f"kubectl -n {NAMESPACE} logs -f job/tuner-keras-tuner-cluster-chief" in notes
    assert "batch.kubernetes.io/job-name=tuner-keras-tuner-cluster-worker,batch.kubernetes.io/job-completion-index=0" in notes
    assert "port-forward svc/tuner-keras-tuner-cluster-tensorboard 6006:6006" in notes
    assert "helm test" in notes


def test_notes_on_kind_give_the_node_port(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, CHART / "ci" / "kind-values.yaml")
    assert "30606" in notes and "port-forward" not in notes
    assert "CPU only" in notes


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>TensorBoard</html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, object]]:
    """A gRPC server with only the standard health service, on a free port."""
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # The chief's process is alive ("") from its first second; the hook waits
    # for the oracle itself ("keras_tuner.Oracle").
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("keras_tuner.Oracle", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port, servicer
    finally:
        server.stop(grace=None)


@pytest.fixture
def http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def run_hook_script(oracle: str, tensorboard_url: str | None) -> subprocess.CompletedProcess[str]:
    pod = by_kind_and_component(helm_template(CHART / "ci" / "default-values.yaml"))[("Pod", "test")]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    env = {**os.environ, "ORACLE": oracle}
    env.pop("TENSORBOARD_URL", None)
    if tensorboard_url:
        env["TENSORBOARD_URL"] = tensorboard_url
    return subprocess.run(
        [sys.executable, "-c", container["args"][0]], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_hook_script_passes_when_oracle_and_tensorboard_answer(health_server: tuple[int, object], http_server: int) -> None:
    port, _ = health_server
    result = run_hook_script(f"127.0.0.1:{port}", f"http://127.0.0.1:{http_server}/")
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout and "HTTP 200" in result.stdout


def test_hook_script_fails_when_the_oracle_is_not_serving(health_server: tuple[int, object]) -> None:
    from grpc_health.v1 import health_pb2

    port, servicer = health_server
    # Alive but still preparing (waiting for data, decoding it): not yet the oracle.
    servicer.set("keras_tuner.Oracle", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = run_hook_script(f"127.0.0.1:{port}", None)
    assert result.returncode != 0
    assert "NOT_SERVING" in result.stdout
