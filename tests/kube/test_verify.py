"""`tunectl verify` (`make verify-cluster`): the checks a user runs on their own cluster before a deploy.

The values are rendered by the real helm from the real chart; the cluster is
the fake API server; kubectl (the probe's apply and delete) is recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app

from .kube_objects import claim, node, pod, runtime_class, storage_class, warning

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "keras-tuner-cluster"
PROBE_CLAIM = "tunectl-verify-claim"


@pytest.fixture
def real_helm(fake_tools) -> None:
    helm = REPO / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not installed (make tools)")
    (fake_tools.bin / "helm").symlink_to(helm)
    fake_tools.add("kubectl")


def verify(*args: str):
    result = runner.invoke(app, ["verify", "--chart", str(CHART), "--context", "prod-gpus", *args], terminal_width=240)
    rows = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[1] in ("ok", "warning", "FAIL"):
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    return result, rows


def probe_finished(fake_api, phase: str = "Succeeded", log: str = "data: no\n") -> None:
    fake_api.add(pod("probe", name="tunectl-verify", phase=phase))
    fake_api.replace("Pod", {**pod("probe", name="tunectl-verify", phase=phase),
                             "metadata": {"name": "tunectl-verify", "namespace": "default",
                                          "labels": {"app.kubernetes.io/name": "tunectl-verify"}}})  # fmt: skip
    fake_api.set_log("default", "tunectl-verify", log)


def test_a_ready_cluster_passes_and_the_probe_is_cleaned_up(fake_api, fake_tools, real_helm):
    fake_api.add(storage_class("nfs-client"), node("gpu-1", gpus=2), node("gpu-2", gpus=2), claim(PROBE_CLAIM, storage_class="nfs-client"))
    probe_finished(fake_api)

    result, rows = verify("--set", "storage.storageClassName=nfs-client")

    assert result.exit_code == 0, result.output
    assert rows["storage"][0] == "ok" and "uid 1000 writes to it" in rows["storage"][1], result.output
    assert rows["GPUs"] == ("ok", "4 GPUs offered, 2 wanted", "")
    assert rows["runtime class"][0] == "ok"
    apply, delete = fake_tools.calls("kubectl")
    assert apply == ["kubectl", "apply", "-f", "-", "--namespace", "default", "--context", "prod-gpus"]
    manifest = list(yaml.safe_load_all(fake_tools.stdins()[0]))
    probe_claim, probe_pod = manifest
    assert probe_claim["spec"]["storageClassName"] == "nfs-client" and probe_claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert probe_claim["spec"]["resources"] == {"requests": {"storage": "1Mi"}}
    assert probe_pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert delete[:5] == ["kubectl", "delete", "pod,pvc", "--selector", "app.kubernetes.io/name=tunectl-verify"]
    assert "ready for `tunectl deploy`" in result.output


def test_an_rwo_only_class_fails_with_its_provisioning_event(fake_api, fake_tools, real_helm):
    fake_api.add(storage_class("standard-rwo", "pd.csi.storage.gke.io"), node("n", gpus=1),
                 claim(PROBE_CLAIM, phase="Pending", storage_class="standard-rwo"),
                 warning("PersistentVolumeClaim", PROBE_CLAIM, "ProvisioningFailed",
                         "VolumeCapabilities is invalid: specified multi writer"))  # fmt: skip

    result, rows = verify("--set", "storage.storageClassName=standard-rwo")

    assert result.exit_code == 1, result.output
    status, found, fix = rows["storage"]
    assert status == "FAIL" and found.startswith(f"PVC {PROBE_CLAIM} is Pending (standard-rwo, ReadWriteMany): ProvisioningFailed")
    assert "error: this cluster is not ready: storage" in result.output
    assert fake_tools.calls("kubectl")[-1][1] == "delete"


def test_a_storage_class_that_does_not_exist_is_named(fake_api, fake_tools, real_helm):
    fake_api.add(storage_class("standard"), node("n", gpus=1))

    result, rows = verify("--set", "storage.storageClassName=nfs-client")

    assert result.exit_code == 1
    assert rows["storage"][:2] == ("FAIL", "storage class 'nfs-client' does not exist (classes: standard)")
    assert fake_tools.calls("kubectl") == [], "no probe for a class that is not there"


def test_a_volume_the_charts_user_cannot_write_fails_with_the_fix(fake_api, fake_tools, real_helm):
    fake_api.add(storage_class("nfs-client"), node("n", gpus=2), claim(PROBE_CLAIM, storage_class="nfs-client"))
    probe_finished(fake_api, phase="Failed", log="mkdir: can't create directory 'runs': Permission denied\n")

    result, rows = verify("--set", "storage.storageClassName=nfs-client")

    assert result.exit_code == 1
    assert rows["storage"][0] == "FAIL" and "Permission denied" in rows["storage"][1]
    assert rows["storage"][2] == "storage.fixOwnership=true"


def test_gpus_nobody_offers_and_a_runtime_class_that_is_missing_fail(fake_api, fake_tools, real_helm):
    fake_api.add(storage_class("nfs-client"), node("cpu-only"))

    result, rows = verify("--no-probe", "--set", "storage.storageClassName=nfs-client", "--set", "worker.runtimeClassName=nvidia")

    assert result.exit_code == 1
    assert rows["GPUs"] == ("FAIL", "no node offers nvidia.com/gpu", "install the NVIDIA device plugin or GPU operator")
    assert rows["runtime class"][:2] == ("FAIL", "RuntimeClass 'nvidia' does not exist (classes: none)")


def test_a_runtime_class_the_workers_do_not_name_is_a_warning(fake_api, fake_tools, real_helm):
    fake_api.add(storage_class("nfs-client"), node("n", gpus=1), runtime_class("nvidia"))

    result, rows = verify("--no-probe", "--set", "storage.storageClassName=nfs-client")

    assert result.exit_code == 0, result.output
    assert rows["GPUs"] == ("warning", "1 GPUs for 2 wanted: some workers wait for one", "")
    expected = ("warning", "workers name no RuntimeClass; RuntimeClass nvidia exists here", "--set worker.runtimeClassName=nvidia")
    assert rows["runtime class"] == expected


def test_an_existing_claim_is_probed_for_writes_and_the_dataset(fake_api, fake_tools, real_helm):
    fake_api.add(claim("mine", storage_class="nfs-client"))
    probe_finished(fake_api, log="data: yes\n")

    result, rows = verify("--set", "storage.existingClaim=mine", "--set", "worker.gpus=0")

    assert result.exit_code == 0, result.output
    assert rows["data"] == ("ok", "data/toonvision is on the volume", "")
    (probe_pod,) = yaml.safe_load_all(fake_tools.stdins()[0])
    assert probe_pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "mine"


def test_a_missing_existing_claim_fails(fake_api, fake_tools, real_helm):
    result, rows = verify("--set", "storage.existingClaim=mine", "--set", "worker.gpus=0")

    assert result.exit_code == 1
    assert rows["storage"][:2] == ("FAIL", "claim 'mine' (storage.existingClaim) does not exist in 'default'")


def test_on_kind_the_mount_the_dataset_and_the_images_are_checked(fake_api, fake_tools, real_helm, tmp_path):
    mounted = tmp_path / "m"
    fake_tools.add("kind", (["get", "clusters"], "tuner\n", "", 0), (["get", "nodes"], "tuner-control-plane\n", "", 0))
    fake_tools.add("docker", (["inspect"], f"/tuner-control-plane|/shared={mounted};\n", "", 0), (["exec"], '{"images": []}', "", 0))

    result = runner.invoke(app, ["verify", "--chart", str(CHART), "--set", "worker.gpus=1"], terminal_width=240)
    rows = {cells[0]: cells[1:] for line in result.output.splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 4 and cells[0]}  # fmt: skip

    assert result.exit_code == 1, result.output
    assert rows["storage"][:2] == ["ok", f"every node of kind cluster 'tuner' mounts {mounted} at /shared"]
    assert rows["data"] == ["warning", f"{mounted / 'data' / 'toonvision'} does not exist yet", "`tunectl data push DIR --name toonvision`"]
    assert rows["images"][0] == "FAIL" and rows["images"][2] == "`tunectl images --cluster tuner`"
    assert rows["runtime class"][:2] == ["FAIL", "workers name no RuntimeClass; on kind the NVIDIA runtime is not containerd's default"]
