"""Counting the outcome of a fault run: completed, lost and run-twice jobs."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import redis

from tests.reliability import jobs
from tests.reliability.support import working_lists


@dataclasses.dataclass
class Row:
    """One line of the fault table."""

    fault: str
    fetch: str
    enqueued: int
    completed: int
    lost: int
    run_twice: int
    notes: str = ""
    command: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "fault", **dataclasses.asdict(self)}

    def describe(self) -> str:
        return (
            f"{self.fault} ({self.fetch}): enqueued {self.enqueued}, completed "
            f"{self.completed}, lost {self.lost}, run twice {self.run_twice}; {self.notes}"
        )


@dataclasses.dataclass
class LatencyRow:
    """Idle enqueue-to-start latency on one queue, in milliseconds."""

    fetch: str
    threads: int
    queue: str
    jobs: int
    p50_ms: float
    p99_ms: float
    command: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "latency", **dataclasses.asdict(self)}

    def describe(self) -> str:
        return (
            f"latency {self.fetch}, {self.threads} threads, queue {self.queue}: "
            f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms over {self.jobs} jobs"
        )


@dataclasses.dataclass
class Tally:
    """What happened to a list of jids."""

    enqueued: int
    completed: set[str]
    runs: dict[str, int]
    elsewhere: set[str]

    @property
    def lost(self) -> set[str]:
        return {jid for jid in self.runs if jid not in self.completed and jid not in self.elsewhere}

    @property
    def run_twice(self) -> set[str]:
        return {jid for jid, count in self.runs.items() if count >= 2}


def tally(conn: redis.Redis, jids: list[str]) -> Tally:
    """Count ``jids``: completed, run counts, and those still waiting in Redis.

    "Elsewhere" covers a queue, a working list, the retry, dead or schedule set:
    such a job is not lost, it waits or was moved aside on purpose.
    """
    done = {str(jid) for jid in conn.smembers(jobs.DONE)}
    waiting: set[str] = set()
    for key in conn.scan_iter("queue:*"):
        waiting |= _jids(conn.lrange(key, 0, -1))
    for raws in working_lists(conn).values():
        waiting |= _jids(raws)
    for key in ("retry", "dead", "schedule"):
        waiting |= _jids(conn.zrange(key, 0, -1))
    return Tally(len(jids), done & set(jids), jobs.run_counts(conn, jids), waiting & set(jids))


def _jids(raws: list[Any]) -> set[str]:
    found = set()
    for raw in raws:
        marker = '"jid":"'
        start = str(raw).find(marker)
        if start >= 0:
            found.add(str(raw)[start + len(marker) : start + len(marker) + 24])
    return found


def wait_until_settled(
    conn: redis.Redis, jids: list[str], timeout: float, quiet_for: float = 3.0
) -> Tally:
    """Wait until every jid completed, or nothing changed for ``quiet_for`` s; return the tally.

    Redis errors while waiting (a restart under test) are waited out.
    """
    deadline = time.monotonic() + timeout
    last = -1
    changed = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            done = int(conn.scard(jobs.DONE))
            busy = _busy(conn)
        except redis.RedisError:
            continue
        if done >= len(jids):
            break
        if done != last:
            last, changed = done, time.monotonic()
        elif time.monotonic() - changed > quiet_for and not busy:
            break
    return tally(conn, jids)


def wait_for_done(conn: redis.Redis, count: int, timeout: float) -> None:
    """Wait until at least ``count`` jobs completed; Redis errors are waited out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(conn.scard(jobs.DONE)) >= count:
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} jobs completed within {timeout} s")


def _busy(conn: redis.Redis) -> bool:
    # Jobs wait in a queue or run from a working list (reliable fetch only).
    lists = [*conn.scan_iter("queue:*"), *conn.scan_iter("pyqueue:working:*")]
    return any(int(conn.llen(key)) for key in lists)
