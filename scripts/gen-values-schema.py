#!/usr/bin/env python3
"""Write the `search` part of the chart's values.schema.json from the config model.

`values.search` becomes the search.yaml that `python -m tuner_job` reads, so
its schema is `tuner_job.config.SearchConfig.model_json_schema()`: the keys
under `properties.search` and the override shapes under `$defs` are replaced,
the rest of the file (hand-written) is kept. tests/chart/test_schema.py
fails when the file and the model drift apart.

    .venv/bin/python scripts/gen-values-schema.py          # rewrite the file
    .venv/bin/python scripts/gen-values-schema.py --check  # exit 1 if stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parent.parent / "helm" / "keras-tuner-cluster" / "values.schema.json"


def search_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's schema for `search` and its `$defs` (referenced from the file's root)."""
    from tuner_job.config import SearchConfig

    schema = SearchConfig.model_json_schema()
    defs = schema.pop("$defs", {})
    schema["description"] = "search.yaml: " + schema.get("description", "")
    return schema, defs


def render(current: dict[str, Any]) -> str:
    """The file's text with the generated parts replaced."""
    search, defs = search_schema()
    updated = dict(current)
    updated["properties"] = {**current["properties"], "search": search}
    updated["$defs"] = defs
    return json.dumps(updated, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    args = parser.parse_args()
    text = SCHEMA.read_text()
    wanted = render(json.loads(text))
    if args.check:
        if text != wanted:
            print(f"{SCHEMA} is stale: run scripts/gen-values-schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
