"""Cron poller: enqueues each tick of each enabled cron job once in the whole cluster.

The launcher runs one CronPoller thread in every process and stops it on
quiet and on stop. Ruby processes with sidekiq-cron run the same loop on the
same keys, and the two sides agree on one lock per tick:

    ZADD cron_job:<name>:enqueued <tick as a float> <tick as %Y-%m-%dT%H:%M:%SZ>

Only the poller whose ZADD adds the member (reply 1) pushes the job. The
member is made from the tick, never from the poll time, so every poller that
sees the tick writes the same string.

Polling. As in sidekiq-cron, the wait between cycles is random with the
average ``cron_poll_interval`` (uniform over [avg/2, 3 avg/2) below 10
processes, over [0, avg) from 10 on), not scaled by the process count. With
the default 30 s that stays inside the 60 s grace period, but a larger
interval, a shorter grace period or a line with seconds would let ticks go
unpolled. So each poller also wakes 1.2 to 1.5 s after every minute boundary
and after the next tick of every enabled job: while a process runs, every
tick is polled within about 1.5 s.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

import redis

from pyqueue import keys
from pyqueue.client import Client
from pyqueue.config import Settings
from pyqueue.cron_job import CronJob
from pyqueue.cron_schedule import CronLine, CronLineError, format_tick, parse_line
from pyqueue.cron_store import CronStore
from pyqueue.outage import OutageLog

logger = logging.getLogger(__name__)

# Before the first cycle, as in Sidekiq's pollers: a fixed part and a random
# part that spreads processes started together. The first cycle still comes
# before the current minute ends, so a tick seen at start is never older than
# the grace period when it is polled.
INITIAL_WAIT = 10.0
INITIAL_SPREAD = 5.0
# From this many processes on, the random wait is uniform over [0, avg).
MANY_PROCESSES = 10
# A tick counts from one second after it (fugit's previous_time), so an
# aligned wake-up comes 1.2 s after the tick, plus up to ALIGN_SPREAD at
# random so that processes do not all hit Redis in the same millisecond.
ALIGN_DELAY = 1.2
ALIGN_SPREAD = 0.3
# Enqueue markers older than this are trimmed after each enqueue.
REMEMBER_SECONDS = 86_400


class CronPoller:
    """Background poller that enqueues the due ticks of every enabled cron job.

    ``clock`` returns epoch seconds and ``rand`` a float in [0, 1); tests
    inject both. Errors in one job are logged and never stop the others.
    """

    def __init__(
        self,
        redis: redis.Redis,
        settings: Settings,
        client: Client,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.store = CronStore(redis, settings, client=client, clock=clock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = OutageLog(logger, "Redis")
        # Warnings already given, so that each is logged once per job, not per poll.
        self._warned: set[tuple[str, str]] = set()
        self._next_ticks: list[float] = []

    def start(self) -> None:
        """Start the poller thread; a second call while it runs does nothing.

        A ``cron_poll_interval`` of 0 or less turns cron off: no thread starts.
        """
        if self.settings.cron_poll_interval <= 0:
            logger.info(
                "cron poller off: cron_poll_interval is %s", self.settings.cron_poll_interval
            )
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pyqueue-cron", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling and wait up to ``timeout`` seconds for the thread to end."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def poll_once(self, now: float | None = None) -> int:
        """Enqueue every job whose latest tick is due at ``now``; return how many were enqueued.

        ``now`` defaults to the clock. Raises redis errors from listing the jobs.
        """
        moment = self.clock() if now is None else now
        enqueued = 0
        next_ticks: list[float] = []
        for job in self.store.all():
            try:
                line = self._line(job)
                if line is None or not job.enabled:
                    continue
                if self._enqueue_if_due(job, line, moment):
                    enqueued += 1
                # The earliest tick this poll could not see yet: a tick counts
                # from one second after it, so it may be at or before ``moment``.
                upcoming = line.next_after(math.floor(moment) - 1)
                if upcoming is not None:
                    next_ticks.append(upcoming)
            except Exception:
                logger.exception("cron job failed to enqueue name=%s class=%s", job.name, job.klass)
        self._next_ticks = next_ticks
        return enqueued

    def _line(self, job: CronJob) -> CronLine | None:
        try:
            return parse_line(job.cron, self.settings.cron_timezone)
        except CronLineError as exc:
            self._warn_once(job.name, f"cron:{job.cron}", "cron job skipped name=%s: %s", exc)
            return None

    def _enqueue_if_due(self, job: CronJob, line: CronLine, now: float) -> bool:
        """Run sidekiq-cron's checks in its order, then take the tick's lock and push."""
        tick = line.last_tick(now)
        if tick is None:
            return False
        # A tick older than the grace period is skipped, never caught up.
        if int(now) - tick > self.settings.cron_grace_period:
            return False
        if self._enqueued_since(job, tick):
            return False
        member = format_tick(tick)
        if self.redis.zadd(self.store.enqueued_key(job.name), {member: float(tick)}) != 1:
            return False
        jid = self.store.enqueue(job, now)
        self.redis.zremrangebyscore(
            self.store.enqueued_key(job.name), 0, f"({now - REMEMBER_SECONDS!r}"
        )
        logger.info(
            "cron enqueue name=%s class=%s queue=%s jid=%s tick=%s",
            job.name,
            job.klass,
            job.queue,
            jid,
            member,
        )
        return True

    def _enqueued_since(self, job: CronJob, tick: int) -> bool:
        """Return True when last_enqueue_time is at or after ``tick``.

        An empty or unreadable value counts as never enqueued; the enqueue
        marker still guards against a second enqueue of the tick.
        """
        if job.last_run is None:
            self._warn_once(
                job.name,
                f"last:{job.last_enqueue_time}",
                "cron job name=%s has no readable last_enqueue_time (%r); "
                "treating it as never enqueued",
                job.last_enqueue_time,
            )
            return False
        # NOTE: this is sidekiq-cron's rule and compares the enqueue time, not
        # the tick. A tick enqueued a whole period late (only possible when no
        # process polled for that long) therefore also skips the next tick.
        return int(job.last_run) >= tick

    def _warn_once(self, name: str, reason: str, message: str, *args: object) -> None:
        if (name, reason) in self._warned:
            return
        self._warned.add((name, reason))
        logger.warning(message, name, *args)

    def next_wait(self, now: float) -> float:
        """Return the seconds until the next cycle: random, but never past the next tick.

        The random part follows sidekiq-cron. The cap is the next minute
        boundary or the next tick of a job seen in the last cycle, whichever
        comes first. ALIGN_DELAY and up to ALIGN_SPREAD are added to the cap.
        """
        average = self.settings.cron_poll_interval
        if self.process_count() < MANY_PROCESSES:
            spread = average * self.rand() + average / 2
        else:
            spread = average * self.rand()
        return max(0.0, min(spread, self.seconds_to_aligned(now)))

    def initial_wait(self, now: float) -> float:
        """Return the seconds before the first cycle: 10 s + up to 5 s, but within this minute."""
        minute_end = (math.floor(now / 60) + 1) * 60 - 1
        return min(INITIAL_WAIT + INITIAL_SPREAD * self.rand(), max(0.0, minute_end - now))

    def seconds_to_aligned(self, now: float) -> float:
        """Return the seconds until just after the next minute boundary or known tick.

        Only ticks that a poll at ``now`` cannot see yet count: those after ``now - 1 s``.
        """
        unseen_after = now - 1
        boundary = (math.floor(unseen_after / 60) + 1) * 60
        due = min([boundary, *(tick for tick in self._next_ticks if tick > unseen_after)])
        return due - now + ALIGN_DELAY + ALIGN_SPREAD * self.rand()

    def process_count(self) -> int:
        """Return the number of registered processes, at least 1."""
        return max(int(self.redis.scard(keys.PROCESSES)), 1)

    def _run(self) -> None:
        self._stopping.wait(self.initial_wait(self.clock()))
        while not self._stopping.is_set():
            try:
                self.poll_once()
                wait = self.next_wait(self.clock())
                self._outage.recovered()
            except redis.RedisError as exc:
                self._outage.failed(exc)
                wait = self.settings.cron_poll_interval
            except Exception:
                logger.exception("cron poll failed")
                wait = self.settings.cron_poll_interval
            self._stopping.wait(wait)
