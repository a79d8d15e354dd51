"""Tables of the benchmark results, as aligned text or Markdown, and the target checks."""

from __future__ import annotations

from collections.abc import Sequence

from bench.drain import DrainSeries
from bench.enqueue import EnqueueSeries
from bench.latency import LatencyRun


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Return rows under headers: a Markdown table, or columns padded with spaces."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(headers, widths, strict=True))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(lines)


def drain_table(series: Sequence[DrainSeries], reference: DrainSeries, markdown: bool) -> str:
    headers = [
        "worker",
        "jobs/s median",
        "min",
        "max",
        "ratio",
        "CPU us/job",
        "max RSS MiB",
    ]
    rows = []
    for row_series in series:
        if not row_series.runs:
            rows.append([row_series.name, f"failed: {row_series.error}", "", "", "", "", ""])
            continue
        ratio = row_series.median / reference.median if reference.median else 0.0
        runs = row_series.runs
        cpu = sorted(run.cpu_us_per_job for run in runs)[len(runs) // 2]
        rows.append(
            [
                row_series.name,
                f"{row_series.median:,.0f}",
                f"{min(row_series.rates):,.0f}",
                f"{max(row_series.rates):,.0f}",
                f"{ratio:.2f}",
                f"{cpu:.0f}",
                f"{max(run.max_rss_kb for run in runs) / 1024:.0f}",
            ]
        )
    note = f"ratio: the median divided by the median of {reference.name}"
    return table(headers, rows, markdown) + "\n\n" + note


def enqueue_table(series: Sequence[EnqueueSeries], markdown: bool) -> str:
    headers = ["client", "jobs", "jobs/s median", "min", "max"]
    rows = [
        [
            client.name,
            f"{client.jobs:,}",
            f"{client.median:,.0f}",
            f"{min(client.rates):,.0f}",
            f"{max(client.rates):,.0f}",
        ]
        for client in series
    ]
    return table(headers, rows, markdown)


def latency_table(runs: Sequence[LatencyRun], markdown: bool) -> str:
    headers = ["worker", "p50 ms", "p99 ms", "p99 of each run", "max ms", "idle RSS MiB"]
    rows = [
        [
            run.name,
            f"{run.p50_ms:.2f}",
            f"{run.p99_ms:.2f}",
            ", ".join(f"{value:.2f}" for value in run.p99_runs_ms),
            f"{run.max_ms:.2f}",
            ", ".join(f"{kb / 1024:.0f}" for kb in run.idle_rss_kb),
        ]
        for run in runs
    ]
    return table(headers, rows, markdown)


def check(label: str, value: float, target: float, unit: str = "") -> list[str]:
    """Return one target row: the label, the measured value, the target and met / not met."""
    status = "met" if value >= target else "not met"
    return [label, f"{value:.2f}{unit}", f">= {target:g}{unit}", status]


def check_at_most(label: str, value: float, limit: float, unit: str = "") -> list[str]:
    status = "met" if value <= limit else "not met"
    return [label, f"{value:.2f}{unit}", f"<= {limit:.2f}{unit}", status]
