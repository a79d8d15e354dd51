"""Queues as operators see them: sizes, latency, paged job lists, delete and clear.

A queue is the LIST ``queue:<name>``: clients LPUSH new jobs at the head and
workers BRPOP the oldest from the tail, so index 0 is the newest job and
index -1 the oldest. Reads are live; a job may move between two calls.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any, cast

import redis
from redis.exceptions import ResponseError

from pyqueue import keys
from pyqueue.api.base import (
    LIST,
    NOT_UTF8,
    SET,
    KeyTypeError,
    connection,
    execute_reads,
    is_wrong_type,
    key_type_error,
    text,
    wrong_type_message,
)
from pyqueue.api.records import JobRecord, read_job

DEFAULT_PAGE_SIZE = 25
WINDOW = 100


@dataclasses.dataclass(frozen=True)
class QueueSummary:
    """One row of the queue list; ``latency`` is the age of the oldest job in seconds."""

    name: str
    size: int
    latency: float
    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class QueueList:
    """Every queue named in the ``queues`` set, sorted by name."""

    queues: tuple[QueueSummary, ...]
    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class JobPage:
    """A window of a queue: ``total`` is the queue size when the page was read."""

    queue: str
    jobs: tuple[JobRecord, ...]
    total: int
    offset: int
    newest_first: bool
    problems: tuple[str, ...]


class Queue:
    """The jobs waiting in one queue (``Sidekiq::Queue``)."""

    def __init__(self, name: str, redis: redis.Redis | None = None) -> None:
        self.name = name
        self.key = keys.queue(name)
        self.redis = connection(redis)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    @classmethod
    def names(cls, redis: redis.Redis | None = None) -> list[str]:
        """Return the sorted names in the ``queues`` set; raise KeyTypeError if it is no set."""
        conn = connection(redis)
        try:
            return sorted(str(name) for name in conn.sscan_iter(keys.QUEUES, count=1000))
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise key_type_error(conn, keys.QUEUES, SET) from None
            raise

    @classmethod
    def all(cls, redis: redis.Redis | None = None) -> list[Queue]:
        """Return every known queue, sorted by name."""
        conn = connection(redis)
        return [cls(name, conn) for name in cls.names(conn)]

    @classmethod
    def summaries(cls, redis: redis.Redis | None = None, now: float | None = None) -> QueueList:
        """Read size and latency of every queue in one pipeline; bad data goes to problems."""
        conn = connection(redis)
        try:
            names = cls.names(conn)
        except KeyTypeError as exc:
            return QueueList(queues=(), problems=(str(exc),))
        pipe = conn.pipeline(transaction=False)
        for name in names:
            pipe.llen(keys.queue(name))
            pipe.lindex(keys.queue(name), -1)
        replies = execute_reads(pipe)
        if replies is None:
            return QueueList(queues=(), problems=(NOT_UTF8,))
        current = time.time() if now is None else now
        rows = [
            _summary(conn, name, replies[2 * i], replies[2 * i + 1], current)
            for i, name in enumerate(names)
        ]
        return QueueList(queues=tuple(rows), problems=())

    def size(self) -> int:
        """Return the number of waiting jobs; raise KeyTypeError if the key is no list."""
        try:
            return int(self.redis.llen(self.key))
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise key_type_error(self.redis, self.key, LIST) from None
            raise

    def latency(self, now: float | None = None) -> float:
        """Return the age in seconds of the oldest job (0.0 for an empty queue)."""
        try:
            raw = text(self.redis.lindex(self.key, -1))
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise key_type_error(self.redis, self.key, LIST) from None
            raise
        return oldest_latency(raw, time.time() if now is None else now)

    def summary(self, now: float | None = None) -> QueueSummary:
        """Return size, latency and problems of this queue; a wrong key type is a problem."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.key)
        pipe.lindex(self.key, -1)
        replies = execute_reads(pipe)
        if replies is None:
            return QueueSummary(self.name, 0, 0.0, (NOT_UTF8,))
        size, oldest = replies
        current = time.time() if now is None else now
        return _summary(self.redis, self.name, size, oldest, current)

    def page(
        self, offset: int = 0, count: int = DEFAULT_PAGE_SIZE, newest_first: bool = True
    ) -> JobPage:
        """Read ``count`` jobs from position ``offset`` with one LRANGE; bad data goes to problems.

        LRANGE costs O(count + distance of the page from the nearer end of the
        list), so the first and the last pages are cheap at any queue size.
        """
        if offset < 0 or count < 1:
            raise ValueError(f"page needs offset >= 0 and count >= 1, got {offset} and {count}")
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.key)
        pipe.lrange(self.key, *_window(offset, count, newest_first))
        replies = execute_reads(pipe)
        if replies is None:
            return JobPage(self.name, (), 0, offset, newest_first, (NOT_UTF8,))
        size, items = replies
        if is_wrong_type(size) or is_wrong_type(items):
            problem = wrong_type_message(self.redis, self.key, LIST)
            return JobPage(self.name, (), 0, offset, newest_first, (problem,))
        raws = [text(item) or "" for item in cast(list[Any], items)]
        if not newest_first:
            raws.reverse()
        jobs = tuple(read_job(raw, in_queue=True) for raw in raws)
        return JobPage(self.name, jobs, int(size), offset, newest_first, ())

    def jobs(self, newest_first: bool = True, window: int = WINDOW) -> Iterator[JobRecord]:
        """Yield every job, reading ``window`` jobs per LRANGE.

        Raises KeyTypeError if the key is no list. The queue changes while it
        is read: a job pushed meanwhile may shift a window so that one job is
        yielded twice, and a job fetched meanwhile may be skipped.
        """
        offset = 0
        while True:
            page = self.page(offset, window, newest_first)
            if page.problems:
                raise key_type_error(self.redis, self.key, LIST)
            yield from page.jobs
            if len(page.jobs) < window:
                return
            offset += window

    def find_job(self, jid: str) -> JobRecord | None:
        """Return the job with ``jid``, or None; reads the whole queue in windows."""
        for record in self.jobs():
            if record.jid == jid:
                return record
        return None

    def delete(self, job: JobRecord | str) -> bool:
        """Remove one element equal to the job's exact raw string; False if it was gone."""
        raw = job.raw if isinstance(job, JobRecord) else job
        try:
            return int(self.redis.lrem(self.key, 1, raw)) > 0
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise key_type_error(self.redis, self.key, LIST) from None
            raise

    def clear(self) -> int:
        """Delete the queue and its name in ``queues``; return the number of jobs removed.

        A key of the wrong type is deleted too, which is how an operator fixes it.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.llen(self.key)
        pipe.unlink(self.key)
        pipe.srem(keys.QUEUES, self.name)
        size = pipe.execute(raise_on_error=False)[0]
        return 0 if isinstance(size, Exception) else int(size)


def oldest_latency(raw: str | None, now: float) -> float:
    """Return the latency of a queue whose oldest element is ``raw``, as Sidekiq reads it."""
    if raw is None:
        return 0.0
    return max(0.0, read_job(raw, in_queue=True).latency(now))


def _window(offset: int, count: int, newest_first: bool) -> tuple[int, int]:
    if newest_first:
        return offset, offset + count - 1
    # Count from the tail: the oldest job is at -1. Redis clamps a start
    # before the head to 0, so the last page may be short.
    return -(offset + count), -(offset + 1)


def _summary(conn: redis.Redis, name: str, size: Any, oldest: Any, now: float) -> QueueSummary:
    key = keys.queue(name)
    if is_wrong_type(size) or is_wrong_type(oldest):
        return QueueSummary(name, 0, 0.0, (wrong_type_message(conn, key, LIST),))
    raw = text(oldest)
    problems: tuple[str, ...] = ()
    if raw is not None:
        record = read_job(raw, in_queue=True)
        problems = tuple(f"oldest job: {problem}" for problem in record.problems)
    return QueueSummary(name, int(size), oldest_latency(raw, now), problems)
