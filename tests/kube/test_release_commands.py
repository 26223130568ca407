"""deploy, undeploy, tensorboard, data push: the exact helm and kubectl calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.kube import commands

runner = CliRunner()
CHIEF = "app.kubernetes.io/instance={r},app.kubernetes.io/component=chief"


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    folder = tmp_path / "chart"
    folder.mkdir()
    (folder / "Chart.yaml").write_text("apiVersion: v2\nname: keras-tuner-cluster\nversion: 0.1.0\n")
    return folder


def test_deploy_passes_values_and_sets_then_waits_for_the_chief(fake_tools, chart, tmp_path):
    fake_tools.add("helm", (["upgrade"], "Release \"search\" has been upgraded.\nNOTES:\nSearch is on.\n", "", 0))
    fake_tools.add("kubectl", (["config", "current-context"], "prod-gpus\n", "", 0))
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("{}\n")
    second.write_text("{}\n")

    result = runner.invoke(
        app,
        [
            "deploy", "--chart", str(chart), "--release", "search", "--namespace", "tuning",
            "--values", str(first), "-f", str(second), "--set", "worker.replicas=4", "--set", "worker.gpus=1",
            "--timeout", "30",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        ["kubectl", "config", "current-context"],
        [
            "helm", "upgrade", "--install", "search", str(chart), "--namespace", "tuning", "--create-namespace",
            "--values", str(first), "--values", str(second), "--set", "worker.replicas=4", "--set", "worker.gpus=1",
        ],
        [
            "kubectl", "wait", "--for=condition=Ready", "pod", "--selector", CHIEF.format(r="search"),
            "--namespace", "tuning", "--timeout=30s",
        ],
    ]  # fmt: skip
    assert "Search is on." in result.output, "Helm's NOTES are passed on"
    assert "tunectl logs --chief -f --release search --namespace tuning" in result.output
    assert "http://127.0.0.1:6006" in result.output


def test_deploy_defaults_and_no_wait(fake_tools, chart):
    fake_tools.add("helm")
    fake_tools.add("kubectl", (["config", "current-context"], "", "error: current-context is not set\n", 1))

    result = runner.invoke(app, ["deploy", "--chart", str(chart), "--no-wait"])

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        ["kubectl", "config", "current-context"],
        ["helm", "upgrade", "--install", "tuner", str(chart), "--namespace", "default", "--create-namespace"],
    ]


def test_deploy_on_kind_puts_the_charts_kind_values_under_the_users(fake_tools, chart, tmp_path):
    (chart / "ci").mkdir()
    (chart / "ci" / "kind-values.yaml").write_text("workers: 2\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("workers: 3\n")
    fake_tools.add("helm")
    fake_tools.add("kubectl", (["config", "current-context"], "kind-tuner\n", "", 0))

    result = runner.invoke(app, ["deploy", "--chart", str(chart), "--no-wait", "--values", str(mine)])

    assert result.exit_code == 0, result.output
    helm = fake_tools.calls("helm")[0]
    assert helm[helm.index("--values") :] == ["--values", str(chart / "ci" / "kind-values.yaml"), "--values", str(mine)]

    result = runner.invoke(app, ["deploy", "--chart", str(chart), "--no-wait", "--no-kind"])

    assert result.exit_code == 0, result.output
    assert "--values" not in fake_tools.calls("helm")[1]


def test_deploy_retries_until_the_chief_pod_exists(fake_tools, chart, tmp_path):
    fake_tools.add("helm")
    # The first wait finds no pod; the fake then answers "ready" from a second rules file.
    counter = tmp_path / "waits"
    fake_tools.add("kubectl", (["wait"], "", "error: no matching resources found\n", 1))
    script = fake_tools.bin / "kubectl"
    script.write_text(
        script.read_text().replace(
            "for prefix",
            f"import os\nn = os.path.getsize({str(counter)!r}) if os.path.exists({str(counter)!r}) else 0\n"
            f"open({str(counter)!r}, 'a').write('x')\nif n >= 1: sys.exit(0)\nfor prefix",
        )
    )

    result = runner.invoke(app, ["deploy", "--no-kind", "--chart", str(chart), "--timeout", "20"])

    assert result.exit_code == 0, result.output
    assert [c[1] for c in fake_tools.calls("kubectl")] == ["wait", "wait"]


def test_deploy_reports_a_chief_that_never_gets_ready(fake_tools, chart):
    fake_tools.add("helm")
    fake_tools.add("kubectl", (["wait"], "", "error: timed out waiting for the condition on pods/tuner-chief-x\n", 1))

    result = runner.invoke(app, ["deploy", "--no-kind", "--chart", str(chart), "--timeout", "5"])

    assert result.exit_code == 1, result.output
    assert "the chief of 'tuner' is not Ready after 5 s" in result.output
    assert "timed out waiting for the condition" in result.output
    assert len(fake_tools.calls("kubectl")) == 1, "a real timeout is not retried"


def test_deploy_without_helm_is_one_line(fake_tools, chart):
    fake_tools.add("kubectl")

    result = runner.invoke(app, ["deploy", "--no-kind", "--chart", str(chart)])

    assert result.exit_code == 1, result.output
    assert result.output.strip() == "error: helm not found on PATH; run `tunectl doctor`"
    assert fake_tools.calls() == []


def test_deploy_shows_helms_last_error_line(fake_tools, chart):
    fake_tools.add("helm", (["upgrade"], "", "history\nError: INSTALLATION FAILED: values don't meet the specifications\n", 1))

    result = runner.invoke(app, ["deploy", "--no-kind", "--chart", str(chart)])

    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        "error: helm upgrade failed: Error: INSTALLATION FAILED: values don't meet the specifications"
    )


def test_deploy_rejects_a_set_without_equals(fake_tools, chart):
    fake_tools.add("helm")

    result = runner.invoke(app, ["deploy", "--no-kind", "--chart", str(chart), "--set", "worker.gpus"])

    assert result.exit_code == 1, result.output
    assert "--set takes key=value, but got 'worker.gpus'" in result.output
    assert fake_tools.calls() == []


def test_undeploy_uninstalls_and_keeps_the_volume(fake_tools):
    fake_tools.add("helm")

    result = runner.invoke(app, ["undeploy", "-r", "search", "-n", "tuning"])

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [["helm", "uninstall", "search", "--namespace", "tuning"]]
    assert "shared volume" in result.output and "kept" in result.output


def test_tensorboard_port_forwards_when_the_kind_mapping_is_silent(fake_tools, monkeypatch):
    monkeypatch.setattr(commands, "tensorboard_answers", lambda url: False)
    fake_tools.add("kubectl", (["get", "service"], "search-keras-tuner-cluster-tensorboard", "", 0))

    result = runner.invoke(app, ["tensorboard", "--release", "search", "--port", "16006"])

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        [
            "kubectl", "get", "service", "--namespace", "default",
            "--selector", "app.kubernetes.io/instance=search,app.kubernetes.io/component=tensorboard",
            "--output", "jsonpath={.items[*].metadata.name}",
        ],
        ["kubectl", "port-forward", "--namespace", "default", "svc/search-keras-tuner-cluster-tensorboard", "16006:6006"],
    ]  # fmt: skip
    assert "http://127.0.0.1:16006" in result.output


def test_tensorboard_on_kind_only_prints_the_url(fake_tools, monkeypatch):
    monkeypatch.setattr(commands, "tensorboard_answers", lambda url: url == "http://127.0.0.1:6006")

    result = runner.invoke(app, ["tensorboard"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "TensorBoard: http://127.0.0.1:6006"
    assert fake_tools.calls() == []


def _dataset(root: Path) -> Path:
    source = root / "toonvision"
    for label in ("a", "b"):
        (source / label).mkdir(parents=True)
        (source / label / "0.png").write_bytes(b"png")
    return source


def test_data_push_copies_into_the_kind_host_folder(fake_tools, tmp_path):
    source, shared = _dataset(tmp_path / "src"), tmp_path / "shared"
    shared.mkdir()

    result = runner.invoke(app, ["data", "push", str(source), "--shared-dir", str(shared), "--name", "toons"])

    assert result.exit_code == 0, result.output
    assert (shared / "data" / "toons" / "a" / "0.png").read_bytes() == b"png"
    assert (shared / "data" / "toons" / "b" / "0.png").is_file()
    assert fake_tools.calls() == []


def test_data_push_goes_through_a_helper_pod_without_the_host_folder(fake_tools, tmp_path):
    source = _dataset(tmp_path / "src")
    fake_tools.add("kubectl", (["get", "pvc"], "tuner-keras-tuner-cluster-shared", "", 0))

    result = runner.invoke(app, ["data", "push", str(source), "--shared-dir", str(tmp_path / "absent")])

    assert result.exit_code == 0, result.output
    calls = fake_tools.calls("kubectl")
    assert [c[1] for c in calls] == ["get", "run", "wait", "exec", "cp", "delete"]
    assert calls[0][-2:] == ["--output", "jsonpath={.items[*].metadata.name}"]
    assert '"claimName":"tuner-keras-tuner-cluster-shared"' in calls[1][-1]
    assert calls[4] == ["kubectl", "cp", "--namespace", "default", str(source), "tunectl-data-push:/shared/data/toonvision"]
    assert calls[5][:3] == ["kubectl", "delete", "pod"]
    assert "data: data/toonvision" in result.output


def test_data_push_deletes_the_helper_pod_when_the_copy_fails(fake_tools, tmp_path):
    source = _dataset(tmp_path / "src")
    fake_tools.add("kubectl", (["cp"], "", "error: tar not found in container\n", 1))

    result = runner.invoke(app, ["data", "push", str(source), "--via-pod", "--pvc", "vol"])

    assert result.exit_code == 1, result.output
    assert "error: kubectl cp failed: error: tar not found in container" in result.output
    assert [c[1] for c in fake_tools.calls("kubectl")] == ["run", "wait", "exec", "cp", "delete"]
