"""Celery tasks for the benchmark, with Redis as the broker and no result backend."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

app = Celery("bench", broker=os.environ["REDIS_URL"])
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True
_conn = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task
def bench_noop() -> None:
    return None


@app.task
def bench_mark(key: str) -> None:
    _conn.set(key, repr(time.time()))


def enqueue(count: int, start_key: str, done_key: str) -> None:
    bench_mark.delay(start_key)
    for _ in range(count):
        bench_noop.delay()
    bench_mark.delay(done_key)
