"""`tunectl scale`: the pre-flight, the server's version, the exact helm calls, and what it refuses.

The cluster is the fake API server read through the real `kubernetes`
client; helm is a recording fake whose `get manifest` and `upgrade --dry-run`
answer what the real helm renders from the real chart (hooks left out, as
Helm keeps them apart from the manifest). Where this machine has helm, the
real binary also parses the exact argv (against a port where nothing
listens): a flag it does not know would fail there.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from cluster.kube.scale import manifest_changes, parse_version, scale_args

from .kube_objects import helm_release, job, pod

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "keras-tuner-cluster"
HELM = REPO / ".tools" / "bin" / "helm"
UPGRADED = 'Release "tuner" has been upgraded. Happy Helming!\nNAME: tuner\n'


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.skip("helm not installed (make tools)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60, check=False)


def manifest(workers: int, *sets: str) -> str:
    """The real chart's manifest as `helm get manifest` shows it: no hooks."""
    args = ["template", "tuner", str(CHART), "--namespace", "default", "--set", "storage.storageClassName=nfs-client"]
    for value in (f"workers={workers}", *sets):
        args += ["--set", value]
    result = _helm(*args)
    assert result.returncode == 0, result.stderr
    docs = [d for d in result.stdout.split("\n---\n") if d.strip()]
    kept = [d for d in docs if "helm.sh/hook" not in (((yaml.safe_load(d) or {}).get("metadata") or {}).get("annotations") or {})]
    return "---\n" + "\n---\n".join(kept)


def release_json(text: str) -> str:
    """What `helm upgrade --dry-run --output json` prints: the release, with its manifest."""
    return json.dumps({"name": "tuner", "namespace": "default", "version": 4, "manifest": text, "info": {"status": "pending-upgrade"}})


def scale_fakes(fake_tools, installed: str, upgraded: str) -> None:
    fake_tools.add(
        "helm",
        (["get", "manifest"], installed, "", 0),
        (["upgrade", "--dry-run=server"], release_json(upgraded), "", 0),
        (["upgrade"], UPGRADED, "", 0),
    )


def running(fake_api, workers: int = 2, **worker) -> None:
    fake_api.add(helm_release(revision=3), job("chief"), job("worker", completions=workers, **worker), pod("chief", ready=True))


def test_scale_up_upgrades_the_release_with_only_the_worker_count(fake_api, fake_tools):
    running(fake_api, 2)
    scale_fakes(fake_tools, manifest(2), manifest(4))

    result = runner.invoke(app, ["scale", "--workers", "4", "--chart", str(CHART), "--context", "prod-gpus"])

    assert result.exit_code == 0, result.output
    same = ["tuner", str(CHART), "--namespace", "default", "--reuse-values", "--set", "workers=4",
            "--description", "tunectl scale --workers 4", "--kube-context", "prod-gpus"]  # fmt: skip
    assert fake_tools.calls() == [
        ["helm", "get", "manifest", "tuner", "--namespace", "default", "--kube-context", "prod-gpus"],
        ["helm", "upgrade", "--dry-run=server", "--output", "json", *same],
        ["helm", "upgrade", *same],
    ]
    assert "/apis/batch/v1/namespaces/default/jobs" in fake_api.paths()
    lines = result.output.splitlines()
    assert lines[0].startswith("cluster: context prod-gpus at ") and "(Kubernetes v1.33.1)" in lines[0]
    assert 'Release "tuner" has been upgraded. Happy Helming!' in lines
    assert "workers: 2 -> 4 (worker Job tuner-keras-tuner-cluster-worker: completions and parallelism 4)" in lines
    assert "indexes 2-3 (tuner2..tuner3) start and join the search; `tunectl status` shows them come up." in lines


def test_scale_down_says_the_stopped_workers_trials_come_back_after_their_lease(fake_api, fake_tools):
    running(fake_api, 4)
    scale_fakes(fake_tools, manifest(4, "search.lease_seconds=45"), manifest(1, "search.lease_seconds=45"))

    result = runner.invoke(app, ["scale", "-w", "1", "--chart", str(CHART)])

    assert result.exit_code == 0, result.output
    assert fake_tools.calls("helm")[-1][:2] == ["helm", "upgrade"] and "workers=1" in fake_tools.calls("helm")[-1]
    assert result.output.strip().splitlines()[-1] == (
        "indexes 1-3 (tuner1..tuner3) stop; a trial one of them holds goes back to the queue when its lease runs out "
        "(lease_seconds: 45 s) and the next free worker trains it."
    )


