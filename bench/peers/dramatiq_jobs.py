"""Dramatiq actors for the benchmark, on its Redis broker: noop and mark."""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"])
dramatiq.set_broker(broker)
_conn = redis.Redis.from_url(os.environ["REDIS_URL"])


@dramatiq.actor(max_retries=0)
def bench_noop() -> None:
    return None


@dramatiq.actor(max_retries=0)
def bench_mark(key: str) -> None:
    _conn.set(key, repr(time.time()))


def enqueue(count: int, start_key: str, done_key: str) -> None:
    bench_mark.send(start_key)
    for _ in range(count):
        bench_noop.send()
    bench_mark.send(done_key)
