"""How the chart stops pods and keeps two searches apart (issue 12).

- The chief's Job fails at once on exit 1 and 2, gives a crash a new pod,
  ignores evictions, and starts a replacement only once the old pod stopped.
- Both Jobs give their pods the grace period the values name.
- The run folder is the release's name unless `search.run` names one, and
  NOTES say where it lives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_helpers import CHART, NAMESPACE, _helm, by_kind_and_component, helm_template, pod_spec
from test_chart_notes_and_hook import render_notes

SETS = ["default", "kind", "kind-gpu", "cpu-only", "gpu32x1", "existing-claim", "nfs"]


def _values_file(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


@pytest.mark.parametrize("name", SETS)
def test_chief_job_fails_at_once_on_a_verdict_and_replaces_only_a_stopped_pod(rendered_sets: dict, name: str) -> None:
    job = by_kind_and_component(rendered_sets[name])[("Job", "chief")]
    spec = job["spec"]
    assert spec["completions"] == spec["parallelism"] == 1
    assert pod_spec(job)["restartPolicy"] == "Never"  # what a podFailurePolicy requires
    assert spec["podReplacementPolicy"] == "Failed"
    assert 0 < spec["backoffLimit"] <= 10  # crashes (exit 70) get new pods, bounded
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "chief", "operator": "In", "values": [1, 2]}} in rules
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    codes = [code for rule in rules for code in rule.get("onExitCodes", {}).get("values", [])]
    assert 70 not in codes and 143 not in codes, rules  # a crash counts; no rule may loop a SIGTERMed chief for ever


def test_grace_periods_come_from_the_values() -> None:
    found = by_kind_and_component(helm_template(_values_file("default")))
    assert pod_spec(found[("Job", "chief")])["terminationGracePeriodSeconds"] == 30
    assert pod_spec(found[("Job", "worker")])["terminationGracePeriodSeconds"] == 60
    values = {"chief.terminationGracePeriodSeconds": 45, "worker.terminationGracePeriodSeconds": 300}
    found = by_kind_and_component(helm_template(_values_file("default"), set_values=values))
    assert pod_spec(found[("Job", "chief")])["terminationGracePeriodSeconds"] == 45
    assert pod_spec(found[("Job", "worker")])["terminationGracePeriodSeconds"] == 300


def _run_of(release: str, run: str | None = None) -> str:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.30.0",
            "--set", "storage.storageClassName=nfs-client", "--show-only", "templates/configmap.yaml"]  # fmt: skip
    if run is not None:
        args += ["--set", f"search.run={run}"]
    result = _helm(*args)
    assert result.returncode == 0, result.stderr
    config_map: dict[str, Any] = yaml.safe_load(result.stdout)
    return yaml.safe_load(config_map["data"]["search.yaml"])["run"]


def test_each_release_gets_its_own_run_unless_search_run_names_one() -> None:
    assert _run_of("alpha") == "alpha" and _run_of("beta") == "beta"
    assert _run_of("alpha", "shared-study") == _run_of("beta", "shared-study") == "shared-study"


def test_notes_say_where_the_run_lives(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, _values_file("default"))
    assert 'Search "tuner"' in notes
    assert "The run lives in /shared/runs/tuner/ (named after the release; set search.run to name it)" in notes
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump({**yaml.safe_load(_values_file("default").read_text()), "search": {"run": "study-1"}}))
    notes = render_notes(tmp_path / "again", named)
    assert "The run lives in /shared/runs/study-1/ (search.run)" in notes