@pytest.mark.parametrize(("version", "refused"), [("v1.26.15", True), ("v1.25.3-gke.1400", True), ("v1.27.0", False), ("v1.31.2+k3s1", False)])
def test_scale_checks_that_the_server_has_elastic_indexed_jobs(fake_api, fake_tools, version, refused):
    fake_api.version = version
    running(fake_api, 2)
    scale_fakes(fake_tools, manifest(2), manifest(3))

    result = runner.invoke(app, ["scale", "--workers", "3", "--chart", str(CHART)])

    if refused:
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1] == (
            f"error: Kubernetes {version} at {fake_api.url} cannot change the worker count of a running search: elastic "
            "Indexed Jobs need Kubernetes 1.27 or later; `tunectl deploy --replace --set workers=N` restarts the search "
            "with N workers instead (its run resumes from the shared volume)"
        )
        assert fake_tools.calls() == [], "nothing is changed"
        assert "/version" in fake_api.paths()
    else:
        assert result.exit_code == 0, result.output
        assert [c[1] for c in fake_tools.calls()] == ["get", "upgrade", "upgrade"]


def test_scale_refuses_a_chart_that_would_change_more_than_the_count(fake_api, fake_tools):
    running(fake_api, 2)
    scale_fakes(fake_tools, manifest(2), manifest(4, "search.max_trials=7"))

    result = runner.invoke(app, ["scale", "--workers", "4", "--chart", str(CHART)])

    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: the chart at {CHART} would change more than the worker count of release 'tuner' (")
    assert "ConfigMap tuner-keras-tuner-cluster-search: data.search.yaml" in line
    assert "Job tuner-keras-tuner-cluster-chief: spec.template.metadata.annotations.checksum/search" in line
    assert "spec.completions" not in line
    assert line.endswith("pass --chart with the chart it was deployed from, or `tunectl deploy --replace` to deploy this one")
    assert [c[1] for c in fake_tools.calls()] == ["get", "upgrade"] and "--dry-run=server" in fake_tools.calls()[-1]


def test_scale_to_the_current_count_changes_nothing(fake_api, fake_tools):
    running(fake_api, 3)
    fake_tools.add("helm")

    result = runner.invoke(app, ["scale", "--workers", "3"])

    assert result.exit_code == 0, result.output
    assert "release 'tuner' already has 3 worker(s); nothing to change." in result.output
    assert fake_tools.calls() == []


def test_scale_refuses_a_completed_search(fake_api, fake_tools):
    fake_api.add(helm_release(), job("chief", complete=True), job("worker", complete=True, completions=2))
    fake_tools.add("helm")

    result = runner.invoke(app, ["scale", "--workers", "4"])

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: the search of release 'tuner' is complete, there is nothing to scale: `tunectl status` shows its results"
    )
    assert fake_tools.calls() == []


def test_scale_below_max_failed_indexes_is_refused(fake_api, fake_tools):
    running(fake_api, 4, max_failed_indexes=3)
    fake_tools.add("helm")

    result = runner.invoke(app, ["scale", "--workers", "2"])

    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: worker.maxFailedIndexes is 3, more than --workers 2: the API server refuses a Job that may lose more "
        "indexes than it has; scale to 3 or more"
    )
    assert fake_tools.calls() == []


def test_scale_beyond_the_charts_maximum_is_refused_by_its_schema(fake_api, fake_tools):
    refusal = _helm("template", "tuner", str(CHART), "--set", "storage.storageClassName=nfs", "--set", "workers=10001")
    assert refusal.returncode != 0
    running(fake_api, 2)
    fake_tools.add("helm", (["get", "manifest"], manifest(2), "", 0), (["upgrade"], "", refusal.stderr, 1))

    result = runner.invoke(app, ["scale", "--workers", "10001", "--chart", str(CHART)])

    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: the chart refuses these values: workers: Must be less than or equal to 10000"
    )
    assert [c[1] for c in fake_tools.calls()] == ["get", "upgrade"], "only the dry run"


