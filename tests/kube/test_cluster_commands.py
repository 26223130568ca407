"""up, down, images: the exact kind and docker calls, made against fake tools."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from cluster.cli import app
from cluster.kube import kind

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_up_creates_the_cluster_with_the_rendered_config(fake_tools, tmp_path, monkeypatch):
    fake_tools.add("kind", (["get", "clusters"], "other\n", "", 0))
    # Keep a copy of the config kind was given: tunectl deletes its temp file.
    seen = tmp_path / "seen-config.yaml"
    script = fake_tools.bin / "kind"
    script.write_text(
        script.read_text().replace(
            "for prefix",
            f"if '--config' in sys.argv:\n    import shutil\n"
            f"    shutil.copy(sys.argv[sys.argv.index('--config') + 1], {str(seen)!r})\nfor prefix",
        )
    )
    monkeypatch.chdir(tmp_path)

    result = invoke("up", "--name", "search")

    assert result.exit_code == 0, result.output
    calls = fake_tools.calls()
    assert calls[0] == ["kind", "get", "clusters"]
    assert calls[1][:5] == ["kind", "create", "cluster", "--name", "search"]
    assert calls[1][5] == "--config" and calls[1][6].endswith("kind-config.yaml")
    assert len(calls) == 2
    assert (tmp_path / "shared").is_dir(), "up makes the host folder so docker does not make it as root"
    config = yaml.safe_load(seen.read_text())
    assert [m["hostPath"] for node in config["nodes"] for m in node["extraMounts"]] == [str((tmp_path / "shared").resolve())] * 3


def test_up_skips_an_existing_cluster(fake_tools):
    fake_tools.add("kind", (["get", "clusters"], "tuner\n", "", 0))

    result = invoke("up")

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [["kind", "get", "clusters"]]
    assert "already exists" in result.output


def test_up_reports_a_failed_create_in_one_line(fake_tools, tmp_path):
    fake_tools.add(
        "kind",
        (["get", "clusters"], "", "", 0),
        (["create"], "", "Creating cluster ...\nERROR: failed to create cluster: port 6006 is taken\n", 1),
    )

    result = invoke("up", "--shared-dir", str(tmp_path / "vol"))

    assert result.exit_code == 1, result.output
    assert "error: kind create failed: ERROR: failed to create cluster: port 6006 is taken" in result.output


def test_down_deletes_the_named_cluster(fake_tools):
    fake_tools.add("kind", (["get", "clusters"], "tuner\nsearch\n", "", 0))

    result = invoke("down", "--name", "search")

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [["kind", "get", "clusters"], ["kind", "delete", "cluster", "--name", "search"]]


def test_down_without_a_cluster_does_nothing(fake_tools):
    fake_tools.add("kind")

    result = invoke("down")

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [["kind", "get", "clusters"]]


def test_missing_kind_is_one_line_pointing_at_doctor(fake_tools):
    result = invoke("up")

    assert result.exit_code == 1, result.output
    assert result.output.strip() == "error: kind not found on PATH; run `tunectl doctor`"


def test_images_builds_both_then_loads_both(fake_tools, tmp_path):
    fake_tools.add("kind", (["get", "clusters"], "tuner\n", "", 0))
    fake_tools.add("docker")
    for dockerfile in kind.IMAGES.values():
        (tmp_path / dockerfile).parent.mkdir(parents=True)
        (tmp_path / dockerfile).write_text("FROM scratch\n")

    result = invoke("images", "--tag", "t1", "--cluster", "tuner", "--context-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        ["kind", "get", "clusters"],
        [
            "docker", "build", "-t", "keras-tuner-cluster/tuner:t1", "--build-arg", "TF_FLAVOUR=gpu",
            "-f", f"{tmp_path}/images/tuner/Dockerfile", str(tmp_path),
        ],
        [
            "docker", "build", "-t", "keras-tuner-cluster/tensorboard:t1",
            "-f", f"{tmp_path}/images/tensorboard/Dockerfile", str(tmp_path),
        ],
        ["kind", "load", "docker-image", "keras-tuner-cluster/tuner:t1", "--name", "tuner"],
        ["kind", "load", "docker-image", "keras-tuner-cluster/tensorboard:t1", "--name", "tuner"],
    ]  # fmt: skip


def test_images_passes_the_base_the_flavour_and_the_network(fake_tools, tmp_path, monkeypatch):
    fake_tools.add("docker")
    for dockerfile in kind.IMAGES.values():
        (tmp_path / dockerfile).parent.mkdir(parents=True)
        (tmp_path / dockerfile).write_text("FROM scratch\n")
    monkeypatch.setenv("TUNECTL_BASE_IMAGE", "local/python-base:1")

    result = invoke("images", "--no-load", "--tag", "t2", "--tf-flavour", "cpu", "--network", "host", "--context-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        [
            "docker", "build", "-t", "keras-tuner-cluster/tuner:t2", "--build-arg", "TF_FLAVOUR=cpu",
            "--build-arg", "PYTHON_IMAGE=local/python-base:1", "--network", "host",
            "-f", f"{tmp_path}/images/tuner/Dockerfile", str(tmp_path),
        ],
        [
            "docker", "build", "-t", "keras-tuner-cluster/tensorboard:t2",
            "--build-arg", "PYTHON_IMAGE=local/python-base:1", "--network", "host",
            "-f", f"{tmp_path}/images/tensorboard/Dockerfile", str(tmp_path),
        ],
    ]  # fmt: skip
    assert "images: keras-tuner-cluster/tuner:t2, keras-tuner-cluster/tensorboard:t2" in result.output


def test_images_refuses_an_unknown_flavour_before_building(fake_tools, tmp_path):
    fake_tools.add("docker")

    result = invoke("images", "--no-load", "--tf-flavour", "rocm", "--context-dir", str(tmp_path))

    assert result.exit_code == 2, result.output
    assert "rocm" in result.output and fake_tools.calls() == []


def test_images_needs_the_cluster_before_building(fake_tools, tmp_path):
    fake_tools.add("kind")
    fake_tools.add("docker")

    result = invoke("images", "--cluster", "tuner", "--context-dir", str(tmp_path))

    assert result.exit_code == 2, result.output
    assert "no kind cluster named 'tuner'; run `tunectl up` first" in result.output
    assert fake_tools.calls("docker") == []


def test_images_on_a_context_that_is_not_kind_are_built_only(fake_tools, tmp_path):
    """`make deploy-search` on a real cluster: nothing to load into."""
    fake_tools.add("kubectl", (["config", "current-context"], "prod-gpus\n", "", 0))
    fake_tools.add("kind")
    fake_tools.add("docker")
    _dockerfiles(tmp_path)

    result = invoke("images", "--tag", "t1", "--context-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert [c[1] for c in fake_tools.calls("docker")] == ["build", "build"]
    assert [c for c in fake_tools.calls("kind") if c[1] == "load"] == []
    assert "not a kind cluster: built only" in result.output


def test_rendered_kind_config_mounts_the_host_folder_on_every_node(tmp_path):
    config = yaml.safe_load(kind.render_kind_config(tmp_path / "vol"))

    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    for node in config["nodes"]:
        assert {"hostPath": str((tmp_path / "vol").resolve()), "containerPath": "/shared"} in node["extraMounts"]
    control_plane = config["nodes"][0]
    assert control_plane["extraPortMappings"] == [
        {"containerPort": 30606, "hostPort": 6006, "listenAddress": "127.0.0.1", "protocol": "TCP"}
    ]


def test_rendered_gpu_config_adds_the_nvkind_device_mount(tmp_path):
    config = yaml.safe_load(kind.render_kind_config(tmp_path, gpu=True))

    workers = [node for node in config["nodes"] if node["role"] == "worker"]
    assert workers
    for node in workers:
        assert {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"} in node["extraMounts"]
        assert {"hostPath": str(tmp_path.resolve()), "containerPath": "/shared"} in node["extraMounts"]


def test_a_custom_config_that_is_not_kind_is_refused(fake_tools, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\n")

    result = invoke("up", "--config", str(bad))

    assert result.exit_code == 2, result.output
    assert "is not a kind config" in result.output
    assert fake_tools.calls() == []


def test_the_cli_loads_neither_kubernetes_nor_tensorflow():
    import subprocess
    import sys

    probe = "import sys, cluster.cli; print(sorted(m for m in ('kubernetes', 'tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO).stdout

    assert out.strip() == "[]"


DIGEST_ERROR = (
    'ERROR: failed to load image: command "docker exec --privileged -i tuner-control-plane ctr --namespace=k8s.io '
    'images import --all-platforms --digests --snapshotter=overlayfs -" failed with error: exit status 1\n'
    "Command Output: ctr: content digest sha256:82014a3cbf22d2e03382cd9b123f4151d956986e727340a466406a206408b7a2: not found\n"
    "Stack Trace: \nsigs.k8s.io/kind/pkg/errors.WithStack\n        sigs.k8s.io/kind/pkg/errors/errors.go:59\n"
)


def _dockerfiles(root: Path) -> None:
    for dockerfile in kind.IMAGES.values():
        (root / dockerfile).parent.mkdir(parents=True, exist_ok=True)
        (root / dockerfile).write_text("FROM scratch\n")


def test_images_fall_back_to_an_archive_on_dockers_containerd_store(fake_tools, tmp_path):
    """kubernetes-sigs/kind#3795: `kind load docker-image` cannot read the containerd image store."""
    fake_tools.add(
        "kind",
        (["get", "clusters"], "tuner\n", "", 0),
        (["load", "docker-image"], "", DIGEST_ERROR, 1),
    )
    fake_tools.add("docker", (["version"], "linux/arm64\n", "", 0))
    _dockerfiles(tmp_path)

    result = invoke("images", "--tag", "t1", "--cluster", "tuner", "--context-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    calls = fake_tools.calls()
    loads = calls[3:]
    assert loads[0] == ["kind", "load", "docker-image", "keras-tuner-cluster/tuner:t1", "--name", "tuner"]
    assert loads[1] == ["docker", "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"]
    save = loads[2]
    assert save[:6] == ["docker", "image", "save", "--platform", "linux/arm64", "--output"]
    assert save[7] == "keras-tuner-cluster/tuner:t1" and save[6].endswith("image.tar")
    assert loads[3] == ["kind", "load", "image-archive", save[6], "--name", "tuner"]
    assert [c[1:3] for c in loads[4:]] == [["load", "docker-image"], ["version", "--format"], ["image", "save"], ["load", "image-archive"]]
    assert "containerd image store" in result.output and "linux/arm64 image archive" in result.output


def test_images_report_any_other_load_failure_in_one_line(fake_tools, tmp_path):
    fake_tools.add(
        "kind",
        (["get", "clusters"], "tuner\n", "", 0),
        (["load", "docker-image"], "", "ERROR: image: \"keras-tuner-cluster/tuner:t1\" not present locally\n", 1),
    )
    fake_tools.add("docker")
    _dockerfiles(tmp_path)

    result = invoke("images", "--tag", "t1", "--cluster", "tuner", "--context-dir", str(tmp_path))

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == 'error: kind load failed: ERROR: image: "keras-tuner-cluster/tuner:t1" not present locally'
    assert not [c for c in fake_tools.calls("docker") if c[1] in ("image", "version")], "no fallback for other errors"


def test_images_go_to_the_kind_cluster_of_the_current_context(fake_tools, tmp_path):
    """Deploy goes to the current context: the images must go to the same cluster, not to `tuner`."""
    fake_tools.add("kubectl", (["config", "current-context"], "kind-search\n", "", 0))
    fake_tools.add("kind", (["get", "clusters"], "search\ntuner\n", "", 0))
    fake_tools.add("docker")
    _dockerfiles(tmp_path)

    result = invoke("images", "--tag", "t1", "--context-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    loads = [c for c in fake_tools.calls("kind") if c[1] == "load"]
    assert {tuple(c[-2:]) for c in loads} == {("--name", "search")}
    assert "loaded into kind cluster 'search'" in result.output


def test_up_prints_the_config_for_nvkind_without_creating_anything(fake_tools, tmp_path):
    result = invoke("up", "--gpu", "--print-config", "--shared-dir", str(tmp_path / "vol"))

    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert config["kind"] == "Cluster"
    worker = next(node for node in config["nodes"] if node["role"] == "worker")
    assert {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"} in worker["extraMounts"]
    assert fake_tools.calls() == []
