"""Scheduled poller: moves due jobs from the ``retry`` and ``schedule`` sets to their queues.

The launcher runs one Poller thread per process and stops it on quiet and on
stop. Each cycle pops due members one at a time with a Lua script, ``retry``
first and then ``schedule``, and re-pushes each through the Client, so client
middleware runs and ``enqueued_at`` is new. Only the script removes a member,
so two pollers, Ruby or Python, never push the same job twice.

Interval. As in Sidekiq 7, the average wait between cycles is
``processes x average_scheduled_poll_interval``, so the total poll load on
Redis stays the same however many processes run. On its own that lets a job
scheduled one second ahead start up to a whole interval late: about a minute
with 12 processes and the 5 s default. So between cycles the poller also
peeks at the earliest score of both sets (``ZRANGE key 0 0 WITHSCORES``,
O(log n)) every ``peek_interval`` seconds (1 s by default) and runs a cycle as
soon as that score is due. A job is then late by at most about
``peek_interval``, whatever the process count, at the cost of one pipelined
read per process per second.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from pyqueue import keys
from pyqueue.client import Client
from pyqueue.config import Settings
from pyqueue.errors import ArgumentError, PayloadError
from pyqueue.outage import OutageLog
from pyqueue.payload import decode
from pyqueue.retry import kill

logger = logging.getLogger(__name__)

POP_DUE_SCRIPT = """
-- Remove and return the earliest member of a sorted set whose score is due.
-- KEYS[1]: the sorted set (retry or schedule)
-- ARGV[1]: now, in epoch seconds, as a decimal string
-- Returns: the removed member, or nil when no score is <= now.
local due = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, 1)
local member = due[1]
if member then
  redis.call("ZREM", KEYS[1], member)
  return member
