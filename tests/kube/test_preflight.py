"""Every Kubernetes verb starts with one pre-flight: which context and server, reachable or not,
the release found or not, and one line with the next step; no kubectl, helm or urllib3 noise.

The closed-port cases use a real kubeconfig that points at a port on
127.0.0.1 where nothing listens, the real `kubernetes` client, and the real
helm and kubectl where this machine has them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app

from .fake_api import write_kubeconfig
from .kube_objects import helm_release, job

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
NOISE = ("urllib3", "HTTPSConnectionPool", "HTTPConnectionPool", "Max retries", "Traceback", "NewConnectionError",
         "The connection to the server", "Kubernetes cluster unreachable", "object at 0x")  # fmt: skip


def _dataset(root: Path) -> Path:
    source = root / "toonvision"
    for label in ("a", "b"):
        (source / label).mkdir(parents=True)
        (source / label / "0.png").write_bytes(b"png")
    return source


def _verbs(tmp_path: Path) -> list[list[str]]:
    return [
        ["deploy"], ["undeploy"], ["status"], ["logs", "--chief"], ["tensorboard"],
        ["data", "push", str(_dataset(tmp_path))], ["verify"], ["scale", "--workers", "3"],
    ]  # fmt: skip


@pytest.fixture
def real_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """helm from .tools/bin and kubectl from PATH, where they exist: they must not get a word in."""
    monkeypatch.setenv("TUNECTL_TOOLS_DIR", str(REPO / ".tools" / "bin"))
    monkeypatch.setenv("PATH", os.pathsep.join([str(REPO / ".tools" / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]))
    for var in ("TUNECTL_CONTEXT", "TUNECTL_RELEASE", "TUNECTL_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)


def test_every_verb_against_a_closed_port_says_so_in_one_line(closed_port_kubeconfig, real_tools, tmp_path):
    for verb in _verbs(tmp_path):
        result = runner.invoke(app, verb)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1, (verb, result.output)
        assert len(lines) == 1, (verb, result.output)
        assert lines[0] == (
            f"error: cannot reach the Kubernetes API server {closed_port_kubeconfig} of context 'kind-gone' "
            "(connection refused); is the kind cluster running? `tunectl up --name gone` creates it, "
            "`docker start gone-control-plane` starts a stopped one"
        ), verb
        assert not any(noise in result.output for noise in NOISE), (verb, result.output)


def test_a_closed_port_of_another_cluster_points_at_the_context(tmp_path, monkeypatch, real_tools):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_kubeconfig(tmp_path / "kc", {"prod": f"https://127.0.0.1:{port}", "staging": "https://127.0.0.1:1"}, "prod")
    monkeypatch.setenv("KUBECONFIG", str(config))

    result = runner.invoke(app, ["status"])

    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: cannot reach the Kubernetes API server https://127.0.0.1:{port} of context 'prod' (connection refused); "
        "check the cluster, your network or VPN, or pick another context with --context NAME or "
        "`kubectl config use-context NAME`"
    )


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unknown_context_is_named_with_the_ones_that_exist(fake_api, tmp_path, monkeypatch, how):
    for verb in _verbs(tmp_path / how):
        args = [*verb, "--context", "prod"] if how == "flag" else verb
        if how == "env":
            monkeypatch.setenv("TUNECTL_CONTEXT", "prod")
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (verb, result.output)
        assert result.output.strip() == (
            "error: kubeconfig context 'prod' not found; contexts: kind-tuner, prod-gpus "
            "(pick one with --context NAME or `kubectl config use-context NAME`)"
        ), verb
    assert fake_api.requests == [], "nothing is asked of a cluster that was not named"


@pytest.mark.parametrize("where", ["KUBECONFIG", "KUBECONFIG list", "empty HOME", "no HOME"])
def test_every_verb_without_a_kubeconfig_names_what_is_missing_and_exits_2(fake_tools, tmp_path, monkeypatch, where):
    """No cluster here: KUBECONFIG at missing files, or no KUBECONFIG and a HOME without ~/.kube/config."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    if where == "KUBECONFIG":
        looked_at = [str(tmp_path / "no-kubeconfig")]
        what = "KUBECONFIG names no file that exists"
    elif where == "KUBECONFIG list":
        looked_at = [str(tmp_path / "a"), str(tmp_path / "b")]
        monkeypatch.setenv("KUBECONFIG", os.pathsep.join(looked_at))
        what = "KUBECONFIG names no file that exists"
    else:
        monkeypatch.delenv("KUBECONFIG")
        if where == "no HOME":
            monkeypatch.setenv("HOME", "")
        looked_at = [os.path.expanduser("~/.kube/config")]
        what = "set KUBECONFIG or create ~/.kube/config"
    for verb in _verbs(tmp_path / where):
        result = runner.invoke(app, verb)
        assert result.exit_code == 2, (verb, result.output)
        assert result.output.strip().splitlines() == [
            f"error: no Kubernetes config: {what} (looked at {', '.join(looked_at)}); "
            "`tunectl up` creates a local kind cluster and its context"
        ], verb
    assert fake_tools.calls() == [], "no tool runs without a cluster to run against"


