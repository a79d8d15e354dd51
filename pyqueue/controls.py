"""Job controls: unique locks, expiry, time limits and rate-limit reschedules.

Push side: ``push`` and ``push_bulk``, which ``Job.perform_async`` and the
other push methods call, turn the job options ``unique``, ``unique_ttl``,
``unique_key``, ``on_conflict``, ``timeout`` and ``expires_in`` into payload
fields and take push-time unique locks. A plain ``Client.push`` does neither.

Worker side: the launcher wraps its server middleware chain with
``server_chain``, whose JobControls middleware does, for each job:

1. drop it unrun when its ``expires_at`` has passed;
2. catch OverLimit from the job and put the job in the schedule set with a
   backoff, instead of failing it;
3. take or release the unique lock as the lock type requires;
4. run the rest of the chain and ``perform`` under the job's ``timeout``.

A job without these fields passes straight through. A skipped or
rescheduled job returns normally, so the processor counts it as processed
(never as failed) and logs ``done`` after the control's own log line.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from pyqueue import client as client_module
from pyqueue import expiry, keys, unique
from pyqueue.config import Settings
from pyqueue.errors import ArgumentError, JobDefinitionError
from pyqueue.middleware import ServerChain, ServerMiddleware
from pyqueue.payload import Payload, dumps
from pyqueue.ratelimit import OverLimit
from pyqueue.timeout import Watchdog, run_with_time_limit

if TYPE_CHECKING:
    from pyqueue.client import Client
    from pyqueue.job import Job

logger = logging.getLogger(__name__)

OPTIONS = ("unique", "unique_ttl", "unique_key", "on_conflict", "timeout", "expires_in")

FIELD_TIMEOUT = "timeout"
FIELD_OVERLIMIT = "overlimit_count"
# After this many over-limit reschedules the OverLimit goes to the retry rules as a failure.
MAX_RESCHEDULES = 25
MAX_RESCHEDULE_DELAY = 3600.0
# A while_executing job that finds its lock taken waits 1, 2, 4 ... s, at most this long.
UNIQUE_MAX_DELAY = 60.0


@dataclasses.dataclass(frozen=True)
class PushOptions:
    """The control options of one push, validated."""

    unique: unique.UniqueOptions | None
    timeout: float | None
    expires_in: float | None


def take_options(item: dict[str, Any]) -> PushOptions | None:
    """Remove the control options from a job hash; return them, or None when none is set.

    A value in ``item`` overrides the job class's attribute; an explicit None
    turns the option off for this push. Raises ArgumentError for an invalid value.
    """
    job_class = item.get("class")
    from_class = isinstance(job_class, type)
    values = {
        name: item.pop(name)
        if name in item
        else getattr(job_class, name, None)
        if from_class
        else None
        for name in OPTIONS
    }
    if all(value is None for value in values.values()):
        return None
    return PushOptions(
        unique=unique.resolve_options(
            values["unique"], values["unique_ttl"], values["unique_key"], values["on_conflict"]
        ),
        timeout=_seconds("timeout", values["timeout"]),
        expires_in=_seconds("expires_in", values["expires_in"]),
    )


def check_class_options(job_class: type[Job]) -> None:
    """Validate a job class's control options at definition; raise JobDefinitionError."""
    try:
        unique.resolve_options(
            job_class.unique, job_class.unique_ttl, job_class.unique_key, job_class.on_conflict
        )
        _seconds("timeout", job_class.timeout)
        _seconds("expires_in", job_class.expires_in)
    except ArgumentError as exc:
        raise JobDefinitionError(f"job {job_class.__qualname__}: {exc}") from None


