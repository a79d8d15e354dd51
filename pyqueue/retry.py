"""Failure handling: Sidekiq 7's retry decision tree, backoff and the dead set.

The processor calls ``RetryHandler.handle_failure`` when an exception escapes
a job. The handler writes the job to the ``retry`` set with the error fields
Sidekiq's Web UI shows, or to the ``dead`` set once the retries are used up,
or drops it when the job asked for no retries. The scheduled poller moves due
``retry`` entries back to their queues.

Truthiness follows Ruby, because the payload may come from a Ruby client:
``retry: 0`` and ``backtrace: 0`` are set (only ``false`` and ``null`` are not).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import random
import re
import time
import traceback
import zlib
from collections.abc import Callable
from typing import Any

import redis

from pyqueue import events, keys
from pyqueue.config import Settings
from pyqueue.errors import PayloadError, Shutdown
from pyqueue.job import DISCARD, KILL, Job
from pyqueue.payload import Payload, decode, dumps, epoch_seconds, loads, timestamp

logger = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 10_000
MESSAGE_ERROR = "!!! ERROR MESSAGE THREW AN ERROR !!!"

DeathHandler = Callable[[Payload, BaseException], object]

death_handlers: list[DeathHandler] = []
"""Callables ``(payload, exc)`` run when a job gives up for good.

They run after the retries are exhausted (whether or not the job went to the
dead set) and when a job with ``retry: false`` fails. They do not run when a
``retry_in`` or ``retries_exhausted`` hook returns "discard", as in Sidekiq 7.
A handler that raises is logged and skipped.
"""

_SURROGATES = re.compile("[\ud800-\udfff]")
_LEADING_INT = re.compile(r"\s*[+-]?\d+")


class RetryHandler:
    """Decide what happens to a failed job and write the result to Redis.

    ``clock`` returns epoch seconds and ``rand`` a float in [0, 1). Tests
    inject both to pin timestamps and jitter.
    """

    def __init__(
        self,
        redis: redis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.rand = rand

    def handle_failure(
        self,
        raw: str,
        payload: Payload,
        queue: str,
        exc: BaseException,
        job_class: type[Job] | None,
    ) -> str:
        """Handle ``exc`` raised by the job fetched as ``raw`` from ``queue``.

        Returns events.RETRIED, DEAD or DISCARDED, or events.REQUEUED when the
        exception is the shutdown signal: then nothing is written and the
        caller pushes the job back to its queue. The job is re-read from
        ``raw`` and ``payload`` is ignored, because middleware may have edited
        it and Sidekiq discards such edits.
        """
        if caused_by_shutdown(exc):
            return events.REQUEUED
        try:
            job = decode(raw)
        except PayloadError as error:
            self.send_to_dead_raw(raw, str(error))
            return events.DEAD
        if job.get("retry") is None and job_class is not None:
            job["retry"] = job_class.retry
        if _ruby_falsy(job.get("retry")):
            _run_death_handlers(job, exc)
            return events.DISCARDED
        return self._retry_or_kill(job, queue, exc, job_class)

    def send_to_dead_raw(self, raw: str, error: str) -> None:
        """Move a payload that is not a JSON object to the dead set, byte for byte.

        Nothing else is written, because Sidekiq counts such a job as neither
        processed nor failed. The log line carries ``error`` but not the
        payload, which may contain arguments.
        """
        logger.error("payload is not a valid job, moved it to the dead set: %s", error)
        kill(self.redis, raw, self.settings, now=self.clock())

    def _retry_or_kill(
        self, job: Payload, queue: str, exc: BaseException, job_class: type[Job] | None
    ) -> str:
        now = self.clock()
        count = self._record_failure(job, queue, exc, now)
        if self._exhausted(job, count, now):
            return self._give_up(job, exc, job_class, now)
        delay = _hook_delay(job_class, count, exc, job)
        if delay == DISCARD:
            logger.info("retry_in returned discard, dropped the job jid=%s", job.get("jid"))
            return events.DISCARDED
        if delay == KILL:
            return self._give_up(job, exc, job_class, now)
        seconds = count**4 + 15 if delay is None else int(delay)
        # rand(0..9) * (count + 1), as Sidekiq 6 and 7 compute the jitter.
        jitter = min(int(self.rand() * 10), 9) * (count + 1)
        self.redis.zadd(keys.RETRY, {dumps(job): now + seconds + jitter})
        logger.debug(
            "retry %d scheduled in %d s jid=%s class=%s",
            count,
            seconds + jitter,
            job.get("jid"),
            job.get("class"),
        )
        return events.RETRIED

    def _record_failure(self, job: Payload, queue: str, exc: BaseException, now: float) -> int:
        """Write the queue, error and count fields in Sidekiq's order and return the new count."""
        retry_queue = job.get("retry_queue")
        # Ruby would accept "" here, but an empty queue name cannot be fetched.
        job["queue"] = retry_queue if isinstance(retry_queue, str) and retry_queue else queue
        job["error_message"] = error_message(exc)
        job["error_class"] = type(exc).__name__
        stamp = timestamp(self.settings.timestamp_mode, now)
        previous = job.get("retry_count")
        if previous is None:
            job["failed_at"] = stamp
            job["retry_count"] = 0
        else:
            job["retried_at"] = stamp
            job["retry_count"] = ruby_to_i(previous) + 1
        backtrace_option = job.get("backtrace")
        if not _ruby_falsy(backtrace_option):
            lines = backtrace_lines(exc)
            if backtrace_option is not True:
                lines = lines[: ruby_to_i(backtrace_option)]
            job["error_backtrace"] = encode_backtrace(lines)
        return int(job["retry_count"])

    def _exhausted(self, job: Payload, count: int, now: float) -> bool:
        retry = job.get("retry")
        # bool is a subclass of int, and retry: true means the default maximum.
        if isinstance(retry, int) and not isinstance(retry, bool):
            max_retries = retry
        else:
            max_retries = self.settings.max_retries
        if count >= max_retries:
            return True
        retry_for = job.get("retry_for")
        failed_at = epoch_seconds(job.get("failed_at"))
        if not isinstance(retry_for, int | float) or isinstance(retry_for, bool):
            return False
        return failed_at is not None and failed_at + retry_for < now

    def _give_up(
        self, job: Payload, exc: BaseException, job_class: type[Job] | None, now: float
    ) -> str:
        if _exhausted_hook(job_class, job, exc) == DISCARD:
            logger.info("retries_exhausted returned discard, dropped jid=%s", job.get("jid"))
            return events.DISCARDED
        outcome = events.DISCARDED
        if job.get("dead") is not False:
            logger.info(
                "retries exhausted, moved to the dead set jid=%s class=%s",
                job.get("jid"),
                job.get("class"),
            )
            kill(self.redis, dumps(job), self.settings, now=now)
            outcome = events.DEAD
        _run_death_handlers(job, exc)
        return outcome


