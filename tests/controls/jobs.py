"""Jobs for the job controls tests, loaded in-process and by ``pyqueue run -r tests.controls.jobs``.

Each job records what it did in Redis through the process-wide client, so a
test can read the runs of a worker subprocess. Registered names start with
``ControlsSuite::`` so that they never clash with other test modules' jobs.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from pyqueue import Job, ratelimit
from pyqueue.client import default_client

QUEUE = "controls"
RUNS = "controls:runs:"  # STRING counter per job key
SPANS = "controls:spans"  # LIST of "start end" Redis times in ms of SerialJob runs
ACQUIRED = "controls:acquired"  # LIST of acquisition times in ms of RateLimitedJob
RATE_LIMIT = 5
RATE_PERIOD = 1.0


def conn() -> redis.Redis:
    return default_client().redis


def redis_ms() -> int:
    seconds, micros = conn().time()
    return int(seconds) * 1000 + int(micros) // 1000


def runs(key: str) -> int:
    return int(conn().get(RUNS + key) or 0)


def sleep_in_slices(seconds: float) -> None:
    """Sleep in 20 ms slices, so an asynchronous exception ends the job between slices."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)


class UntilExecutedJob(Job, name="ControlsSuite::UntilExecutedJob"):
    queue = QUEUE
    unique = "until_executed"

    def perform(self, key: str, seconds: float = 0.0) -> None:
        conn().incr(RUNS + key)
        sleep_in_slices(seconds)


class UntilExecutingJob(Job, name="ControlsSuite::UntilExecutingJob"):
    queue = QUEUE
    unique = "until_executing"

    def perform(self, key: str, seconds: float = 0.0) -> None:
        conn().incr(RUNS + key)
        sleep_in_slices(seconds)


class SerialJob(Job, name="ControlsSuite::SerialJob"):
    """Never runs twice at once for the same key; records the span of each run."""

    queue = QUEUE
    unique = "while_executing"
    unique_ttl = 30

    def perform(self, key: str, seconds: float) -> None:
        started = redis_ms()
        sleep_in_slices(seconds)
        conn().rpush(SPANS, f"{started} {redis_ms()}")


class RateLimitedJob(Job, name="ControlsSuite::RateLimitedJob"):
    queue = QUEUE

    def perform(self, index: int) -> None:
        limiter = ratelimit.window("controls-test", RATE_LIMIT, per=RATE_PERIOD)
        with limiter.acquire() as lease:
            conn().rpush(ACQUIRED, round(lease.acquired_at * 1000))


class SlowJob(Job, name="ControlsSuite::SlowJob"):
    """Runs past its time limit in a Python loop; one retry, then the dead set."""

    queue = QUEUE
    timeout = 0.5
    retry = 1

    def perform(self, key: str, seconds: float) -> None:
        conn().incr(RUNS + key)
        sleep_in_slices(seconds)


class CountJob(Job, name="ControlsSuite::CountJob"):
    queue = QUEUE

    def perform(self, key: str, *rest: Any) -> None:
        conn().incr(RUNS + key)


class FailingUniqueJob(Job, name="ControlsSuite::FailingUniqueJob"):
    queue = QUEUE
    unique = True
    retry = 0

    def perform(self, key: str) -> None:
        conn().incr(RUNS + key)
        raise RuntimeError("FailingUniqueJob always fails")


class RecoveredSerialJob(Job, name="ControlsSuite::RecoveredSerialJob"):
    """A while_executing job whose first run hangs, so that its process can be killed mid-run."""

    queue = QUEUE
    unique = "while_executing"
    unique_ttl = 60

    def perform(self, key: str) -> None:
        if conn().incr(RUNS + key) == 1:
            sleep_in_slices(60)
        conn().rpush(SPANS, self.jid)
