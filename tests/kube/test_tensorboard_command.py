"""`tunectl tensorboard` prints the URL only when what answers there is the release's TensorBoard.

A real TensorBoard (started with the window title the chart gives a release's) serves real trial logs on a
free loopback port; kind's port mapping is read from a fake `docker port` that names that port; the release
and its Service come from the fake API server. Another program on the port is a plain HTTP server.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from helpers import TensorBoardProcess, free_port, wait_for_http
from tuner_job.contract import tensorboard_title
from tuner_job.layout import RunPaths

from .kube_objects import helm_release, service

pytestmark = pytest.mark.slow  # a real TensorBoard (TensorFlow) starts

runner = CliRunner()
NODE_PORT = 30606


@pytest.fixture(scope="module")
def release_tensorboard(tmp_path_factory: pytest.TempPathFactory):
    """Release `tuner`'s TensorBoard in namespace `default`, serving two trials of run `toonvision`, as the chart starts it."""
    from tuner_job.tensorboard_logs import write_trial_hparams, write_trial_score

    shared = tmp_path_factory.mktemp("shared")
    paths = RunPaths(shared, "toonvision")
    for trial_id, score in (("0", 0.9), ("1", 0.7)):
        write_trial_hparams(paths.trial_logs(trial_id), paths.run, trial_id, {"filters": 8})
        write_trial_score(paths.trial_logs(trial_id), score, {"val_loss": score}, 0)
    with TensorBoardProcess(paths.runs_dir, "--window_title", tensorboard_title("default", "tuner")) as tb:
        wait_for_http(f"{tb.url}/data/runs", 120, lambda body: b"toonvision/logs/trial_1" in body)
        yield tb


@pytest.fixture
def another_program():
    """A web server on a free loopback port that is not TensorBoard."""

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def on_kind(fake_api, fake_tools, mapped_port: int, release: str = "tuner") -> None:
    """Context kind-tuner is kind cluster `tuner`, whose control-plane maps TensorBoard's NodePort to `mapped_port`."""
    fake_api.add(helm_release(release), service("tensorboard", release=release, node_port=NODE_PORT))
    fake_tools.add("kind", (["get", "clusters"], "tuner\n", "", 0))
    fake_tools.add("docker", (["port", "tuner-control-plane", f"{NODE_PORT}/tcp"], f"127.0.0.1:{mapped_port}\n", "", 0))
    fake_tools.add("kubectl")


def test_the_release_tensorboard_gets_its_url_with_its_runs(fake_api, fake_tools, release_tensorboard) -> None:
    on_kind(fake_api, fake_tools, release_tensorboard.port)

    result = runner.invoke(app, ["tensorboard"])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"TensorBoard: {release_tensorboard.url}  (logs of run toonvision: 2 trials)"
    assert fake_tools.calls("kubectl") == []
    assert ["docker", "port", "tuner-control-plane", f"{NODE_PORT}/tcp"] in fake_tools.calls("docker")


def test_another_program_on_the_port_is_one_line(fake_api, fake_tools, another_program) -> None:
    on_kind(fake_api, fake_tools, another_program)

    result = runner.invoke(app, ["tensorboard"])

    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()[1:]  # after the pre-flight's line
    assert line.startswith(f"error: http://127.0.0.1:{another_program} (kind's mapping of TensorBoard's NodePort {NODE_PORT}) answers, "
                           "but it is another program, not TensorBoard (HTTP 404 for /data/environment, server BaseHTTP/"), line  # fmt: skip
    assert line.endswith("not release 'tuner''s TensorBoard; stop that program, or port-forward: `tunectl tensorboard --port 16006`")
    assert "http://" not in result.stdout and fake_tools.calls("kubectl") == []


def test_the_tensorboard_of_another_release_is_not_this_one(fake_api, fake_tools, release_tensorboard) -> None:
    on_kind(fake_api, fake_tools, release_tensorboard.port, release="other")

    result = runner.invoke(app, ["tensorboard", "--release", "other"])

    assert result.exit_code == 1
    assert "it is TensorBoard 'keras-tuner-cluster default/tuner' 2.21.0" in result.stderr
    assert "not release 'other''s TensorBoard" in result.stderr and len(result.stderr.strip().splitlines()) == 2


def test_a_taken_local_port_is_refused_before_port_forwarding(fake_api, fake_tools, another_program) -> None:
    fake_api.add(helm_release(), service("tensorboard"))
    fake_tools.add("kubectl")

    result = runner.invoke(app, ["tensorboard", "--context", "prod-gpus", "--port", str(another_program)])

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: local port {another_program} is taken by another program, not TensorBoard "
        f"(HTTP 404 for /data/environment, server {result.stderr.split('server ')[-1].split(')')[0]}); pick a free one with --port PORT"
    )
    assert fake_tools.calls("kubectl") == []


def test_a_mapping_that_does_not_answer_yet_falls_back_to_port_forward(fake_api, fake_tools) -> None:
    on_kind(fake_api, fake_tools, free_port())  # nothing listens there
    port = free_port()

    result = runner.invoke(app, ["tensorboard", "--port", str(port)])

    assert result.exit_code == 0, result.output
    assert "does not answer yet (is the TensorBoard pod ready?); port-forwarding instead" in result.stderr
    assert fake_tools.calls("kubectl") == [
        ["kubectl", "port-forward", "--namespace", "default", "--context", "kind-tuner", "svc/tuner-keras-tuner-cluster-tensorboard", f"{port}:6006"]
    ]


def test_the_chart_names_each_release_tensorboard(tmp_path: Path) -> None:
    """The window title this command checks is the one the chart passes (a real `helm template`)."""
    import subprocess

    import yaml

    helm = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not installed (make tools)")
    chart = Path(__file__).resolve().parents[2] / "helm" / "keras-tuner-cluster"
    argv = [str(helm), "template", "search", str(chart), "--namespace", "tuning", "--values", str(chart / "ci" / "default-values.yaml")]
    rendered = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--window_title") + 1] == tensorboard_title("tuning", "search")
