"""Regenerate ``schema/v<N>/kernel-record.schema.json`` from the models: ``python -m registry.format.spec``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import SCHEMA_VERSION, json_schema


def main(root: str = "schema") -> None:
    target = Path(root) / f"v{SCHEMA_VERSION}" / "kernel-record.schema.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
