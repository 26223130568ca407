"""checkov finds nothing wrong in the rendered manifests, and every skip says why."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from chart_helpers import CI_VALUES, helm_template, require_tool


def test_checkov_passes_every_value_set(tmp_path: Path) -> None:
    checkov = require_tool("checkov")
    for values in CI_VALUES:
        objects = helm_template(values)
        (tmp_path / values.name.replace("-values", "")).write_text(yaml.safe_dump_all(objects, sort_keys=False))
    result = subprocess.run(
        [checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--compact", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
        # No phone-home: the checks and their names are in the package.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert result.stdout.strip(), f"checkov printed nothing (exit {result.returncode}): {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for rep in reports
        for check in rep.get("results", {}).get("failed_checks", [])
    ]
    assert failed == [], "\n".join(failed)
    assert sum(rep.get("summary", {}).get("parsing_errors", 0) for rep in reports) == 0
    skipped = [check for rep in reports for check in rep.get("results", {}).get("skipped_checks", [])]
    assert skipped, "the chart's checkov.io/skip annotations were not seen"
    unexplained = [f"{c['check_id']} {c['resource']}" for c in skipped if len((c.get("check_result", {}).get("suppress_comment") or "").strip()) < 20]
    assert unexplained == [], "every checkov.io/skip annotation needs a reason"
    passed = sum(rep.get("summary", {}).get("passed", 0) for rep in reports)
    assert passed > 100, "checkov ran almost no checks: did it parse the manifests?"
    assert result.returncode == 0, result.stderr[-2000:]
