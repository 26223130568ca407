"""Every values block in docs/kubernetes.md renders with the real chart and is valid Kubernetes.

A user copies these blocks; one that the schema refuses (such as
`pullSecrets: [{name: regcred}]` once was) fails here first.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from chart_helpers import REPO, by_kind_and_component, helm_template

DOCS = REPO / "docs" / "kubernetes.md"
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def values_blocks() -> list[tuple[int, str]]:
    text = DOCS.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def test_the_docs_have_values_blocks() -> None:
    assert len(values_blocks()) >= 4


@pytest.mark.parametrize(("line", "block"), values_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_a_values_block_renders_and_validates(line: int, block: str, tmp_path: Path) -> None:
    values = yaml.safe_load(block)
    assert isinstance(values, dict), f"docs/kubernetes.md line {line}: not a values mapping"
    path = tmp_path / "values.yaml"
    path.write_text(block)
    objects = helm_template(path)
    found = by_kind_and_component(objects)
    assert ("Job", "chief") in found and ("Job", "worker") in found
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    # What the block sets is what the chart renders.
    worker = found[("Job", "worker")]["spec"]
    if "workers" in values:
        assert worker["completions"] == values["workers"]
    secrets = values.get("image", {}).get("pullSecrets")
    if secrets:
        assert worker["template"]["spec"]["imagePullSecrets"] == [{"name": name} for name in secrets]
