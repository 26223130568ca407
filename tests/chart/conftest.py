"""Fixtures for the chart tests; the helpers they use live in `chart_helpers`
(a unique module name: `from conftest import` would be ambiguous across folders)."""

from __future__ import annotations

from typing import Any

import pytest

from chart_helpers import CI_VALUES, helm_template, rendered_containers, require_tool


@pytest.fixture(scope="session")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(name="helm_template")
def _helm_template_fixture() -> Any:
    return helm_template


@pytest.fixture(name="rendered_containers")
def _rendered_containers_fixture() -> Any:
    return rendered_containers


@pytest.fixture(scope="session")
def rendered_sets() -> dict[str, list[dict[str, Any]]]:
    """Every ci/*-values.yaml rendered once: `{"kind": [...objects], ...}`."""
    return {path.name.removesuffix("-values.yaml"): helm_template(path) for path in CI_VALUES}
