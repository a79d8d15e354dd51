"""View models: what a template needs from the data API's records, already decided.

The templates only loop and print. Which arguments are hidden, how an entry
is named in a form and where a page starts are decided here, where tests can
check them without HTML.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pyqueue.api.records import JobRecord
from pyqueue.api.sorted_sets import DeadSet, RetrySet, ScheduledSet, SortedEntry, SortedSet, digest
from pyqueue.api.stats import StatsSnapshot
from pyqueue.web.render import compact_json

HIDDEN = "[hidden]"

# Button labels of the actions on set entries; the keys are the form's action values.
ACTION_LABELS = {
    "retry": "Retry now",
    "add_to_queue": "Add to queue",
    "delete": "Delete",
    "kill": "Kill",
}


@dataclasses.dataclass(frozen=True)
class SetKind:
    """One of the three sorted-set pages: its URL segment, API class and actions."""

    slug: str
    title: str
    api: type[SortedSet]
    score_label: str
    actions: tuple[str, ...]


SET_KINDS = {
    kind.slug: kind
    for kind in (
        SetKind("scheduled", "Scheduled", ScheduledSet, "Runs at", ("add_to_queue", "delete")),
        SetKind("retries", "Retries", RetrySet, "Next retry", ("retry", "delete", "kill")),
        SetKind("dead", "Dead", DeadSet, "Died", ("retry", "delete")),
    )
}


@dataclasses.dataclass(frozen=True)
class JobRow:
    """One job in a list.

    ``key`` names the exact entry in a form: ``<score>-sha256:<digest>`` for a
    set, ``<index>:sha256:<digest>`` for a queue, so that a bad entry without
    a jid can still be deleted. ``link`` is the job page's path, if any.
    """

    key: str
    job: JobRecord
    args: str
    score: float | None = None
    link: str | None = None

    @property
    def name(self) -> str:
        """Return the class to show; an unreadable entry shows as ``(unreadable)``."""
        return self.job.display_class or self.job.job_class or "(unreadable)"


@dataclasses.dataclass(frozen=True)
class Pager:
    """Page ``number`` (from 1) of ``total`` items, ``size`` per page."""

    number: int
    size: int
    total: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def count(self) -> int:
        """Return the number of pages; an empty list still has one."""
        return max(1, math.ceil(self.total / self.size))

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.count else None


@dataclasses.dataclass(frozen=True)
class DayBar:
    """One day of the history chart; heights are percent of the busiest day."""

    day: str
    processed: int
    failed: int
    processed_height: float
    failed_height: float


def args_text(job: JobRecord, hide_args: bool) -> str:
    """Return the arguments as one line of JSON values, or HIDDEN."""
    if hide_args:
        return HIDDEN
    if job.parsed is None:
        # An unreadable entry shows its raw string, as the only trace of what it was.
        return job.raw
    return ", ".join(compact_json(value) for value in job.display_args)


def entry_key(entry: SortedEntry) -> str:
    return f"{entry.score!r}-{digest(entry.raw)}"


def queue_key(index: int, job: JobRecord) -> str:
    return f"{index}:{digest(job.raw)}"


def parse_queue_key(key: str) -> tuple[int, str] | None:
    """Return (index, digest) from a queue key, or None when it is malformed."""
    index, _, name = key.partition(":")
    if not index.isdigit() or not name:
        return None
    return int(index), name


def set_row(entry: SortedEntry, hide_args: bool, link: str) -> JobRow:
    return JobRow(entry_key(entry), entry.job, args_text(entry.job, hide_args), entry.score, link)


def queue_row(index: int, job: JobRecord, hide_args: bool) -> JobRow:
    return JobRow(queue_key(index, job), job, args_text(job, hide_args))


def job_fields(job: JobRecord, hide_args: bool) -> list[tuple[str, str]]:
    """Return the payload's fields as (name, JSON) for the job page, arguments hidden if set."""
    if job.parsed is None:
        return []
    fields = []
    for name, value in job.parsed.items():
        if name == "error_backtrace":
            continue  # shown decoded, line by line
        shown = HIDDEN if hide_args and name == "args" else compact_json(value)
        fields.append((str(name), shown))
    return fields


def history_bars(processed: dict[str, int], failed: dict[str, int]) -> list[DayBar]:
    """Return the days oldest first with bar heights scaled to the busiest day."""
    days = sorted(processed)
    peak = max([1, *processed.values(), *failed.values()])
    return [
        DayBar(
            day,
            processed[day],
            failed.get(day, 0),
            round(100.0 * max(processed[day], 0) / peak, 2),
            round(100.0 * max(failed.get(day, 0), 0) / peak, 2),
        )
        for day in days
    ]


def stats_document(snapshot: StatsSnapshot, now: float) -> dict[str, Any]:
    """Return the JSON that the live graph polls."""
    return {
        "time": now,
        "processed": snapshot.processed,
        "failed": snapshot.failed,
        "enqueued": snapshot.enqueued,
        "scheduled": snapshot.scheduled_size,
        "retries": snapshot.retry_size,
        "dead": snapshot.dead_size,
        "processes": snapshot.processes_size,
        "busy": snapshot.workers_size,
        "default_latency": snapshot.default_queue_latency,
    }
