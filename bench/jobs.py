"""The pyqueue side of the benchmark jobs; bench/ruby/jobs.rb defines the same classes.

``BenchNoop`` does nothing. ``BenchMark`` writes the current time to a
Redis key, so that the drain measurement can read when the first and the
last job of a run started. ``BenchLatency`` appends the delay between the
time its producer stored in the args and the moment it started, in
seconds, to a Redis list.
"""

from __future__ import annotations

import os
import threading
import time

import redis

from pyqueue import Job

LATENCY_LIST = "bench:latency"

_lock = threading.Lock()
_conn: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _conn
    with _lock:
        if _conn is None:
            _conn = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
        return _conn


class BenchNoop(Job, name="BenchNoop"):
    def perform(self) -> None:
        return None


class BenchMark(Job, name="BenchMark"):
    def perform(self, key: str) -> None:
        _redis().set(key, repr(time.time()))


class BenchLatency(Job, name="BenchLatency"):
    def perform(self, enqueued: float) -> None:
        _redis().rpush(LATENCY_LIST, repr(time.time() - enqueued))
