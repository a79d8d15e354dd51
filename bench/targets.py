"""The performance targets, checked against the figures of one benchmark run.

Each row compares figures measured in the same run, so the machine's speed
cancels out. A target whose figures are missing (a suite not run, a peer
that failed) is left out.
"""

from __future__ import annotations

from typing import Any

from bench.drain import DrainSeries
from bench.enqueue import EnqueueSeries
from bench.latency import LatencyRun
from bench.report import check, check_at_most

IDLE_RSS_LIMIT_MIB = 40.0
BIG_TOLERANCE = 0.10


def _find(series: list[DrainSeries], kind: str, processes: int = 1) -> list[DrainSeries]:
    return [s for s in series if s.kind == kind and s.processes == processes and s.runs]


def drain_targets(series: list[DrainSeries]) -> list[list[str]]:
    rows: list[list[str]] = []
    sidekiq = _find(series, "sidekiq")
    dramatiq = _find(series, "dramatiq")
    multi = [s for s in series if s.kind == "pyqueue" and s.processes > 1 and s.runs]
    for single in _find(series, "pyqueue"):
        label = f"one process, {single.fetch} fetch"
        if sidekiq:
            rows.append(
                check(f"{label} / Sidekiq one process", single.median / sidekiq[0].median, 1.0)
            )
        if dramatiq:
            rows.append(
                check(f"{label} / Dramatiq one process", single.median / dramatiq[0].median, 3.0)
            )
    for many in multi:
        if sidekiq:
            rows.append(
                check(
                    f"{many.processes} processes, {many.fetch} fetch / Sidekiq one process",
                    many.median / sidekiq[0].median,
                    2.0,
                )
            )
    return rows


def enqueue_targets(series: list[EnqueueSeries]) -> list[list[str]]:
    by_name = {s.name: s for s in series}
    rows = []
    for label in ("one at a time", "push_bulk"):
        ours = by_name.get(f"pyqueue {label}")
        theirs = by_name.get(f"Ruby Sidekiq 6.4 {label}")
        if ours and theirs and theirs.median:
            rows.append(check(f"enqueue {label} / Sidekiq", ours.median / theirs.median, 1.0))
    return rows


def latency_targets(runs: list[LatencyRun]) -> list[list[str]]:
    sidekiq = [run for run in runs if run.name.startswith("Ruby Sidekiq")]
    rows = []
    for run in runs:
        if run.name.startswith("pyqueue"):
            if sidekiq:
                rows.append(
                    check_at_most(f"p99 latency, {run.name}", run.p99_ms, sidekiq[0].p99_ms, " ms")
                )
            largest = max(run.idle_rss_kb, default=0) / 1024
            rows.append(check_at_most(f"idle RSS, {run.name}", largest, IDLE_RSS_LIMIT_MIB, " MiB"))
    return rows


def big_targets(series: list[DrainSeries]) -> list[list[str]]:
    rows = []
    for small, large in zip(series[::2], series[1::2], strict=False):
        if not (small.runs and large.runs):
            continue
        rows.append(
            check(
                f"{large.name} / 10,000 queued",
                large.median / small.median,
                1.0 - BIG_TOLERANCE,
            )
        )
        run = large.runs[0]
        growth = (run.max_rss_kb - run.start_rss_kb) / 1024
        rows.append(check_at_most(f"RSS growth over {large.name}", growth, 5.0, " MiB"))
    return rows


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    """Return one [target, measured, goal, status] row per target the results cover."""
    rows: list[list[str]] = []
    rows += drain_targets(results.get("drain", []))
    rows += enqueue_targets(results.get("enqueue", []))
    rows += latency_targets(results.get("latency", []))
    rows += big_targets(results.get("big", []))
    return rows
