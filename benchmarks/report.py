"""Writing a benchmark's JSON report."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(path: Path, report: dict) -> None:
    """Write `report` as indented JSON at `path` (its folder made) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    path.write_text(text)
    print(text)
