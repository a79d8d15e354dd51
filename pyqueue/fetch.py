"""Fetch strategies: how a processor thread takes the next job off its queues.

A fetcher returns a ``UnitOfWork`` (the queue and the raw job string). The
processor calls ``acknowledge()`` once the job is finished, and ``requeue()``
when it must hand the job back untouched. The manager calls
``bulk_requeue(units)`` for the jobs still running when the shutdown timeout
ends.

``BasicFetch`` is Sidekiq's: ``BRPOP queue:a queue:b ... 2``. A job popped by
a process that then crashes is lost, because Redis keeps no copy while the
job runs; that is Sidekiq's open-source behaviour.

``ReliableFetch`` (the default) moves each job atomically from its queue into
the process's working list ``pyqueue:working:<identity>`` and removes it from
there when the job is acknowledged. If the process dies first, the copy
stays, and ``pyqueue.recovery`` pushes it back to its queue: a job runs at
least once, and twice only when its process died or lost Redis while it ran.
Both implement the same ``Fetcher`` protocol, so the processor does not change.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import redis

from pyqueue import keys
from pyqueue.config import Settings
from pyqueue.connection import FETCH_TIMEOUT
from pyqueue.errors import ConfigError
from pyqueue.outage import OutageLog

logger = logging.getLogger(__name__)

# After a failed fetch the thread waits this long, so an outage does not spin.
ERROR_PAUSE = 1.0
# Pool connections kept free of blocking fetches for the heartbeat, the
# scheduled and cron pollers and recovery, so that idle threads cannot starve them.
RESERVED_CONNECTIONS = 4


@dataclass(eq=False)
class UnitOfWork:
    """A fetched job: the queue name (without ``queue:``) and the raw job string.

    ``requeued`` turns True when the job was handed back to its queue; the
    processor then neither counts nor acknowledges it.
    """

    queue: str
    raw: str
    fetcher: Fetcher = field(repr=False)
    requeued: bool = False

    def acknowledge(self) -> None:
        """Tell the fetcher the job is finished (run, retried or dead)."""
        self.fetcher.acknowledge(self)

    def requeue(self) -> None:
        """Push the job back to its queue, unchanged, so it is fetched next."""
        self.fetcher.requeue(self)


class Fetcher(Protocol):
    """Interface of a fetch strategy, as the processor and the manager use it."""

    def retrieve_work(self) -> UnitOfWork | None:
        """Block for at most a few seconds; return a job or None when there was none."""
        ...

    def acknowledge(self, unit: UnitOfWork) -> None: ...

    def requeue(self, unit: UnitOfWork) -> None: ...

    def bulk_requeue(self, units: Sequence[UnitOfWork]) -> None: ...

    def drain(self) -> None:
        """Hand back whatever the fetcher still holds, once the processors have stopped."""
        ...


def expand_queues(queues: Sequence[tuple[str, int]]) -> list[str]:
    """Repeat each queue name ``max(weight, 1)`` times, as Sidekiq does."""
    expanded: list[str] = []
    for name, weight in queues:
        expanded.extend([name] * max(weight, 1))
    return expanded


def queue_order(queues: Sequence[tuple[str, int]], rng: random.Random | None = None) -> list[str]:
    """Return the queue names in the order in which the next BRPOP tries them.

    Strict mode (every weight is 0) keeps the configured order. Otherwise the
    weighted list is shuffled and duplicates dropped on every call, so a queue
    comes first with probability weight / total weight. Weights only decide
    which non-empty queue wins a fetch. They do not reserve threads.
    """
    expanded = expand_queues(queues)
    if all(weight == 0 for _, weight in queues):
        return list(dict.fromkeys(expanded))
    (rng or random).shuffle(expanded)
    return list(dict.fromkeys(expanded))


class FetchGate:
    """Caps how many threads wait in a blocking fetch at the same time.

    A blocking fetch holds a pool connection for up to 2 s. With more threads
    than pool connections, idle threads would hold every connection, and the
    heartbeat, the pollers and acknowledgements would queue behind them (the
    heartbeat long enough for the process to look dead). ``limit`` None means
    no cap.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit) if limit is not None else None

    @contextmanager
    def slot(self, timeout: float) -> Iterator[bool]:
        """Yield True while holding a slot, or False when none came free within ``timeout`` s."""
        if self._slots is None:
            yield True
            return
        acquired = self._slots.acquire(timeout=timeout)
        try:
            yield acquired
        finally:
            if acquired:
                self._slots.release()


