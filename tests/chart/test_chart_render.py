"""The chart lints, renders and validates against Kubernetes' schemas for every ci/ value set."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from chart_helpers import CHART, CI_VALUES, helm_template, require_tool

# kubernetes-validate 1.37.0 ships strict schemas for 1.25 to 1.37, so both
# the oldest version the chart supports (Chart.yaml kubeVersion) and a current
# one are checked.
KUBE_VERSIONS = ("1.30.0", "1.35.0")
VALUE_SETS = [pytest.param(path, id=path.name.removesuffix("-values.yaml")) for path in CI_VALUES]


def test_the_value_sets_are_there() -> None:
    names = {path.name for path in CI_VALUES}
    assert names == {
        "default-values.yaml",
        "kind-values.yaml",
        "kind-gpu-values.yaml",
        "cpu-only-values.yaml",
        "gpu32x1-values.yaml",
        "existing-claim-values.yaml",
        "nfs-values.yaml",
    }


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_strict(values: Path) -> None:
    helm = require_tool("helm")
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--values", str(values)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS)
def test_rendered_objects_are_valid_kubernetes(values: Path, kube_version: str) -> None:
    objects = helm_template(values, kube_version=kube_version)
    assert objects
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {kube_version})"
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_kubernetes_validate_knows_the_versions() -> None:
    supported = all_versions()
    for version in KUBE_VERSIONS:
        assert any(v.startswith(version.rsplit(".", 1)[0] + ".") for v in supported), (version, supported)
