"""Health checks an operator or a monitor runs against the cluster's Redis data.

Each check compares one figure with a limit: live processes, jobs waiting,
today's failure rate, the oldest job's age and Redis memory use. The report
lists every check, so a monitor can show all failures at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import redis

from pyqueue.api.base import KeyTypeError, connection
from pyqueue.api.processes import ProcessSet
from pyqueue.api.queues import Queue
from pyqueue.api.stats import Stats

DEFAULT_MEMORY_THRESHOLD = 0.9


@dataclasses.dataclass(frozen=True)
class HealthLimits:
    """Limits of the checks; None turns a check off. Raises ValueError when out of range.

    ``max_failure_rate`` is a fraction (0..1) of today's executions (UTC day);
    ``max_latency`` is in seconds; ``memory_threshold`` is a fraction of
    Redis ``maxmemory`` and is skipped when no ``maxmemory`` is set.
    """

    max_enqueued: int | None = None
    max_failure_rate: float | None = None
    max_latency: float | None = None
    memory_threshold: float | None = DEFAULT_MEMORY_THRESHOLD
    min_processes: int = 1

    def __post_init__(self) -> None:
        if self.max_failure_rate is not None and not 0 <= self.max_failure_rate <= 1:
            raise ValueError(f"max_failure_rate must be in 0..1, got {self.max_failure_rate}")
        if self.memory_threshold is not None and not 0 < self.memory_threshold <= 1:
            raise ValueError(f"memory_threshold must be in (0, 1], got {self.memory_threshold}")
        for name in ("max_enqueued", "max_latency", "min_processes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: the measured ``value``, its ``limit`` and a one-line ``message``."""

    name: str
    ok: bool
    value: float | None
    limit: float | None
    message: str


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """Every check that ran; ``ok`` is True when none failed."""

    ok: bool
    checks: tuple[Check, ...]

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)


def check_health(
    redis: redis.Redis | None = None,
    limits: HealthLimits | None = None,
    now: float | None = None,
) -> HealthReport:
    """Run every enabled check and return the report; Redis errors propagate."""
    conn = connection(redis)
    limits = limits if limits is not None else HealthLimits()
    current = time.time() if now is None else now
    checks = [_processes(conn, limits.min_processes)]
    if limits.max_enqueued is not None:
        checks.append(_enqueued(conn, limits.max_enqueued))
    if limits.max_failure_rate is not None:
        checks.append(_failure_rate(conn, limits.max_failure_rate, current))
    if limits.max_latency is not None:
        checks.append(_latency(conn, limits.max_latency, current))
    if limits.memory_threshold is not None:
        checks.append(_memory(conn, limits.memory_threshold))
    return HealthReport(all(check.ok for check in checks), tuple(checks))


def _processes(conn: redis.Redis, minimum: int) -> Check:
    try:
        live = len(ProcessSet(conn).all())
    except KeyTypeError as exc:
        return Check("processes", False, None, minimum, str(exc))
    ok = live >= minimum
    verdict = "" if ok else f", below the minimum of {minimum}"
    noun = "process" if live == 1 else "processes"
    return Check("processes", ok, live, minimum, f"{live} live {noun}{verdict}")


def _enqueued(conn: redis.Redis, maximum: int) -> Check:
    snapshot = Stats(conn).snapshot()
    enqueued = snapshot.enqueued
    ok = enqueued <= maximum
    verdict = "" if ok else f", above the limit of {maximum}"
    noun = "job" if enqueued == 1 else "jobs"
    return Check("enqueued", ok, enqueued, maximum, f"{enqueued} {noun} enqueued{verdict}")


def _failure_rate(conn: redis.Redis, maximum: float, now: float) -> Check:
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    history = Stats(conn).history(1, end=today)
    processed = history.processed[today.isoformat()]
    failed = history.failed[today.isoformat()]
    rate = failed / processed if processed > 0 else 0.0
    ok = rate <= maximum
    verdict = "" if ok else f", above the limit of {maximum:.1%}"
    message = f"{failed} of {processed} jobs failed today ({rate:.1%}){verdict}"
    return Check("failure_rate", ok, rate, maximum, message)


def _latency(conn: redis.Redis, maximum: float, now: float) -> Check:
    listing = Queue.summaries(conn, now)
    if listing.problems:
        return Check("latency", False, None, maximum, "; ".join(listing.problems))
    if not listing.queues:
        return Check("latency", True, 0.0, maximum, "no queues")
    worst = max(listing.queues, key=lambda queue: queue.latency)
    ok = worst.latency <= maximum
    verdict = "" if ok else f", above the limit of {maximum:g} s"
    message = f"oldest job waits {worst.latency:.1f} s in queue {worst.name!r}{verdict}"
    return Check("latency", ok, worst.latency, maximum, message)


def _memory(conn: redis.Redis, threshold: float) -> Check:
    info: dict[str, Any] = conn.info("memory")
    used = int(info.get("used_memory", 0))
    maximum = int(info.get("maxmemory", 0))
    if maximum <= 0:
        return Check("memory", True, None, threshold, f"{used} bytes used; maxmemory is not set")
    ratio = used / maximum
    ok = ratio < threshold
    verdict = "" if ok else f", at or above the threshold of {threshold:.0%}"
    message = f"{used} of {maximum} bytes of maxmemory used ({ratio:.1%}){verdict}"
    return Check("memory", ok, ratio, threshold, message)