class JobBuffer:
    """Fetched jobs waiting for a processor thread, oldest first, shared by a process's threads.

    A fetcher that takes several jobs per round trip hands out the first and
    buffers the rest. ``close()`` at a stop empties the buffer, and from
    then on ``add`` returns the jobs instead of buffering them, so that no
    job lands in the buffer after it was handed back.
    """

    def __init__(self) -> None:
        self._units: collections.deque[UnitOfWork] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        return len(self._units)

    def take(self) -> UnitOfWork | None:
        """Return the oldest buffered job, or None when the buffer is empty."""
        try:
            return self._units.popleft()
        except IndexError:
            return None

    def add(self, units: Sequence[UnitOfWork]) -> list[UnitOfWork]:
        """Buffer ``units``; return them instead when the buffer is closed."""
        with self._lock:
            if self._closed:
                return list(units)
            self._units.extend(units)
            return []

    def close(self) -> list[UnitOfWork]:
        """Stop buffering; return the buffered jobs, oldest first."""
        with self._lock:
            self._closed = True
            units = list(self._units)
            self._units.clear()
            return units


class BasicFetch:
    """Sidekiq's fetch: a blocking pop from the tail of the queue lists.

    ``sleep`` is injectable so tests of the error path do not wait.
    ``blocking_limit`` caps the threads inside BRPOP at once (see FetchGate).
    """

    def __init__(
        self,
        conn: redis.Redis,
        queues: Sequence[tuple[str, int]],
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        blocking_limit: int | None = None,
    ) -> None:
        self.redis = conn
        self.queues = tuple(queues)
        self.strict = all(weight == 0 for _, weight in self.queues)
        self._strict_keys = [keys.queue(name) for name in queue_order(self.queues)]
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._gate = FetchGate(blocking_limit)
        self.outage = OutageLog(logger, "Redis")

    def queue_keys(self) -> list[str]:
        """Return the ``queue:<name>`` keys in the order of the next BRPOP."""
        if self.strict:
            return self._strict_keys
        return [keys.queue(name) for name in queue_order(self.queues, self._rng)]

    def retrieve_work(self) -> UnitOfWork | None:
        # BRPOP waits at most FETCH_TIMEOUT (2 s), so an idle thread notices a
        # stop quickly and an empty queue costs one command per 2 s, never a spin.
        try:
            with self._gate.slot(FETCH_TIMEOUT) as admitted:
                if not admitted:
                    return None
                result = self.redis.brpop(self.queue_keys(), timeout=FETCH_TIMEOUT)
        except redis.RedisError as exc:
            self.outage.failed(exc)
            self._sleep(ERROR_PAUSE)
            return None
        self.outage.recovered()
        if result is None:
            return None
        key, raw = result
        return UnitOfWork(keys.queue_name(str(key)), str(raw), self)

    def acknowledge(self, unit: UnitOfWork) -> None:
        # Nothing to do: BRPOP already removed the job from Redis.
        return None

    def requeue(self, unit: UnitOfWork) -> None:
        self.bulk_requeue([unit])

    def bulk_requeue(self, units: Sequence[UnitOfWork]) -> None:
        """RPUSH each raw string back to the tail of its queue, one pipeline in all.

        RPUSH puts the job where BRPOP takes from, so it is the next job
        fetched, and ``enqueued_at`` stays as it was. On a Redis error no unit
        is marked requeued and the error propagates, so the caller can log
        the jobs as lost.
        """
        if not units:
            return
        by_queue: dict[str, list[str]] = {}
        for unit in units:
            by_queue.setdefault(unit.queue, []).append(unit.raw)
        pipe = self.redis.pipeline(transaction=False)
        for queue, raws in by_queue.items():
            pipe.rpush(keys.queue(queue), *raws)
        pipe.execute()
        for unit in units:
            unit.requeued = True

    def drain(self) -> None:
        # Nothing to do: Redis keeps no copy of the jobs this process fetched.
        return None


def build_fetcher(settings: Settings, conn: redis.Redis, identity: str) -> Fetcher:
    """Return the fetch strategy that ``settings.fetch`` names: reliable or basic."""
    limit = blocking_limit(settings)
    if settings.fetch == "basic":
        # Imported here because prefetch builds on this module.
        from pyqueue.prefetch import PrefetchFetch, batch_size_for

        batch_size = batch_size_for(settings.concurrency)
        return PrefetchFetch(conn, settings.queues, batch_size=batch_size, blocking_limit=limit)
    if settings.fetch == "reliable":
        # Imported here because reliable_fetch builds on this module.
        from pyqueue.reliable_fetch import ReliableFetch

        queue_count = len(settings.queue_names)
        if settings.concurrency < queue_count:
            logger.warning(
                "reliable fetch with %d threads for %d queues: while the process is idle, "
                "a queue without a waiting thread is checked every 2 s, so its jobs start "
                "up to 2 s late; set concurrency to at least the number of queues",
                settings.concurrency,
                queue_count,
            )
        from pyqueue.prefetch import batch_size_for

        return ReliableFetch(
            conn,
            settings.queues,
            identity,
            batch_size=batch_size_for(settings.concurrency),
            blocking_limit=limit,
        )
    raise ConfigError(f"setting fetch is {settings.fetch!r}; choose reliable or basic")


def blocking_limit(settings: Settings) -> int | None:
    """Return the cap on threads in a blocking fetch, or None when the pool has room for all."""
    spare = settings.pool_size - RESERVED_CONNECTIONS
    if spare >= settings.concurrency:
        return None
    return max(spare, 1)