def test_scale_takes_at_least_one_worker(fake_api, fake_tools):
    fake_tools.add("helm")

    result = runner.invoke(app, ["scale", "--workers", "0"])

    assert result.exit_code == 2
    assert result.stderr == "error: --workers: must be at least 1, but got 0 (see 'tunectl scale -h')\n"
    assert fake_tools.calls() == [] and fake_api.requests == []


def test_an_api_server_that_refuses_a_new_completions_count_is_explained(fake_api, fake_tools):
    running(fake_api, 2)
    refused = (
        'Error: UPGRADE FAILED: cannot patch "tuner-keras-tuner-cluster-worker" with kind Job: Job.batch '
        '"tuner-keras-tuner-cluster-worker" is invalid: spec.completions: Invalid value: 4: field is immutable\n'
    )
    fake_tools.add(
        "helm",
        (["get", "manifest"], manifest(2), "", 0),
        (["upgrade", "--dry-run=server"], release_json(manifest(4)), "", 0),
        (["upgrade"], "", refused, 1),
    )

    result = runner.invoke(app, ["scale", "--workers", "4", "--chart", str(CHART)])

    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert "spec.completions: Invalid value: 4: field is immutable" in line
    assert line.endswith(
        "(the API server refused to change the worker Job's completions: elastic Indexed Jobs are turned off on this "
        "cluster, feature gate ElasticIndexedJob)"
    )


def test_the_real_helm_accepts_the_exact_arguments(closed_port_kubeconfig):
    """helm parses every flag, then fails only because no cluster answers."""
    for args in (
        scale_args("tuner", CHART, "default", 4, ["--kube-context", "kind-gone"], dry_run=True),
        scale_args("tuner", CHART, "default", 4, ["--kube-context", "kind-gone"]),
        ["get", "manifest", "tuner", "--namespace", "default", "--kube-context", "kind-gone"],
    ):
        result = _helm(*args)
        assert result.returncode != 0
        assert "unknown flag" not in result.stderr and "unknown shorthand" not in result.stderr, (args, result.stderr)
        assert "connection refused" in result.stderr or "unreachable" in result.stderr, (args, result.stderr)


# --- the pure pieces ---------------------------------------------------------------------------


def test_manifest_changes_allows_only_the_worker_jobs_count():
    assert manifest_changes(manifest(2), manifest(4)) == []
    assert manifest_changes(manifest(2), manifest(2)) == []
    changed = manifest_changes(manifest(2), manifest(2, "chief.resources.limits.cpu=3"))
    assert changed == ["Job tuner-keras-tuner-cluster-chief: spec.template.spec.containers.0.resources.limits.cpu"]
    renamed = manifest(2).replace("name: tuner-keras-tuner-cluster-worker\n", "name: tuner-keras-tuner-cluster-work\n")
    assert manifest_changes(manifest(2), renamed) == [
        "Job tuner-keras-tuner-cluster-work: added", "Job tuner-keras-tuner-cluster-worker: removed",
    ]  # fmt: skip
    # completions of another Job (the chief's) is not the worker count.
    chief_twice = manifest(2).replace("  completions: 1\n", "  completions: 2\n", 1)
    assert "completions: 1\n" in manifest(2) and manifest_changes(manifest(2), chief_twice) == [
        "Job tuner-keras-tuner-cluster-chief: spec.completions"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("v1.30.2", (1, 30)), ("v1.29.3-gke.1093000", (1, 29)), ("v1.28.5+k3s1", (1, 28)), ("1.27", (1, 27)), ("unknown", None)],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_status_shows_the_worker_count_desired_and_running(fake_api, fake_tools):
    fake_api.add(helm_release(), job("chief"), job("worker", completions=4), pod("chief", ready=True))
    for index in range(3):
        fake_api.add(pod("worker", name=f"tuner-keras-tuner-cluster-worker-{index}-x", index=index, ready=True))
    fake_api.add(pod("worker", name="tuner-keras-tuner-cluster-worker-3-x", index=3, phase="Pending"))

    result = runner.invoke(app, ["status", "--context", "prod-gpus"], terminal_width=200)

    assert result.exit_code == 0, result.output
    assert "workers: 4 desired, 3 running, 1 starting" in result.output.splitlines()