def kill(
    redis: redis.Redis, json_str: str, settings: Settings, *, now: float | None = None
) -> None:
    """Add ``json_str`` to the dead set and trim the set, in one MULTI.

    The trim removes entries older than ``settings.dead_timeout_in_seconds``
    and then keeps the newest ``dead_max_jobs - 1`` entries, because Ruby
    sends ``ZREMRANGEBYRANK dead 0 -<max>`` and both sides must trim alike.
    """
    current = time.time() if now is None else now
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(keys.DEAD, {json_str: current})
    pipe.zremrangebyscore(keys.DEAD, "-inf", current - settings.dead_timeout_in_seconds)
    pipe.zremrangebyrank(keys.DEAD, 0, -settings.dead_max_jobs)
    pipe.execute()


def caused_by_shutdown(exc: BaseException) -> bool:
    """Return True if ``exc`` is the shutdown signal or was raised while handling it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Shutdown):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def error_message(exc: BaseException) -> str:
    """Return ``str(exc)`` cut to 10,000 characters, with lone surrogates replaced.

    A lone surrogate (from bytes decoded with ``surrogateescape``) cannot be
    encoded as UTF-8, so it becomes U+FFFD as Ruby's ``String#scrub`` does.
    """
    try:
        text = str(exc)[:MAX_MESSAGE_LENGTH]
    except Exception:
        return MESSAGE_ERROR
    return _SURROGATES.sub("\ufffd", text)


def backtrace_lines(exc: BaseException) -> list[str]:
    """Return the traceback of ``exc`` as Ruby formats it, innermost call first.

    Each line reads ``path:line:in `function'`` so that Sidekiq's Web UI
    shows it like a Ruby backtrace.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    return [f"{frame.filename}:{frame.lineno}:in `{frame.name}'" for frame in reversed(frames)]


def encode_backtrace(lines: list[str]) -> str:
    """Encode backtrace lines for ``error_backtrace``: strict base64 of zlib of JSON."""
    return base64.b64encode(zlib.compress(dumps(lines).encode("utf-8"))).decode("ascii")


def decode_backtrace(text: str) -> list[str]:
    """Decode ``error_backtrace`` as written by any Sidekiq version.

    Sidekiq 6 writes MIME base64 with a newline every 60 characters, so
    whitespace is removed before decoding. Raises PayloadError when the text
    is not base64 of zlib-compressed JSON.
    """
    compact = "".join(text.split())
    try:
        data = zlib.decompress(base64.b64decode(compact, validate=True))
        lines = loads(data.decode("utf-8"))
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise PayloadError(
            f"error_backtrace is not base64 of zlib-compressed JSON: {exc}; "
            "the field is damaged, so read the error from error_message instead"
        ) from exc
    if not isinstance(lines, list):
        raise PayloadError(
            f"error_backtrace contains a JSON {type(lines).__name__}, expected a list of lines"
        )
    return [str(line) for line in lines]


def ruby_to_i(value: Any) -> int:
    """Convert a payload value to int as Ruby's ``to_i`` does: junk becomes 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        match = _LEADING_INT.match(value)
        return int(match.group()) if match else 0
    return 0


def _ruby_falsy(value: Any) -> bool:
    return value is None or value is False


def _hook_delay(
    job_class: type[Job] | None, count: int, exc: BaseException, job: Payload
) -> int | str | None:
    """Return the class hook's delay in whole seconds, KILL, DISCARD or None (default backoff).

    Like Sidekiq, a number is truncated to an int and used only when it is
    above 0. NOTE: for ActiveJob payloads Sidekiq 7 calls the hook of the
    ``wrapped`` class. pyqueue calls only the hook of the job class.
    """
    if job_class is None:
        return None
    try:
        value = job_class.retry_in(count, exc, job)
    except Exception:
        logger.exception(
            "retry_in of %s raised, using the default backoff jid=%s",
            job_class.job_name,
            job.get("jid"),
        )
        return None
    if value in (KILL, DISCARD):
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = ruby_to_i(value)
        return seconds if seconds > 0 else None
    return None


def _exhausted_hook(job_class: type[Job] | None, job: Payload, exc: BaseException) -> object:
    if job_class is None:
        return None
    try:
        return job_class.retries_exhausted(job, exc)
    except Exception:
        logger.exception(
            "retries_exhausted of %s raised jid=%s", job_class.job_name, job.get("jid")
        )
        return None


def _run_death_handlers(job: Payload, exc: BaseException) -> None:
    for handler in list(death_handlers):
        try:
            handler(job, exc)
        except Exception:
            logger.exception("death handler %r raised jid=%s", handler, job.get("jid"))
