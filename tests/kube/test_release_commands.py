"""deploy, undeploy, status, tensorboard: the pre-flight, then the exact helm and kubectl calls, and what the
cluster says read through the real `kubernetes` client from a fake API server.

helm is a recording fake whose `template` answers what the real helm renders
from the real chart (so the checks read real objects); `upgrade`,
`uninstall` and kubectl are only recorded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from helpers import free_port

from .fake_api import write_kubeconfig
from .kube_objects import claim, helm_release, job, pod, service, warning

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "keras-tuner-cluster"
PVC = "tuner-keras-tuner-cluster-shared"


def real_render(*values: Path) -> str:
    helm = REPO / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not installed (make tools)")
    args = [str(helm), "template", "tuner", str(CHART), "--namespace", "default"]
    for path in values:
        args += ["--values", str(path)]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def rendered() -> str:
    return real_render(CHART / "ci" / "default-values.yaml")


@pytest.fixture(scope="module")
def rendered_kind() -> str:
    return real_render(CHART / "ci" / "kind-values.yaml")


def helm_fake(fake_tools, rendered: str, *extra) -> None:
    fake_tools.add("helm", (["template"], rendered, "", 0), *extra)


def prod(*args: str) -> list[str]:
    """A deploy to the non-kind context of the fake kubeconfig."""
    return ["deploy", "--chart", str(CHART), "--context", "prod-gpus", *args]


def running_search(fake_api, chief_ready: bool = True) -> None:
    fake_api.add(job("chief"), job("worker"), claim(), pod("chief", ready=chief_ready))


def test_deploy_renders_installs_and_waits_for_the_chief(fake_api, fake_tools, rendered, tmp_path):
    helm_fake(fake_tools, rendered, (["upgrade"], 'Release "tuner" has been upgraded.\nNOTES:\nSearch is on.\n', "", 0))
    running_search(fake_api)
    mine = tmp_path / "mine.yaml"
    mine.write_text("storage: {storageClassName: nfs-client}\n")

    result = runner.invoke(app, prod("--values", str(mine), "--set", "workers=4", "--namespace", "default", "--timeout", "30"))

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        ["helm", "template", "tuner", str(CHART), "--namespace", "default", "--values", str(mine), "--set", "workers=4"],
        [
            "helm", "upgrade", "--install", "tuner", str(CHART), "--namespace", "default", "--create-namespace",
            "--values", str(mine), "--set", "workers=4", "--kube-context", "prod-gpus",
        ],
    ]  # fmt: skip
    assert "/apis/batch/v1/namespaces/default/jobs" in fake_api.paths()
    assert "Search is on." in result.output, "Helm's NOTES are passed on"
    assert "tunectl logs --chief -f --context prod-gpus" in result.output


def test_deploy_without_wait_returns_after_helm(fake_api, fake_tools, rendered):
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod("--no-wait"))

    assert result.exit_code == 0, result.output
    assert [c[1] for c in fake_tools.calls()] == ["template", "upgrade"]
    assert not [p for p in fake_api.paths() if p.endswith("/pods")]


def test_deploy_explains_what_the_schema_refuses_in_one_line(fake_api, fake_tools):
    """Real helm, real chart: the defaults leave the storage class open."""
    helm = REPO / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not installed (make tools)")
    (fake_tools.bin / "helm").symlink_to(helm)

    result = runner.invoke(app, prod("--set", "worker.gpus=2"))

    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the chart refuses these values: ")
    assert "storage.storageClassName: String length must be greater than or equal to 1 (required when the chart creates the PVC" in line
    assert "name a class that offers ReadWriteMany" in line
    assert "worker.gpus: Must be less than or equal to 1 (a trial trains on one GPU" in line
    assert "as \"if\" was valid" not in line


def test_deploy_refuses_an_existing_release_and_says_what_to_do(fake_api, fake_tools, rendered):
    fake_api.add(helm_release(revision=2))
    running_search(fake_api)
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod())

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: release 'tuner' already exists in namespace 'default' (deployed, revision 2); its Jobs cannot change "
        "in place (helm upgrade fails with `spec.template: field is immutable`): `tunectl deploy --replace` removes it "
        "and installs it again, keeping the shared volume and its runs, or `tunectl undeploy` first"
    )
    assert [c[1] for c in fake_tools.calls()] == ["template"], "nothing is changed"


def test_deploy_over_a_completed_search_says_it_is_complete(fake_api, fake_tools, rendered):
    fake_api.add(helm_release(), job("chief", complete=True), job("worker", complete=True))
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod())

    assert result.exit_code == 1, result.output
    assert "already exists in namespace 'default' (its search is complete: `tunectl status` shows the results)" in result.output
    assert "`tunectl deploy --replace`" in result.output


def test_deploy_replace_removes_the_release_then_installs(fake_api, fake_tools, rendered):
    fake_api.add(helm_release(revision=5), job("chief", complete=True))
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod("--replace", "--no-wait"))

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        ["helm", "template", "tuner", str(CHART), "--namespace", "default"],
        ["helm", "uninstall", "tuner", "--namespace", "default", "--kube-context", "prod-gpus",
         "--wait", "--cascade", "foreground", "--timeout", "300s"],
        ["helm", "upgrade", "--install", "tuner", str(CHART), "--namespace", "default", "--create-namespace",
         "--kube-context", "prod-gpus"],
    ]  # fmt: skip
    assert "--replace: removing release 'tuner' (its search is complete)" in result.output


def test_deploy_treats_a_chief_that_already_finished_as_done(fake_api, fake_tools, rendered):
    fake_api.add(job("chief"), claim(), pod("chief", phase="Succeeded"))
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod("--timeout", "600"))

    assert result.exit_code == 0, result.output
    assert "the chief has already finished: the search is complete" in result.output


def test_deploy_reports_a_pending_volume_with_its_events_in_one_line(fake_api, fake_tools, rendered):
    fake_api.add(job("chief"), claim(phase="Pending"), pod("chief", phase="Pending", unschedulable="0/3 nodes: unbound PVC"))
    fake_api.add(warning("PersistentVolumeClaim", PVC, "ProvisioningFailed",
                         "failed to provision volume with StorageClass \"standard-rwo\": rpc error: code = InvalidArgument\n"
                         "desc = VolumeCapabilities is invalid: specified multi writer with mount access type"))  # fmt: skip
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod("--timeout", "600"))

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: PVC {PVC} is Pending (standard-rwo, ReadWriteMany): ProvisioningFailed: failed to provision volume with "
        'StorageClass "standard-rwo": rpc error: code = InvalidArgument desc = VolumeCapabilities is invalid: specified '
        "multi writer with mount access type; set storage.storageClassName to a class that offers ReadWriteMany "
        "(`kubectl get storageclass`; `tunectl verify` tries it)"
    )
    events = [q for m, p, q in fake_api.requests if p.endswith("/events")]
    assert events == [{"fieldSelector": [f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={PVC}"]}]


def test_status_reports_a_pending_volume_with_its_events(fake_api, fake_tools):
    fake_api.add(helm_release(), job("chief"), claim(phase="Pending"), pod("chief", phase="Pending"))
    reason = "invalid AccessModes [ReadWriteMany]: only AccessModes [ReadWriteOnce] are supported"
    fake_api.add(warning("PersistentVolumeClaim", PVC, "ProvisioningFailed", reason))

    result = runner.invoke(app, ["status", "--context", "prod-gpus"], terminal_width=200)

    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(f"PVC {PVC}"))
    assert line.startswith(f"PVC {PVC} is Pending (standard-rwo, ReadWriteMany): ProvisioningFailed: invalid AccessModes")


def test_deploy_says_the_chief_waits_for_its_dataset(fake_api, fake_tools, rendered):
    fake_api.add(job("chief"), claim(), pod("chief", ready=False))
    fake_api.set_log("default", "tuner-keras-tuner-cluster-chief-abcde",
                     "12:00:01 chief INFO waiting for the dataset at /shared/data/toonvision (up to 1800 s, data_wait_seconds)\n")  # fmt: skip
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod())

    assert result.exit_code == 0, result.output
    assert "the chief is up and waits for data/toonvision on the shared volume: `tunectl data push DIR --name toonvision`" in result.output


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (dict(waiting="ErrImagePull", message="pull access denied for keras-tuner-cluster/tuner"),
         "error: the chief's container cannot start: ErrImagePull: pull access denied for keras-tuner-cluster/tuner "
         "(on kind: `tunectl images`; elsewhere check image.repository, image.tag and image.pullSecrets)"),
        (dict(waiting="CrashLoopBackOff", last_exit=70), "error: the chief keeps crashing (exit 70): see `tunectl logs --chief`"),
    ],
)  # fmt: skip
def test_deploy_reports_a_chief_that_cannot_start(fake_api, fake_tools, rendered, state, expected):
    fake_api.add(job("chief"), claim(), pod("chief", **state))
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod())

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == expected


def test_deploy_times_out_with_the_last_reason(fake_api, fake_tools, rendered):
    fake_api.add(job("chief"), claim(), pod("chief", phase="Pending", unschedulable="0/3 nodes are available: 3 Insufficient cpu."))
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, prod("--timeout", "1"))

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: the chief of 'tuner' is not Ready after 1 s (the chief pod cannot be scheduled: 0/3 nodes are available: "
        "3 Insufficient cpu.); see `tunectl status` and `tunectl logs --chief`"
    )


def test_deploy_rejects_a_set_without_equals(fake_api, fake_tools):
    fake_tools.add("helm")

    result = runner.invoke(app, prod("--set", "worker.gpus"))

    assert result.exit_code == 2, result.output
    assert "--set takes key=value, but got 'worker.gpus'" in result.output
    assert fake_tools.calls() == []


# --- kind: the context's cluster, its /shared mount, its images -----------------------

MOUNTS = "/tuner-control-plane|/shared={folder};/lib/modules=/lib/modules;\n/tuner-worker|/shared={folder};\n"
IMAGES = (
    '{"images": [{"repoTags": ["docker.io/keras-tuner-cluster/tuner:0.1.0"]}, '
    '{"repoTags": ["docker.io/keras-tuner-cluster/tensorboard:0.1.0"]}]}'
)


def kind_fakes(fake_tools, folder: Path, mounts: str = MOUNTS, images: str = IMAGES, clusters: str = "tuner\n") -> None:
    fake_tools.add(
        "kind",
        (["get", "clusters"], clusters, "", 0),
        (["get", "nodes", "--name", "tuner"], "tuner-control-plane\ntuner-worker\n", "", 0),
    )
    fake_tools.add("docker", (["inspect"], mounts.format(folder=folder), "", 0), (["exec"], images, "", 0))


def test_deploy_on_kind_checks_the_mount_and_images_then_layers_the_kind_values(fake_api, fake_tools, rendered_kind, tmp_path):
    kind_fakes(fake_tools, tmp_path / "shared")
    helm_fake(fake_tools, rendered_kind)
    mine = tmp_path / "mine.yaml"
    mine.write_text("workers: 3\n")

    result = runner.invoke(app, ["deploy", "--chart", str(CHART), "--no-wait", "--values", str(mine)])

    assert result.exit_code == 0, result.output
    calls = fake_tools.calls()
    assert calls[0] == ["kind", "get", "clusters"]
    template = calls[1]
    assert template[template.index("--values"):] == ["--values", str(CHART / "ci" / "kind-values.yaml"), "--values", str(mine)]
    assert ["kind", "get", "nodes", "--name", "tuner"] in calls
    inspect = next(c for c in calls if c[:2] == ["docker", "inspect"])
    assert inspect[-2:] == ["tuner-control-plane", "tuner-worker"]
    assert ["docker", "exec", "tuner-worker", "crictl", "images", "-o", "json"] in calls
    assert calls[-1][:3] == ["helm", "upgrade", "--install"] and calls[-1][-2:] == ["--kube-context", "kind-tuner"]
    assert f"every node mounts {tmp_path / 'shared'} at /shared" in result.output


def test_deploy_on_kind_refuses_a_cluster_without_the_images(fake_api, fake_tools, rendered_kind, tmp_path, monkeypatch):
    """The images went to cluster `tuner`; the current context points at kind cluster `other`."""
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", {"kind-other": fake_api.url}, "kind-other")))
    fake_tools.add("kind", (["get", "clusters"], "other\ntuner\n", "", 0), (["get", "nodes"], "other-control-plane\n", "", 0))
    fake_tools.add("docker", (["inspect"], f"/other-control-plane|/shared={tmp_path};\n", "", 0), (["exec"], '{"images": []}', "", 0))
    helm_fake(fake_tools, rendered_kind)

    result = runner.invoke(app, ["deploy", "--chart", str(CHART)])

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: images keras-tuner-cluster/tensorboard:0.1.0, keras-tuner-cluster/tuner:0.1.0 not in kind cluster 'other' "
        "(missing on other-control-plane), the cluster this context deploys to: `tunectl images --cluster other` builds "
        "and loads them"
    )
    assert not [c for c in fake_tools.calls("helm") if c[1] == "upgrade"]


def test_deploy_on_kind_refuses_nodes_without_the_shared_mount(fake_api, fake_tools, rendered_kind, tmp_path):
    kind_fakes(fake_tools, tmp_path, mounts="/tuner-control-plane|/shared={folder};\n/tuner-worker|/lib/modules=/lib/modules;\n")
    helm_fake(fake_tools, rendered_kind)

    result = runner.invoke(app, ["deploy", "--chart", str(CHART)])

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: kind cluster 'tuner' has no /shared mount on tuner-worker (it was not made by `tunectl up`), so the pods "
        "would each get an empty folder of their node; recreate it: `tunectl down --name tuner && tunectl up --name tuner`"
    )


def test_a_kind_named_context_without_such_a_kind_cluster_is_not_kind(fake_api, fake_tools, rendered):
    fake_tools.add("kind", (["get", "clusters"], "something-else\n", "", 0))
    helm_fake(fake_tools, rendered)

    result = runner.invoke(app, ["deploy", "--chart", str(CHART), "--no-wait"])

    assert result.exit_code == 0, result.output
    assert "--values" not in fake_tools.calls("helm")[0], "no kind preset"
    assert not fake_tools.calls("docker")


# --- undeploy, tensorboard -------------------------------------------------------------


def test_undeploy_uninstalls_and_keeps_the_volume(fake_api, fake_tools):
    fake_api.add(helm_release("search", namespace="tuning"))
    fake_tools.add("helm")

    result = runner.invoke(app, ["undeploy", "-r", "search", "-n", "tuning"])

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [["helm", "uninstall", "search", "--namespace", "tuning", "--kube-context", "kind-tuner"]]
    assert "shared volume" in result.output and "kept" in result.output


def test_tensorboard_port_forwards_when_not_on_kind(fake_api, fake_tools):
    fake_api.add(helm_release("search"), service("tensorboard", release="search"))
    fake_tools.add("kubectl")
    port = free_port()

    result = runner.invoke(app, ["tensorboard", "--release", "search", "--port", str(port), "--context", "prod-gpus"])

    assert result.exit_code == 0, result.output
    assert fake_tools.calls() == [
        ["kubectl", "port-forward", "--namespace", "default", "--context", "prod-gpus",
         "svc/search-keras-tuner-cluster-tensorboard", f"{port}:6006"],
    ]  # fmt: skip
    assert f"http://127.0.0.1:{port}" in result.output


def test_status_on_kind_reads_progress_from_the_folder_the_nodes_mount(fake_api, fake_tools, tmp_path):
    folder = tmp_path / "shared"
    (folder / "runs" / "toonvision").mkdir(parents=True)
    (folder / "runs" / "toonvision" / "status.json").write_text('{"state": "running", "trials_done": 3, "max_trials": 6}')
    kind_fakes(fake_tools, folder)
    fake_api.add(helm_release(), job("chief", host_path="/shared"), pod("chief", ready=True))

    result = runner.invoke(app, ["status"], terminal_width=200)

    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "toonvision" in line)
    assert "running" in row and "3/6" in row
    assert "progress: unknown" not in result.output


def test_deploy_waits_for_a_chief_pod_that_comes_later(fake_api, fake_tools, rendered):
    fake_api.add(job("chief"), claim())
    helm_fake(fake_tools, rendered)
    # The pod appears once deploy has looked and not found it (not on a timer: a loaded machine may poll late).
    fake_api.after_list("pods", 1, lambda: fake_api.add(pod("chief", ready=True)))
    result = runner.invoke(app, prod("--timeout", "60"))

    assert result.exit_code == 0, result.output
    polls = [q for _, p, q in fake_api.requests if p.endswith("/pods") and "component=chief" in (q.get("labelSelector") or [""])[0]]
    assert len(polls) >= 2, "it looked for the chief's pod again until it came"
    assert "Search 'tuner' is running" in result.output


def test_logs_print_the_newest_pod_of_a_worker(fake_api, fake_tools):
    fake_api.add(helm_release(), pod("worker", name="tuner-worker-1-old", created="2025-01-01T00:00:00Z", index=1),
                 pod("worker", name="tuner-worker-1-new", created="2025-01-01T00:05:00Z", index=1),
                 pod("worker", name="tuner-worker-0-newest", created="2025-01-01T00:09:00Z", index=0))  # fmt: skip
    fake_api.set_log("default", "tuner-worker-1-new", "12:00:00 tuner1 INFO trial 3 done\n")

    result = runner.invoke(app, ["logs", "--worker", "1", "--tail", "5"])

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("12:00:00 tuner1 INFO trial 3 done\n")
    log_calls = [(p, q) for m, p, q in fake_api.requests if p.endswith("/log")]
    assert log_calls == [("/api/v1/namespaces/default/pods/tuner-worker-1-new/log", {"follow": ["false"], "tailLines": ["5"]})]
