"""The worker's chain: JobControls outermost, the process's middleware inside."""

from __future__ import annotations

from collections.abc import Callable

import redis

from pyqueue import config, unique
from pyqueue.controls import server_chain
from pyqueue.job import Job
from pyqueue.middleware import ServerChain
from pyqueue.payload import Payload
from pyqueue.retry import death_handlers
from tests.controls import jobs
from tests.controls.helpers import pop_job


def recorder(seen: list[str]) -> Callable[[Job, Payload, str, Callable[[], None]], None]:
    def middleware(job: Job, payload: Payload, queue: str, call_next: Callable[[], None]) -> None:
        seen.append(job.jid)
        call_next()

    return middleware


def test_middleware_added_later_runs(r: redis.Redis) -> None:
    inner = ServerChain()
    chain = server_chain(r, config.Settings(), inner)
    seen: list[str] = []
    inner.add(recorder(seen))
    late: list[str] = []
    chain.add(recorder(late))
    assert len(inner) == 2

    jobs.CountJob.perform_async("c")
    payload = pop_job(r)
    job = jobs.CountJob(jid=payload["jid"], payload=payload)
    chain.invoke(job, payload, jobs.QUEUE, lambda: job.perform(*payload["args"]))
    assert seen == [payload["jid"]]
    assert late == [payload["jid"]]
    assert jobs.runs("c") == 1


def test_expired_job_skips_inner_middleware(r: redis.Redis) -> None:
    inner = ServerChain()
    seen: list[str] = []
    inner.add(recorder(seen))
    chain = server_chain(r, config.Settings(), inner)

    jobs.CountJob.set(expires_in=1).perform_async("c")
    payload = pop_job(r)
    payload["expires_at"] = 1.0
    job = jobs.CountJob(jid=payload["jid"], payload=payload)
    chain.invoke(job, payload, jobs.QUEUE, lambda: job.perform(*payload["args"]))
    assert seen == []
    assert jobs.runs("c") == 0


def test_death_handler_added_once(r: redis.Redis) -> None:
    server_chain(r, config.Settings(), ServerChain())
    server_chain(r, config.Settings(), ServerChain())
    assert death_handlers.count(unique.release_on_death) == 1
