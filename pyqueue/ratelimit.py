"""Rate limiters kept in Redis, so every process on the same Redis shares each limit.

    from pyqueue import ratelimit

    SENDGRID = ratelimit.window("sendgrid", 600, per=60)

    def perform(self, delivery_id):
        with SENDGRID.acquire():
            send(delivery_id)

- ``window(name, limit, per)``: at most ``limit`` acquisitions in any
  ``per`` seconds. A sliding log: a ZSET contains one member per acquisition,
  scored by its time in milliseconds, and members older than the window are
  removed before each check. It is exact (no burst of twice the limit at a
  bucket boundary) and costs one ZSET entry per acquisition in the window.
- ``concurrent(name, limit, lock_timeout)``: at most ``limit`` holders at
  once. A ZSET contains one token per holder, scored by the time its lease
  ends, so a holder that crashed is dropped after ``lock_timeout`` seconds.

Times come from the Redis server's clock (``TIME`` inside the scripts), so
processes on hosts with skewed clocks still share one window. A limiter over
its limit raises OverLimit, after waiting up to ``wait_timeout`` seconds for
a slot (default 0: no wait). Inside a job, the job controls middleware turns
OverLimit into a reschedule with backoff instead of a failure.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import redis

from pyqueue import keys
from pyqueue.client import default_client
from pyqueue.errors import PyQueueError

logger = logging.getLogger(__name__)

WINDOW = "window"
CONCURRENT = "concurrent"
# A waiting concurrent limiter polls this often, because a holder's release
# sends no notification.
CONCURRENT_POLL = 0.05
DEFAULT_LOCK_TIMEOUT = 30.0

_CLOCK_IN_SCRIPT = """
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

WINDOW_SCRIPT = (
    """
-- Take one slot of a sliding-window limiter.
-- KEYS[1]: ZSET of acquisitions (member: a unique token, score: time in ms)
-- ARGV[1]: limit, ARGV[2]: window length in ms, ARGV[3]: token,
-- ARGV[4]: now in ms, or "" to use the Redis server's clock
-- Returns {1, now, 0} when a slot was taken, or {0, now, wait} where wait is
-- the ms until the oldest acquisition leaves the window.
"""
    + _CLOCK_IN_SCRIPT
    + """
local window = tonumber(ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - window)
if redis.call("ZCARD", KEYS[1]) < tonumber(ARGV[1]) then
  redis.call("ZADD", KEYS[1], now, ARGV[3])
  redis.call("PEXPIRE", KEYS[1], window)
  return {1, now, 0}
end
local oldest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
return {0, now, tonumber(oldest[2]) + window - now}
"""
)

CONCURRENT_SCRIPT = (
    """
-- Take one slot of a concurrent limiter.
-- KEYS[1]: ZSET of holders (member: a unique token, score: end of its lease in ms)
-- ARGV[1]: limit, ARGV[2]: lease length in ms, ARGV[3]: token,
-- ARGV[4]: now in ms, or "" to use the Redis server's clock
-- Returns {1, now, 0} when the token holds a slot, or {0, now, wait} where
-- wait is the ms until the earliest lease ends.
"""
    + _CLOCK_IN_SCRIPT
    + """
local lease = tonumber(ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
if redis.call("ZCARD", KEYS[1]) < tonumber(ARGV[1]) then
  redis.call("ZADD", KEYS[1], now + lease, ARGV[3])
  if redis.call("PTTL", KEYS[1]) < lease then
    redis.call("PEXPIRE", KEYS[1], lease)
  end
  return {1, now, 0}
end
local earliest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
return {0, now, tonumber(earliest[2]) - now}
"""
)


class OverLimit(PyQueueError):  # noqa: N818 - the name Sidekiq users know
    """Raised when a rate limiter has no free slot.

    ``retry_after`` is the number of seconds until a slot frees for sure
    (window) or until the earliest lease ends (concurrent). ``period`` is the
    window length, or None for a concurrent limiter.
    """

    def __init__(
        self, name: str, kind: str, limit: int, retry_after: float, period: float | None
    ) -> None:
        rule = f"{limit} per {period:g} s" if period is not None else f"{limit} at once"
        super().__init__(
            f"rate limiter {name!r} ({kind}, {rule}) is over its limit; "
            f"a slot frees in {retry_after:.3f} s at the latest"
        )
        self.name = name
        self.kind = kind
        self.limit = limit
        self.retry_after = retry_after
        self.period = period


class Lease:
    """A slot taken from a limiter; a context manager that gives the slot back on exit.

    ``acquired_at`` is the Redis server time of the acquisition, in epoch
    seconds. Releasing a window slot does nothing: it counts until it leaves
    the window. On exit, a Redis error during the release is logged, not
    raised, because the block's work is done and the lease ends by itself.
    """

    def __init__(self, limiter: Limiter, token: str, acquired_at: float) -> None:
        self.limiter = limiter
        self.token = token
        self.acquired_at = acquired_at

    def release(self) -> None:
        self.limiter.release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except redis.RedisError as error:
            logger.warning(
                "could not release a slot of rate limiter %r, it ends with its lease: %s",
                self.limiter.name,
                error,
            )