@pytest.mark.parametrize("content", ["", "- not\n- a mapping\n", "clusters: [\n"])
def test_an_empty_or_unreadable_kubeconfig_is_one_line_and_exit_2(fake_tools, tmp_path, monkeypatch, content):
    config = tmp_path / "kubeconfig"
    config.write_text(content)
    monkeypatch.setenv("KUBECONFIG", str(config))

    result = runner.invoke(app, ["status"])

    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0], result.output
    assert "Traceback" not in result.output


def test_a_missing_release_is_named_with_the_next_step(fake_api, tmp_path):
    fake_api.add(helm_release("other"))
    for verb in (["undeploy"], ["status"], ["logs", "--chief"], ["tensorboard"], ["scale", "--workers", "3"]):
        result = runner.invoke(app, verb)
        assert result.exit_code == 1, (verb, result.output)
        assert result.output.strip().splitlines() == [
            "error: no release 'tuner' in namespace 'default' of context 'kind-tuner' (releases there: other); "
            "`tunectl deploy` installs it"
        ], verb
    assert ("GET", "/api/v1/namespaces/default/secrets", {"labelSelector": ["owner=helm"]}) in fake_api.requests


def test_the_pre_flight_line_says_context_server_and_release(fake_api, fake_tools):
    fake_api.add(helm_release("tuner", revision=1, status="superseded"), helm_release("tuner", revision=3))
    fake_tools.add("helm")

    result = runner.invoke(app, ["undeploy", "--context", "prod-gpus"])

    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == (
        f"cluster: context prod-gpus at {fake_api.url} (Kubernetes v1.33.1); "
        "release 'tuner' in namespace 'default': deployed (revision 3)"
    )
    assert fake_tools.calls() == [["helm", "uninstall", "tuner", "--namespace", "default", "--kube-context", "prod-gpus"]]


def test_where_helm_records_are_forbidden_the_release_is_found_by_its_jobs(fake_api, fake_tools):
    fake_api.fail("secrets", 403)
    fake_api.add(job("chief"))
    fake_tools.add("helm")

    result = runner.invoke(app, ["undeploy"])

    assert result.exit_code == 0, result.output
    assert "release 'tuner' in namespace 'default': found" in result.output
    assert fake_tools.calls("helm")[0][:2] == ["helm", "uninstall"]


def test_refused_credentials_are_one_line(fake_api):
    fake_api.fail("version", 401)

    result = runner.invoke(app, ["status"])

    assert result.exit_code == 1
    assert re.fullmatch(
        r"error: the Kubernetes API server http://127\.0\.0\.1:\d+ of context 'kind-tuner' refused its credentials \(401\); "
        r"renew them \(e\.g\. your cloud CLI's get-credentials\) or pick another context",
        result.output.strip(),
    ), result.output


def test_every_kubernetes_verb_takes_context_and_its_environment_variable():
    for verb in (["deploy"], ["undeploy"], ["status"], ["logs"], ["tensorboard"], ["data", "push"], ["verify"], ["scale"]):
        result = runner.invoke(app, [*verb, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert "--context" in result.output and "TUNECTL_CONTEXT" in result.output, verb