end
return nil
"""

# The retry set is polled first, as Sidekiq does.
POLLED_SETS = (keys.RETRY, keys.SCHEDULE)
# The first cycle waits 10 s so that the heartbeats of processes starting
# together are registered and the process count behind the interval is right.
# The random part spreads those processes out.
INITIAL_WAIT = 10.0
INITIAL_SPREAD = 5.0
PEEK_INTERVAL = 1.0
# From this many processes on, the wait is uniform over [0, avg) instead of [avg/2, 1.5 avg).
MANY_PROCESSES = 10
CLEANUP_LOCK_SECONDS = 60


class Poller:
    """Moves due retry and scheduled jobs to their queues on a background thread.

    ``clock`` returns epoch seconds and ``rand`` a float in [0, 1). Tests
    inject both. ``peek_interval`` is the period in seconds of the
    earliest-score peek, and None turns the peek off to poll exactly as
    Sidekiq 7 does.
    """

    def __init__(
        self,
        redis: redis.Redis,
        settings: Settings,
        client: Client,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        peek_interval: float | None = PEEK_INTERVAL,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.client = client
        self.clock = clock
        self.rand = rand
        self.peek_interval = peek_interval
        self._pop_due = redis.register_script(POP_DUE_SCRIPT)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage = OutageLog(logger, "Redis")

    def start(self) -> None:
        """Start the poller thread. A second call while it runs does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pyqueue-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling and wait up to ``timeout`` seconds for the thread to end.

        A cycle in progress stops after the job it is moving.
        """
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def poll_once(self) -> int:
        """Move every due job, retry set first, and return how many were moved."""
        moved = 0
        for key in POLLED_SETS:
            while not self._stopping.is_set():
                member = self._pop_due(keys=[key], args=[repr(self.clock())])
                if member is None:
                    break
                self._enqueue(key, _text(member))
                moved += 1
        return moved

    def next_wait(self) -> float:
        """Return the seconds until the next cycle, randomised as Sidekiq 7 does."""
        processes = self.process_count()
        average = self.settings.poll_interval_average
        if average is None:
            average = processes * self.settings.average_scheduled_poll_interval
        if processes < MANY_PROCESSES:
            return average * self.rand() + average / 2
        return average * self.rand()

    def initial_wait(self) -> float:
        """Return the seconds to wait before the first cycle.

        The fixed 10 s part exists only to let the process count settle, so a
        configured ``poll_interval_average`` leaves it out.
        """
        fixed = INITIAL_WAIT if self.settings.poll_interval_average is None else 0.0
        return fixed + INITIAL_SPREAD * self.rand()

    def process_count(self) -> int:
        """Return the number of registered processes, at least 1."""
        return max(int(self.redis.scard(keys.PROCESSES)), 1)

    def seconds_until_due(self) -> float | None:
        """Return the seconds until the earliest retry or scheduled job is due.

        The result is 0 or less when a job is due now, and None when both sets
        are empty.
        """
        pipe = self.redis.pipeline(transaction=False)
        for key in POLLED_SETS:
            pipe.zrange(key, 0, 0, withscores=True)
        scores = [float(entries[0][1]) for entries in pipe.execute() if entries]
        return min(scores) - self.clock() if scores else None

    def _enqueue(self, key: str, member: str) -> None:
        try:
            job = decode(member)
            # An "at" field would send the job straight back to the schedule set.
            job.pop("at", None)
            self.client.push(job)
        except (PayloadError, ArgumentError) as exc:
            logger.error(
                "a member of %s is not a valid job, moved it to the dead set: %s", key, exc
            )
            kill(self.redis, member, self.settings, now=self.clock())
        except Exception:
            self._restore(key, member)
            raise

    def _restore(self, key: str, member: str) -> None:
        # The script already removed the member, so it goes back, due now. If
        # the push failed after its LPUSH, the job then runs twice, but it is
        # lost only when Redis also rejects this write.
        try:
            self.redis.zadd(key, {member: self.clock()})
        except redis.RedisError as exc:
            logger.error("could not push a due job or put it back in %s, it is lost: %s", key, exc)

    def _run(self) -> None:
        self._wait(self.initial_wait(), early=True)
        self._attempt(lambda: cleanup_processes(self.redis))
        while not self._stopping.is_set():
            healthy = self._attempt(self.poll_once)
            # After a failed cycle, wait a full interval so that a due job
            # that cannot be moved does not start a busy loop.
            self._wait(self._safe_next_wait(), early=healthy)

    def _wait(self, seconds: float, early: bool) -> None:
        """Sleep ``seconds``, returning sooner on stop or, if ``early``, when a job is due."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            step = remaining
            if early and self.peek_interval is not None:
                due_in = self._peek()
                if due_in is not None and due_in <= 0:
                    return
                step = min(step, self.peek_interval, due_in if due_in is not None else step)
            self._stopping.wait(step)

    def _peek(self) -> float | None:
        try:
            return self.seconds_until_due()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            return None

    def _safe_next_wait(self) -> float:
        try:
            return self.next_wait()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            return self.settings.average_scheduled_poll_interval

    def _attempt(self, action: Callable[[], object]) -> bool:
        """Run ``action`` and return whether it succeeded, logging an error instead of raising it.

        A Redis outage is logged once when it starts and once when it ends.
        Any other error is a bug in pyqueue or in client middleware, so it is
        logged with its traceback on every cycle.
        """
        try:
            action()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            return False
        except Exception:
            logger.exception("scheduled poller cycle failed, trying again next cycle")
            return False
        self.outage.recovered()
        return True


def cleanup_processes(redis: redis.Redis) -> int:
    """Remove processes whose heartbeat hash has expired from the ``processes`` set.

    Returns how many were removed. At most one process in the cluster runs
    the cleanup per minute, because it first takes the ``process_cleanup``
    lock (the key Sidekiq 7 uses) and returns 0 while the lock is held.
    """
    if not redis.set(keys.PROCESS_CLEANUP, "1", nx=True, ex=CLEANUP_LOCK_SECONDS):
        return 0
    identities = [_text(identity) for identity in redis.sscan_iter(keys.PROCESSES)]
    if not identities:
        return 0
    pipe = redis.pipeline(transaction=False)
    for identity in identities:
        pipe.hget(identity, "info")
    # A key of another type gives an error in its slot; such a member is left alone.
    infos = pipe.execute(raise_on_error=False)
    stale = [identity for identity, info in zip(identities, infos, strict=True) if info is None]
    if stale:
        redis.srem(keys.PROCESSES, *stale)
        logger.info("removed %d expired processes from the process set", len(stale))
    return len(stale)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
