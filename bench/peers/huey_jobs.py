"""Huey tasks for the benchmark, on RedisHuey: noop and mark."""

from __future__ import annotations

import os
import time

import redis
from huey import RedisHuey

huey = RedisHuey("bench", url=os.environ["REDIS_URL"])
_conn = redis.Redis.from_url(os.environ["REDIS_URL"])


@huey.task()
def bench_noop() -> None:
    return None


@huey.task()
def bench_mark(key: str) -> None:
    _conn.set(key, repr(time.time()))


def enqueue(count: int, start_key: str, done_key: str) -> None:
    bench_mark(start_key)
    for _ in range(count):
        bench_noop()
    bench_mark(done_key)
