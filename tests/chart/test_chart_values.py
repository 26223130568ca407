"""Bad values fail `helm template` (so `helm install`) with the key named; the schema follows the config model."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from chart_helpers import CHART, REPO, helm_template_error

SCHEMA_PATH = CHART / "values.schema.json"


@pytest.mark.parametrize(
    ("set_values", "named"),
    [
        pytest.param({"workers": -1}, "workers", id="negative-workers"),
        pytest.param({"workers": 0}, "workers", id="zero-workers"),
        pytest.param({"workers": "two"}, "workers", id="string-workers"),
        pytest.param({"wrokers": 2}, "wrokers", id="unknown-top-level-key"),
        pytest.param({"search.tuner": "grad"}, "search.tuner", id="unknown-tuner"),
        pytest.param({"search.max_trails": 5}, "max_trails", id="unknown-search-key"),
        pytest.param({"search.epochs": 0}, "search.epochs", id="zero-epochs"),
        pytest.param({"search.space": {"units": {"min": 1}}}, "search.space.units", id="bad-override"),
        pytest.param({"worker.gpus": -1}, "worker.gpus", id="negative-gpus"),
        pytest.param({"worker.replicas": 3}, "replicas", id="unknown-worker-key"),
        pytest.param({"chief.probe": "exec"}, "chief.probe", id="unknown-probe"),
        pytest.param({"tensorboard.service.type": "Ingress"}, "tensorboard.service.type", id="bad-service-type"),
        pytest.param({"storage.accessModes": ["ReadWriteSometimes"]}, "storage.accessModes", id="bad-access-mode"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(set_values: dict[str, Any], named: str) -> None:
    # The one value the defaults leave open, so that only the bad key is refused.
    error = helm_template_error(set_values={"storage.storageClassName": "nfs-client", **set_values})
    assert "values don't meet the specifications of the schema" in error, error
    assert named in error, error


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_values_schema", REPO / "scripts" / "gen-values-schema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_schema_is_generated_from_the_config_model() -> None:
    """Run scripts/gen-values-schema.py when this fails: tuner_job.config changed."""
    generator = load_generator()
    text = SCHEMA_PATH.read_text()
    assert generator.render(json.loads(text)) == text, "values.schema.json is stale: run scripts/gen-values-schema.py"


def test_every_config_field_is_in_the_chart_schema() -> None:
    from tuner_job.config import SearchConfig

    search = json.loads(SCHEMA_PATH.read_text())["properties"]["search"]
    assert set(search["properties"]) == set(SearchConfig.model_fields)
    assert search["additionalProperties"] is False


def walk(node: Any, path: str = "$") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def test_every_object_with_properties_forbids_others() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    # `if`/`then` subschemas constrain an object described elsewhere; they define no keys.
    loose = [path for path, node in walk(schema) if "properties" in node and isinstance(node["properties"], dict)
             and node.get("additionalProperties") is not False and not path.endswith(".properties")
             and not path.endswith((".if", ".then"))]
    assert loose == []


def test_values_yaml_documents_every_key() -> None:
    """A `# --` comment above every leaf key of values.yaml (helm-docs style)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        key, _, rest = stripped.partition(":")
        if not rest.strip() and number + 1 < len(lines) and lines[number + 1].startswith(line[: len(line) - len(line.lstrip())] + "  "):
            continue  # a group: its keys carry the comments
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#") and not lines[above].strip().startswith("# --"):
            above -= 1
        if above < 0 or not lines[above].strip().startswith("# --"):
            missing.append(f"line {number + 1}: {key}")
    # Keys inside a value's own mapping (resources: requests: cpu) are data.
    missing = [m for m in missing if not any(m.endswith(f": {k}") for k in ("cpu", "memory", "requests", "limits"))]
    assert missing == []