class Limiter:
    """Base class of the window and concurrent limiters: naming, waiting and the script call.

    ``redis`` defaults to the process-wide client's connection, looked up at
    each acquisition. ``clock`` (epoch seconds) replaces the Redis server's
    clock, for tests. ``sleep`` is replaceable too.
    """

    kind = ""
    script = ""

    def __init__(
        self,
        name: str,
        limit: int,
        *,
        redis: redis.Redis | None = None,
        wait_timeout: float = 0.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"rate limiter name must be a non-empty string, got {name!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"rate limiter {name!r}: limit must be an int of 1 or more, got {limit!r}"
            )
        _check_seconds(name, "wait_timeout", wait_timeout, allow_zero=True)
        self.name = name
        self.limit = limit
        self.key = keys.rate_limiter(self.kind, name)
        self.wait_timeout = wait_timeout
        self._redis = redis
        self._clock = clock
        self._sleep = sleep

    @property
    def redis(self) -> redis.Redis:
        return self._redis if self._redis is not None else default_client().redis

    def acquire(self, wait_timeout: float | None = None) -> Lease:
        """Take a slot and return its Lease; raise OverLimit if none frees in time.

        ``wait_timeout`` (seconds) overrides the limiter's own for this call.
        Raises redis.RedisError when Redis cannot be reached.
        """
        wait = self.wait_timeout if wait_timeout is None else wait_timeout
        deadline = time.monotonic() + wait
        token = secrets.token_hex(8)
        while True:
            acquired, now_ms, wait_ms = self._attempt(token)
            if acquired:
                return Lease(self, token, now_ms / 1000.0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OverLimit(self.name, self.kind, self.limit, wait_ms / 1000.0, self.period)
            self._sleep(min(remaining, self._poll_delay(wait_ms / 1000.0)))

    def release(self, lease: Lease) -> None:
        """Give a slot back (a no-op for a window limiter)."""

    def reset(self) -> None:
        """Forget every acquisition and holder of this limiter."""
        self.redis.delete(self.key)

    @property
    def period(self) -> float | None:
        return None

    def _lease_ms(self) -> int:
        raise NotImplementedError

    def _poll_delay(self, retry_after: float) -> float:
        raise NotImplementedError

    def _attempt(self, token: str) -> tuple[bool, int, int]:
        now = "" if self._clock is None else str(int(self._clock() * 1000))
        script = self.redis.register_script(self.script)
        result: Any = script(keys=[self.key], args=[self.limit, self._lease_ms(), token, now])
        return bool(int(result[0])), int(result[1]), max(int(result[2]), 0)


class WindowLimiter(Limiter):
    """At most ``limit`` acquisitions in any ``per`` seconds (a sliding window)."""

    kind = WINDOW
    script = WINDOW_SCRIPT

    def __init__(self, name: str, limit: int, per: float, **options: Any) -> None:
        _check_seconds(name, "per", per)
        self.per = float(per)
        super().__init__(name, limit, **options)

    @property
    def period(self) -> float | None:
        return self.per

    def count(self) -> int:
        """Return the acquisitions still inside the window (by the Redis server's clock)."""
        seconds, micros = self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return int(self.redis.zcount(self.key, f"({now_ms - int(self.per * 1000)}", "+inf"))

    def _lease_ms(self) -> int:
        return max(int(self.per * 1000), 1)

    def _poll_delay(self, retry_after: float) -> float:
        # The oldest acquisition leaves the window at a known time; a few ms
        # more cover rounding to whole milliseconds.
        return retry_after + 0.005


class ConcurrentLimiter(Limiter):
    """At most ``limit`` holders at once; a holder's slot is freed after ``lock_timeout`` s.

    Set ``lock_timeout`` above the longest time a holder keeps its slot,
    because a holder past it no longer counts and another one may enter.
    """

    kind = CONCURRENT
    script = CONCURRENT_SCRIPT

    def __init__(
        self, name: str, limit: int, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, **options: Any
    ) -> None:
        _check_seconds(name, "lock_timeout", lock_timeout)
        self.lock_timeout = float(lock_timeout)
        super().__init__(name, limit, **options)

    def release(self, lease: Lease) -> None:
        self.redis.zrem(self.key, lease.token)

    def holders(self) -> int:
        """Return the number of holders whose lease has not ended."""
        seconds, micros = self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return int(self.redis.zcount(self.key, f"({now_ms}", "+inf"))

    def _lease_ms(self) -> int:
        return max(int(self.lock_timeout * 1000), 1)

    def _poll_delay(self, retry_after: float) -> float:
        return min(retry_after, CONCURRENT_POLL) if retry_after > 0 else CONCURRENT_POLL


def window(name: str, limit: int, per: float = 1.0, **options: Any) -> WindowLimiter:
    """Return a limiter that allows ``limit`` acquisitions in any ``per`` seconds.

    Options: ``wait_timeout`` (seconds to wait for a slot, default 0),
    ``redis``, ``clock``, ``sleep``. Raises ValueError for a bad name, limit or period.
    """
    return WindowLimiter(name, limit, per, **options)


def concurrent(
    name: str, limit: int, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, **options: Any
) -> ConcurrentLimiter:
    """Return a limiter that allows ``limit`` holders at once (1 makes a distributed mutex).

    Options as for ``window``. A holder that does not release its slot
    (a crash) stops counting after ``lock_timeout`` seconds (default 30).
    """
    return ConcurrentLimiter(name, limit, lock_timeout, **options)


def _check_seconds(name: str, option: str, value: Any, allow_zero: bool = False) -> None:
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "greater than 0"
        raise ValueError(
            f"rate limiter {name!r}: {option} must be a number of seconds {bound}, got {value!r}"
        )
