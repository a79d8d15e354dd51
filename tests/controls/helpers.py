"""Helpers shared by the job controls tests."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyqueue import config, keys
from pyqueue.controls import JobControls
from pyqueue.job import Job, lookup
from pyqueue.payload import Payload
from tests.controls import jobs


def pop_job(r: redis.Redis, queue: str = jobs.QUEUE) -> Payload:
    """Take the oldest job from a queue, as a fetch does, and decode it."""
    raw = r.rpop(keys.queue(queue))
    assert raw is not None, f"queue {queue} is empty"
    payload: Payload = json.loads(raw)
    return payload


def controls(r: redis.Redis, **options: object) -> JobControls:
    return JobControls(r, config.Settings(), **options)  # type: ignore[arg-type]


def run(
    middleware: JobControls, payload: Payload, perform: Callable[[Job], None] | None = None
) -> Job:
    """Run ``payload`` through the middleware as the processor would; return the job."""
    job = lookup(payload["class"])(jid=payload["jid"], payload=payload)

    def call_next() -> None:
        if perform is not None:
            perform(job)
        else:
            job.perform(*payload["args"])

    middleware(job, payload, str(payload["queue"]), call_next)
    return job


def unreachable_redis() -> redis.Redis:
    """A client of a loopback port where no server listens, failing at once without retries."""
    return redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )


def lock_holder(r: redis.Redis, payload: Payload) -> str | None:
    value = r.get(keys.unique_lock(payload["unique_digest"]))
    return None if value is None else str(value)


def scheduled(r: redis.Redis) -> list[tuple[Payload, float]]:
    return [
        (json.loads(member), score)
        for member, score in r.zrange(keys.SCHEDULE, 0, -1, withscores=True)
    ]
