"""Print the fault suite's result rows as Markdown tables.

Usage: ``python -m tests.faults.report RESULTS_FILE`` (bin/faults runs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FAULT_COLUMNS = [
    ("fault", "fault"),
    ("fetch", "fetch"),
    ("enqueued", "enqueued"),
    ("completed", "completed"),
    ("lost", "lost"),
    ("run_twice", "run twice"),
    ("notes", "notes"),
    ("command", "command"),
]
LATENCY_COLUMNS = [
    ("fetch", "fetch"),
    ("threads", "threads"),
    ("queue", "queue"),
    ("jobs", "jobs"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("command", "command"),
]


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Return ``rows`` as a Markdown table; commands are set as code."""
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = []
        for field, _ in columns:
            value = row.get(field, "")
            if isinstance(value, float):
                value = f"{value:.2f}"
            cells.append(f"`{value}`" if field == "command" else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.faults.report RESULTS_FILE", file=sys.stderr)
        return 2
    text = Path(argv[1]).read_text(encoding="utf-8") if Path(argv[1]).exists() else ""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    faults = [row for row in rows if row.get("kind") == "fault"]
    latencies = [row for row in rows if row.get("kind") == "latency"]
    if not rows:
        print("no result rows were recorded")
        return 0
    if faults:
        print(table(faults, FAULT_COLUMNS))
    if latencies:
        print()
        print("Idle enqueue-to-start latency")
        print()
        print(table(latencies, LATENCY_COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
