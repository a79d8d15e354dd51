"""Jobs for the supervisor tests, registered under names no other test module uses."""

from __future__ import annotations

import os
import time

import redis

from pyqueue import Job

RELEASE_KEY = "perf:release"


class PerfNoop(Job, name="PerfSuite::Noop"):
    def perform(self) -> None:
        return None


class PerfBlock(Job, name="PerfSuite::Block"):
    """Runs until the test sets RELEASE_KEY, for at most 30 s."""

    def perform(self) -> None:
        conn = redis.Redis.from_url(os.environ["REDIS_URL"])
        deadline = time.monotonic() + 30
        try:
            while not conn.exists(RELEASE_KEY) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            conn.close()


COUNT_KEY = "perf:ran"


class PerfCount(Job, name="PerfSuite::Count"):
    """Counts its runs in COUNT_KEY and takes 5 ms, so a stop finds jobs running."""

    def perform(self) -> None:
        conn = redis.Redis.from_url(os.environ["REDIS_URL"])
        try:
            conn.incr(COUNT_KEY)
        finally:
            conn.close()
        time.sleep(0.005)
