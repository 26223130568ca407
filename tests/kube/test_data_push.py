"""`tunectl data push`: the layout is checked before anything is copied, `.cache/` stays behind, the
dataset appears whole, and on a PVC the helper pod runs as the chart's user."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from typer.testing import CliRunner

from cluster.cli import app

from .kube_objects import helm_release, job

runner = CliRunner()
POD_NS = ["--namespace", "default", "--context", "prod-gpus"]


def dataset(root: Path, classes: tuple[str, ...] = ("a", "b")) -> Path:
    source = root / "toonvision"
    for label in classes:
        (source / label).mkdir(parents=True)
        (source / label / "0.png").write_bytes(b"png")
        (source / label / "1.jpg").write_bytes(b"jpg")
    # What the chief leaves next to a dataset it decoded, and a stray file: neither is copied.
    (source / ".cache" / "k1").mkdir(parents=True)
    (source / ".cache" / "k1" / "x.npy").write_bytes(b"cache")
    (source / "a" / "notes.txt").write_text("not an image")
    return source


def test_an_empty_folder_is_refused_before_anything_is_copied(fake_tools, tmp_path):
    (tmp_path / "empty").mkdir()

    result = runner.invoke(app, ["data", "push", str(tmp_path / "empty")])

    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'empty'} is not a dataset of <class>/*.png|jpg with 2 classes or more: it holds nothing")
    assert fake_tools.calls() == []


def test_the_wrong_level_is_refused_with_the_folder_it_meant(fake_tools, tmp_path):
    dataset(tmp_path / "demo" / "data")

    result = runner.invoke(app, ["data", "push", str(tmp_path / "demo" / "data"), "--shared-dir", str(tmp_path / "shared")])

    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'demo' / 'data'} is not a dataset of <class>/*.png|jpg with 2 classes or more: "
                           "it holds 1 folder (toonvision/) and 0 images")  # fmt: skip
    assert line.endswith(f"did you mean {tmp_path / 'demo' / 'data' / 'toonvision'} (2 classes, 4 images)?")
    assert not (tmp_path / "shared").exists()


def test_a_class_without_images_is_refused(fake_tools, tmp_path):
    source = dataset(tmp_path)
    (source / "c").mkdir()

    result = runner.invoke(app, ["data", "push", str(source), "--shared-dir", str(tmp_path / "shared")])

    assert result.exit_code == 2, result.output
    assert f"class folder {source / 'c'} holds no images" in result.output


def test_a_copy_into_a_folder_takes_only_the_images_and_appears_whole(fake_tools, tmp_path):
    source, shared = dataset(tmp_path / "src"), tmp_path / "shared"

    result = runner.invoke(app, ["data", "push", str(source), "--shared-dir", str(shared), "--name", "toons"])

    assert result.exit_code == 0, result.output
    target = shared / "data" / "toons"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == ["a/0.png", "a/1.jpg", "b/0.png", "b/1.jpg"]
    assert [p.name for p in (shared / "data").iterdir()] == ["toons"], "no staging folder left behind"
    assert "copied 4 images in 2 classes" in result.output and "data: data/toons" in result.output
    assert fake_tools.calls() == []

    (source / "b" / "2.png").write_bytes(b"png")
    result = runner.invoke(app, ["data", "push", str(source), "--shared-dir", str(shared), "--name", "toons"])
    assert result.exit_code == 0, result.output
    assert (target / "b" / "2.png").is_file(), "a second push merges into the dataset"


def test_on_kind_the_copy_goes_to_the_folder_the_nodes_mount(fake_api, fake_tools, tmp_path):
    source, mounted = dataset(tmp_path / "src"), tmp_path / "mounted"
    fake_tools.add("kind", (["get", "clusters"], "tuner\n", "", 0), (["get", "nodes"], "tuner-control-plane\n", "", 0))
    fake_tools.add("docker", (["inspect"], f"/tuner-control-plane|/shared={mounted};\n", "", 0))

    result = runner.invoke(app, ["data", "push", str(source)])

    assert result.exit_code == 0, result.output
    assert (mounted / "data" / "toonvision" / "a" / "0.png").is_file()
    assert "(/shared on kind cluster 'tuner')" in result.output
    assert fake_tools.calls("kubectl") == []


def test_through_a_helper_pod_as_the_charts_user(fake_api, fake_tools, tmp_path):
    source = dataset(tmp_path / "src")
    fake_api.add(helm_release(), job("chief", claim="search-volume", uid=2000, fs_group=3000))
    fake_tools.add("kubectl", (["exec", "tunectl-data-push", *POD_NS, "--", "sh", "-c"], "new\n", "", 0))

    result = runner.invoke(app, ["data", "push", str(source), "--context", "prod-gpus"])

    assert result.exit_code == 0, result.output
    calls = fake_tools.calls("kubectl")
    assert [c[1] for c in calls] == ["run", "wait", "exec", "exec", "exec", "delete"]
    spec = json.loads(calls[0][-1].removeprefix("--overrides="))["spec"]
    assert spec["securityContext"]["runAsUser"] == 2000 and spec["securityContext"]["fsGroup"] == 3000
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert spec["volumes"] == [{"name": "shared", "persistentVolumeClaim": {"claimName": "search-volume"}}]
    prepare = calls[2]
    assert prepare[:len(POD_NS) + 5] == ["kubectl", "exec", "tunectl-data-push", *POD_NS, "--", "sh"]
    assert "mkdir -p /shared/data /shared/runs" in prepare[-3] and "chmod g+rwxs" in prepare[-3] and prepare[-1] == "toonvision"
    assert calls[3] == ["kubectl", "exec", "-i", "tunectl-data-push", *POD_NS, "--", "tar", "xf", "-", "-C", "/shared/data/.toonvision.partial"]
    (stream,) = fake_tools.stdins()
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        assert sorted(archive.getnames()) == ["a/0.png", "a/1.jpg", "b/0.png", "b/1.jpg"]
    assert 'mv ".$1.partial" "$1"' in calls[4][-3], "published whole, by a rename"
    assert calls[5][:4] == ["kubectl", "delete", "pod", "tunectl-data-push"]
    assert "copied 4 images in 2 classes to /shared/data/toonvision on PVC 'search-volume'" in result.output


def test_a_volume_the_charts_user_may_not_write_is_one_line_with_the_fix(fake_api, fake_tools, tmp_path):
    source = dataset(tmp_path / "src")
    fake_api.add(helm_release(), job("chief"))
    fake_tools.add("kubectl", (["exec", "tunectl-data-push"], "not writable: /shared\n", "", 13))

    result = runner.invoke(app, ["data", "push", str(source), "--context", "prod-gpus"])

    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: PVC 'tuner-keras-tuner-cluster-shared' is not writable by uid 1000 gid 1000, the chart's user "
        "(not writable: /shared): its root belongs to another user and the kubelet did not apply fsGroup; deploy with "
        "`--set storage.fixOwnership=true` (an init container gives it to that user), then push again"
    )
    assert [c[1] for c in fake_tools.calls("kubectl")] == ["run", "wait", "exec", "delete"]


def test_a_named_pvc_needs_no_release(fake_api, fake_tools, tmp_path):
    source = dataset(tmp_path / "src")
    fake_tools.add("kubectl")

    result = runner.invoke(app, ["data", "push", str(source), "--via-pod", "--pvc", "vol", "--context", "prod-gpus"])

    assert result.exit_code == 0, result.output
    assert '"claimName":"vol"' in fake_tools.calls("kubectl")[0][-1]


def test_without_a_release_or_pvc_the_next_step_is_named(fake_api, fake_tools, tmp_path):
    source = dataset(tmp_path / "src")

    result = runner.invoke(app, ["data", "push", str(source), "--context", "prod-gpus"])

    assert result.exit_code == 1, result.output
    assert "no release 'tuner' in namespace 'default' of context 'prod-gpus'; `tunectl deploy` installs it" in result.output
    assert fake_tools.calls("kubectl") == []


def test_the_helper_pod_is_deleted_when_the_copy_fails(fake_api, fake_tools, tmp_path):
    source = dataset(tmp_path / "src")
    fake_tools.add("kubectl", (["exec", "-i"], "", "error: tar: can't open '.toonvision.partial': No space left on device\n", 1))

    result = runner.invoke(app, ["data", "push", str(source), "--via-pod", "--pvc", "vol", "--context", "prod-gpus"])

    assert result.exit_code == 1, result.output
    assert "error: kubectl exec failed: error: tar: can't open '.toonvision.partial': No space left on device" in result.output
    assert [c[1] for c in fake_tools.calls("kubectl")] == ["run", "wait", "exec", "exec", "delete"]


def test_images_in_a_class_subfolder_keep_their_place_and_hidden_files_stay_behind(fake_tools, tmp_path):
    # Keras lists a class's subfolders too, so the chief does; two files of one name in two subfolders both arrive.
    source, shared = dataset(tmp_path / "src"), tmp_path / "shared"
    for sub in ("x", "y"):
        (source / "a" / sub).mkdir()
        (source / "a" / sub / "0.png").write_bytes(b"png " + sub.encode())
    (source / "b" / "._0.png").write_bytes(b"macOS resource fork")

    result = runner.invoke(app, ["data", "push", str(source), "--shared-dir", str(shared), "--name", "toons"])

    assert result.exit_code == 0, result.output
    target = shared / "data" / "toons"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "a/0.png", "a/1.jpg", "a/x/0.png", "a/y/0.png", "b/0.png", "b/1.jpg"
    ]
    assert (target / "a" / "y" / "0.png").read_bytes() == b"png y"
