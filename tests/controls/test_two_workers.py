"""The job controls across two `pyqueue run` worker processes on one real Redis."""

from __future__ import annotations

import json
import time

import redis

from pyqueue import keys
from tests.controls import jobs
from tests.controls.conftest import Worker
from tests.worker.conftest import wait_for


def test_unique_two_pushes_one_run(two_workers: list[Worker], r: redis.Redis) -> None:
    first = jobs.UntilExecutedJob.perform_async("a", 0.5)
    second = jobs.UntilExecutedJob.perform_async("a", 0.5)
    assert first is not None
    assert second is None
    wait_for(lambda: jobs.runs("a") == 1, timeout=15)
    # While the first copy runs, the lock still blocks a third push.
    assert jobs.UntilExecutedJob.perform_async("a", 0.5) is None

    # Released after success, so the next push runs again.
    wait_for(lambda: not r.keys("pyqueue:unique:*"), timeout=10)
    assert jobs.UntilExecutedJob.perform_async("a", 0.5) is not None
    wait_for(lambda: jobs.runs("a") == 2, timeout=10)


def test_while_executing_runs_one_at_a_time(two_workers: list[Worker], r: redis.Redis) -> None:
    for _ in range(3):
        assert jobs.SerialJob.perform_async("s", 0.4) is not None
    wait_for(lambda: r.llen(jobs.SPANS) == 3, timeout=30)

    spans = sorted(tuple(map(int, span.split())) for span in r.lrange(jobs.SPANS, 0, -1))
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"runs overlap: {spans}"
    assert not r.keys("pyqueue:unique:*")


def test_window_limit_holds_across_processes(two_workers: list[Worker], r: redis.Redis) -> None:
    total = 15
    for index in range(total):
        jobs.RateLimitedJob.perform_async(index)
    wait_for(lambda: r.llen(jobs.ACQUIRED) == total, timeout=40)

    times = sorted(int(value) for value in r.lrange(jobs.ACQUIRED, 0, -1))
    window_ms = int(jobs.RATE_PERIOD * 1000)
    # At most RATE_LIMIT acquisitions in any window: the (limit+1)-th one after
    # any acquisition comes a full window later.
    for first, later in zip(times, times[jobs.RATE_LIMIT :], strict=False):
        assert later - first >= window_ms, f"more than {jobs.RATE_LIMIT} per window: {times}"
    # Over the limit, jobs were rescheduled, not failed.
    assert int(r.get(keys.STAT_FAILED) or 0) == 0
    assert r.zcard(keys.RETRY) == 0


def test_time_limit_fails_and_retries(two_workers: list[Worker], r: redis.Redis) -> None:
    jid = jobs.SlowJob.perform_async("slow", 5.0)

    entry = wait_for(lambda: r.zrange(keys.RETRY, 0, -1), timeout=15)[0]
    job = json.loads(entry)
    assert job["jid"] == jid
    assert job["error_class"] == "JobTimeout"
    assert "timeout of 0.5 s" in job["error_message"]
    assert job["retry_count"] == 0
    assert jobs.runs("slow") == 1

    # Make the retry due now instead of after the backoff; the poller moves it.
    r.zadd(keys.RETRY, {entry: time.time() - 1})
    dead = wait_for(lambda: r.zrange(keys.DEAD, 0, -1), timeout=15)[0]
    assert json.loads(dead)["error_class"] == "JobTimeout"
    assert json.loads(dead)["retry_count"] == 1
    assert jobs.runs("slow") == 2


def output_with(workers: list[Worker], text: str) -> str:
    """Return the workers' output once it contains ``text``, else an empty string."""
    output = "".join(worker.output() for worker in workers)
    return output if text in output else ""


def test_expired_job_never_runs(two_workers: list[Worker], r: redis.Redis) -> None:
    held = "controls_hold"
    jid = jobs.CountJob.set(queue=held, expires_in=0.2).perform_async("expired")
    raw = r.lindex(keys.queue(held), 0)
    assert raw is not None
    assert json.loads(raw)["expires_at"] > time.time()

    # Hand the job to the workers' queue only after it expired.
    time.sleep(0.3)
    r.lmove(keys.queue(held), keys.queue(jobs.QUEUE), "RIGHT", "LEFT")
    wait_for(lambda: r.get(keys.STAT_EXPIRED) == "1", timeout=10)
    assert jobs.runs("expired") == 0
    assert r.llen(keys.queue(jobs.QUEUE)) == 0
    # INFO lines reach the output up to 5 ms after the stat.
    logs = wait_for(lambda: output_with(two_workers, f"jid={jid}"), timeout=5)
    assert "dropped without running" in logs
