"""Cluster-wide counters: the numbers on the dashboard and the daily history.

Workers add to ``stat:processed`` and ``stat:failed`` (running totals) and to
one key per UTC day, ``stat:processed:YYYY-MM-DD``, kept five years. The other
figures are read from the queues, sets and process hashes at call time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import redis
from redis.exceptions import ResponseError

from pyqueue import keys
from pyqueue.api.base import (
    HASH,
    LIST,
    NOT_UTF8,
    SET,
    STRING,
    ZSET,
    KeyTypeError,
    connection,
    execute_reads,
    is_wrong_type,
    read_int,
    wrong_type_message,
)
from pyqueue.api.queues import Queue

STATS = ("processed", "failed")
# Sidekiq keeps the daily keys five years and reads no further back.
MAX_HISTORY_DAYS = 5 * 365

STAT_KEYS = (keys.STAT_PROCESSED, keys.STAT_FAILED)
SIZE_KEYS = (keys.SCHEDULE, keys.RETRY, keys.DEAD, keys.PROCESSES)
SIZE_TYPES = (ZSET, ZSET, ZSET, SET)


@dataclasses.dataclass(frozen=True)
class StatsSnapshot:
    """The dashboard figures read at one moment; ``queues`` maps queue name to size."""

    processed: int
    failed: int
    enqueued: int
    scheduled_size: int
    retry_size: int
    dead_size: int
    processes_size: int
    workers_size: int
    default_queue_latency: float
    queues: dict[str, int]
    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class History:
    """Daily counts, newest day first; keys are UTC dates as ``YYYY-MM-DD``."""

    processed: dict[str, int]
    failed: dict[str, int]
    problems: tuple[str, ...]


class Stats:
    """Reads and resets the counters (``Sidekiq::Stats``)."""

    def __init__(self, redis: redis.Redis | None = None) -> None:
        self.redis = connection(redis)

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        """Read every figure with three pipelines and two SSCANs; bad data goes to problems."""
        problems: list[str] = []
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.STAT_PROCESSED)
        pipe.get(keys.STAT_FAILED)
        for key in (keys.SCHEDULE, keys.RETRY, keys.DEAD):
            pipe.zcard(key)
        pipe.scard(keys.PROCESSES)
        replies = pipe.execute(raise_on_error=False)

        counts = [
            self._counter(reply, key, problems)
            for reply, key in zip(replies[:2], STAT_KEYS, strict=True)
        ]
        sizes = [
            self._size(reply, key, expected, problems)
            for reply, key, expected in zip(replies[2:6], SIZE_KEYS, SIZE_TYPES, strict=True)
        ]
        latency = self._latency(time.time() if now is None else now, problems)
        queues = self._queue_sizes(problems)
        return StatsSnapshot(
            processed=counts[0],
            failed=counts[1],
            enqueued=sum(queues.values()),
            scheduled_size=sizes[0],
            retry_size=sizes[1],
            dead_size=sizes[2],
            processes_size=sizes[3],
            workers_size=self._busy(problems),
            default_queue_latency=latency,
            queues=queues,
            problems=tuple(problems),
        )

    def history(self, days: int = 30, end: dt.date | None = None) -> History:
        """Read the daily counts of ``days`` days ending at ``end`` (default: today, UTC).

        One MGET per statistic. Raises ValueError for ``days`` outside 1..1825,
        the five years that the daily keys live.
        """
        if not 1 <= days <= MAX_HISTORY_DAYS:
            raise ValueError(f"days must be between 1 and {MAX_HISTORY_DAYS}, got {days}")
        last = end if end is not None else dt.datetime.now(dt.UTC).date()
        dates = [last - dt.timedelta(days=offset) for offset in range(days)]
        problems: list[str] = []
        result: dict[str, dict[str, int]] = {}
        for stat in STATS:
            names = [keys.stat_daily(stat, day) for day in dates]
            values = self.redis.mget(names)
            result[stat] = {
                day.isoformat(): self._counter(value, name, problems)
                for day, name, value in zip(dates, names, values, strict=True)
            }
        return History(result["processed"], result["failed"], tuple(problems))

    def reset(self, *stats: str) -> None:
        """Set the running totals to 0: ``processed``, ``failed`` or both (the default).

        The daily keys are left alone, as Sidekiq leaves them. Raises ValueError
        for another name.
        """
        chosen = stats or STATS
        unknown = [stat for stat in chosen if stat not in STATS]
        if unknown:
            raise ValueError(f"cannot reset {unknown[0]!r}; choose from {', '.join(STATS)}")
        self.redis.mset({f"stat:{stat}": 0 for stat in chosen})

    def _counter(self, reply: Any, key: str, problems: list[str]) -> int:
        if is_wrong_type(reply):
            problems.append(wrong_type_message(self.redis, key, STRING))
            return 0
        return read_int(reply, key, problems)

    def _size(self, reply: Any, key: str, expected: str, problems: list[str]) -> int:
        if is_wrong_type(reply):
            problems.append(wrong_type_message(self.redis, key, expected))
            return 0
        return int(reply)

    def _latency(self, now: float, problems: list[str]) -> float:
        summary = Queue("default", self.redis).summary(now)
        problems.extend(p for p in summary.problems if not p.startswith("oldest job: "))
        return summary.latency

    def _queue_sizes(self, problems: list[str]) -> dict[str, int]:
        try:
            names = Queue.names(self.redis)
        except KeyTypeError as exc:
            problems.append(str(exc))
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(keys.queue(name))
        replies = execute_reads(pipe)
        if replies is None:
            problems.append(NOT_UTF8)
            return {}
        return {
            name: self._size(reply, keys.queue(name), LIST, problems)
            for name, reply in zip(names, replies, strict=True)
        }

    def _busy(self, problems: list[str]) -> int:
        try:
            identities = [str(member) for member in self.redis.sscan_iter(keys.PROCESSES)]
        except ResponseError as exc:
            if not is_wrong_type(exc):
                raise
            return 0  # the SCARD above already reported the wrong type
        pipe = self.redis.pipeline(transaction=False)
        for identity in identities:
            pipe.hget(identity, "busy")
        replies = pipe.execute(raise_on_error=False)
        total = 0
        for identity, reply in zip(identities, replies, strict=True):
            if is_wrong_type(reply):
                problems.append(wrong_type_message(self.redis, identity, HASH))
                continue
            total += read_int(reply, f"busy of {identity}", problems)
        return total