def _seconds(option: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ArgumentError(f"{option} is {value!r}; it must be a number of seconds greater than 0")
    return float(value)


def push(client: Client, item: dict[str, Any]) -> str | None:
    """Push one job hash with its control options applied; return its jid or None.

    None means the job was not pushed: a unique conflict (log, reject, or a
    replace whose holder runs) or a client middleware veto.
    """
    return _push_one(client, item, take_options(item))


def push_bulk(client: Client, item: dict[str, Any]) -> list[str | None]:
    """Push one job per argument list, as ``Client.push_bulk`` does, with control options.

    Jobs with a unique option, or with ``expires_in`` and one ``at`` per job,
    are pushed one at a time, because each needs its own lock or expiry.
    """
    options = take_options(item)
    at = item.get("at")
    per_job_times = isinstance(at, list | tuple)
    all_args = item.get("args")
    if options is None or not isinstance(all_args, list):
        return client.push_bulk(item)
    if options.unique is None and not (per_job_times and options.expires_in is not None):
        _stamp_fields(item, options, None if per_job_times else at)
        return client.push_bulk(item)
    template = {k: v for k, v in item.items() if k not in ("args", "at", "batch_size")}
    times: list[Any] = list(at) if isinstance(at, list | tuple) else [at] * len(all_args)
    if len(times) != len(all_args):
        return client.push_bulk(item)
    jids: list[str | None] = []
    for args, moment in zip(all_args, times, strict=True):
        single = dict(template, args=args)
        if moment is not None:
            single["at"] = moment
        jids.append(_push_one(client, single, options))
    return jids


def _push_one(client: Client, item: dict[str, Any], options: PushOptions | None) -> str | None:
    if options is None:
        return client.push(item)
    now = time.time()
    at = item.get("at")
    _stamp_fields(item, options, at, now)
    job_class = item.get("class")
    class_name = getattr(job_class, "job_name", job_class)
    if options.unique is None or not isinstance(class_name, str):
        # An invalid class is reported by client.push, with its usual message.
        return client.push(item)
    queue = item.get("queue") or getattr(job_class, "queue", None) or "default"
    unique.stamp(item, options.unique, class_name, str(queue))
    # In a pyqueue.testing mode nothing reaches Redis, so no lock is taken either.
    if options.unique.lock == unique.WHILE_EXECUTING or client_module._push_hook is not None:
        return client.push(item)
    delay = float(at) - now if isinstance(at, int | float) else 0.0
    return unique.push_locked(client, item, options.unique, str(queue), delay)


def _stamp_fields(
    item: dict[str, Any], options: PushOptions, at: Any, now: float | None = None
) -> None:
    if options.timeout is not None:
        item[FIELD_TIMEOUT] = options.timeout
    if options.expires_in is not None:
        start = float(at) if isinstance(at, int | float) else None
        item[expiry.FIELD] = expiry.expires_at(options.expires_in, start, now)


class JobControls:
    """Server middleware that applies expiry, rate-limit reschedules, unique locks and timeouts.

    ``clock`` returns epoch seconds and ``rand`` a float in [0, 1); tests
    inject both, and a Watchdog.
    """

    def __init__(
        self,
        conn: redis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.redis = conn
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.watchdog = watchdog

    def __call__(
        self, job: Job, payload: Payload, queue: str, call_next: Callable[[], None]
    ) -> None:
        if expiry.FIELD in payload and expiry.is_expired(payload, self.clock()):
            expiry.record_expired(self.redis, payload, self.clock())
            unique.release_for(self.redis, payload)
            return
        # Inner middleware may edit the payload; a reschedule writes it as fetched.
        fetched = dict(payload)
        try:
            if unique.FIELD_LOCK in payload:
                self._run_unique(job, payload, queue, call_next, fetched)
            else:
                self._run_timed(job, payload, queue, call_next)
        except OverLimit as exc:
            if not self._reschedule_over_limit(fetched, exc):
                raise

    def _run_unique(
        self,
        job: Job,
        payload: Payload,
        queue: str,
        call_next: Callable[[], None],
        fetched: Payload,
    ) -> None:
        lock_info = unique.held_lock(payload)
        if lock_info is None or lock_info[0] == unique.UNTIL_EXPIRED:
            self._run_timed(job, payload, queue, call_next)
            return
        lock, lock_digest, jid = lock_info
        if lock == unique.UNTIL_EXECUTING:
            unique.release_quietly(self.redis, lock_digest, jid)
            self._run_timed(job, payload, queue, call_next)
        elif lock == unique.UNTIL_EXECUTED:
            # Released only on success: a failed job keeps its lock in the retry set,
            # and a death handler releases it when the retries run out.
            self._run_timed(job, payload, queue, call_next)
            unique.release_quietly(self.redis, lock_digest, jid)
        else:
            ttl = _lock_ttl(payload)
            current = unique.acquire(self.redis, lock_digest, jid, ttl)
            if current != jid:
                self._while_executing_conflict(fetched, current)
                return
            try:
                self._run_timed(job, payload, queue, call_next)
            finally:
                unique.release_quietly(self.redis, lock_digest, jid)

    def _run_timed(
        self, job: Job, payload: Payload, queue: str, call_next: Callable[[], None]
    ) -> None:
        limit = time_limit(job, payload)
        if limit is None:
            call_next()
            return
        name = payload.get("wrapped") or payload.get("class")
        run_with_time_limit(
            limit,
            call_next,
            watchdog=self.watchdog,
            jid=payload.get("jid"),
            queue=queue,
            **{"class": name},
        )

    def _while_executing_conflict(self, payload: Payload, current: str) -> None:
        strategy = payload.get(unique.FIELD_ON_CONFLICT) or unique.RESCHEDULE
        if strategy == unique.REJECT:
            unique.reject(self.redis, self.settings.timestamp_mode, payload, current, self.settings)
            return
        if strategy != unique.RESCHEDULE:
            logger.info("dropped: a copy with the same unique lock runs (holder jid=%s)", current)
            return
        count = _count(payload.get(unique.FIELD_RESCHEDULES))
        delay = min(UNIQUE_MAX_DELAY, 2.0 ** min(count, 6)) * (0.5 + self.rand() / 2)
        self.reschedule(payload, delay, unique.FIELD_RESCHEDULES, count + 1)
        logger.info(
            "a copy with the same unique lock runs (holder jid=%s); rescheduled in %.3f s",
            current,
            delay,
        )

    def _reschedule_over_limit(self, payload: Payload, exc: OverLimit) -> bool:
        count = _count(payload.get(FIELD_OVERLIMIT))
        if count >= MAX_RESCHEDULES:
            logger.warning(
                "rate limiter %r still over its limit after %d reschedules; "
                "failing the job so that the retry rules apply",
                exc.name,
                count,
            )
            return False
        # The spread grows with each reschedule, so that jobs waiting for the
        # same limiter do not all come back at the same moment.
        step = exc.period or 1.0
        delay = min(MAX_RESCHEDULE_DELAY, exc.retry_after + self.rand() * step * (count + 1))
        self.reschedule(payload, delay, FIELD_OVERLIMIT, count + 1)
        logger.info(
            "rate limiter %r over its limit; rescheduled in %.3f s (%d of at most %d)",
            exc.name,
            delay,
            count + 1,
            MAX_RESCHEDULES,
        )
        return True

    def reschedule(self, payload: Payload, delay: float, field: str, count: int) -> None:
        """Add the job to the schedule set, due in ``delay`` seconds, with ``field`` = ``count``.

        The member has no ``enqueued_at``, as a scheduled push writes it, and
        the scheduled poller pushes it back to its queue when due.
        """
        job = dict(payload)
        job.pop("enqueued_at", None)
        job[field] = count
        self.redis.zadd(keys.SCHEDULE, {dumps(job): self.clock() + delay})


def time_limit(job: Job, payload: Payload) -> float | None:
    """Return the job's time limit in seconds: the payload's ``timeout``, else the class's.

    A value that is not a positive number is logged and ignored.
    """
    value = payload.get(FIELD_TIMEOUT)
    if value is None:
        value = getattr(type(job), "timeout", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        logger.warning("timeout is %r, not a number of seconds; running without a limit", value)
        return None
    return float(value)


def _lock_ttl(payload: Payload) -> float:
    value = payload.get(unique.FIELD_TTL)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return unique.DEFAULT_TTL
    return float(value)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class ControlledChain(ServerChain):
    """A server chain that runs JobControls around another chain's entries and ``perform``.

    ``entries`` lists JobControls alone. ``add``, ``prepend``, ``remove`` and
    ``clear`` change ``inner``, which is read at each job, so middleware
    added later still runs inside the controls.
    """

    def __init__(self, controls: JobControls, inner: ServerChain) -> None:
        super().__init__([controls])
        self.controls = controls
        self.inner = inner

    def add(self, middleware: ServerMiddleware) -> None:
        self.inner.add(middleware)

    def prepend(self, middleware: ServerMiddleware) -> None:
        self.inner.prepend(middleware)

    def remove(self, middleware: ServerMiddleware) -> None:
        self.inner.remove(middleware)

    def clear(self) -> None:
        self.inner.clear()

    def invoke(self, job: Job, payload: Payload, queue: str, perform: Callable[[], None]) -> None:
        inner = self.inner
        self.controls(job, payload, queue, lambda: inner.invoke(job, payload, queue, perform))


def server_chain(conn: redis.Redis, settings: Settings, inner: ServerChain) -> ServerChain:
    """Return the chain a worker runs: JobControls outermost, then every entry of ``inner``.

    Also makes ``unique.release_on_death`` a death handler that uses ``conn``.
    """
    from pyqueue.retry import death_handlers

    unique.use_connection(conn)
    if unique.release_on_death not in death_handlers:
        death_handlers.append(unique.release_on_death)
    return ControlledChain(JobControls(conn, settings), inner)
