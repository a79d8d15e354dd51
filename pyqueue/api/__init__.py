"""The data API: what an operator inspects and changes in a Sidekiq console, in Python.

It reads and edits the Redis data of a cluster of pyqueue and Ruby Sidekiq
processes: counters, queues, the scheduled, retry and dead sets, processes
and running jobs. Records are frozen dataclasses with plain fields; payloads
that Sidekiq's readers would trip on are returned with ``problems`` instead of
raising. See docs/api.md.

    from pyqueue.api import RetrySet, Stats
    print(Stats().snapshot().retry_size)
    for entry in RetrySet().page(count=10).entries:
        print(entry.entry_id, entry.job.display_class, entry.job.problems)
"""

from __future__ import annotations

from pyqueue.api.base import AmbiguousReference, KeyTypeError, NotFound
from pyqueue.api.health import Check, HealthLimits, HealthReport, check_health
from pyqueue.api.processes import ProcessRecord, ProcessSet, Workers, WorkRecord
from pyqueue.api.queues import JobPage, Queue, QueueList, QueueSummary
from pyqueue.api.records import JobRecord, read_job
from pyqueue.api.sorted_sets import (
    BulkResult,
    DeadSet,
    EntryPage,
    RetrySet,
    ScheduledSet,
    SortedEntry,
    SortedSet,
    find_entry,
)
from pyqueue.api.stats import History, Stats, StatsSnapshot

__all__ = [
    "AmbiguousReference",
    "BulkResult",
    "Check",
    "DeadSet",
    "EntryPage",
    "HealthLimits",
    "HealthReport",
    "History",
    "JobPage",
    "JobRecord",
    "KeyTypeError",
    "NotFound",
    "ProcessRecord",
    "ProcessSet",
    "Queue",
    "QueueList",
    "QueueSummary",
    "RetrySet",
    "ScheduledSet",
    "SortedEntry",
    "SortedSet",
    "Stats",
    "StatsSnapshot",
    "WorkRecord",
    "Workers",
    "check_health",
    "find_entry",
    "read_job",
]
