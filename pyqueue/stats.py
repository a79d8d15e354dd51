"""In-memory state of a worker process that the heartbeat writes to Redis.

Processor threads count executions in ``Counters`` and register running jobs
in ``WorkState``. The heartbeat flushes the counters to ``stat:*`` and copies
the running jobs into ``<identity>:work`` on every beat, as Sidekiq 7 does,
so a job costs no extra Redis round trip for its statistics.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from pyqueue import keys
from pyqueue.payload import dumps


class Counters:
    """Processed and failed executions not yet written to Redis (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processed = 0
        self._failed = 0

    def record(self, failed: bool) -> None:
        """Count one execution; a failed one counts as both processed and failed."""
        with self._lock:
            self._processed += 1
            if failed:
                self._failed += 1

    def take(self) -> tuple[int, int]:
        """Return (processed, failed) and reset both to 0."""
        with self._lock:
            counts = (self._processed, self._failed)
            self._processed = 0
            self._failed = 0
        return counts

    def restore(self, processed: int, failed: int) -> None:
        """Add counts back after a failed flush, so nothing is lost."""
        with self._lock:
            self._processed += processed
            self._failed += failed

    def pending(self) -> tuple[int, int]:
        with self._lock:
            return self._processed, self._failed


def flush(
    conn: redis.Redis, counters: Counters, clock: Callable[[], float] = time.time
) -> tuple[int, int]:
    """Write the pending counts to the total and daily stat keys; return what was written.

    One pipeline (not a transaction) of INCRBY and EXPIRE, as Sidekiq 7 sends
    it, and nothing at all when both counts are 0. The daily keys use the UTC
    date and live five years. If Redis fails, the counts go back into
    ``counters`` and the error is raised.
    """
    processed, failed = counters.take()
    if processed + failed == 0:
        return 0, 0
    day = dt.datetime.fromtimestamp(clock(), tz=dt.UTC).date()
    try:
        pipe = conn.pipeline(transaction=False)
        for total, stat, count in (
            (keys.STAT_PROCESSED, "processed", processed),
            (keys.STAT_FAILED, "failed", failed),
        ):
            daily = keys.stat_daily(stat, day)
            pipe.incrby(total, count)
            pipe.incrby(daily, count)
            pipe.expire(daily, keys.STAT_DAILY_TTL)
        pipe.execute()
    except BaseException:
        counters.restore(processed, failed)
        raise
    return processed, failed


@dataclass(frozen=True)
class WorkEntry:
    """One running job as the Web UI's Busy page reads it."""

    queue: str
    payload: str  # the raw job string as fetched, so readers see exactly what ran
    run_at: int  # epoch seconds when the job started

    def encode(self) -> str:
        return dumps({"queue": self.queue, "payload": self.payload, "run_at": self.run_at})


class WorkState:
    """Running jobs of this process by thread id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, WorkEntry] = {}

    def register(self, tid: str, queue: str, raw: str, run_at: float | None = None) -> None:
        started = time.time() if run_at is None else run_at
        with self._lock:
            self._entries[tid] = WorkEntry(queue, raw, int(started))

    def unregister(self, tid: str) -> None:
        with self._lock:
            self._entries.pop(tid, None)

    def snapshot(self) -> dict[str, WorkEntry]:
        with self._lock:
            return dict(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
