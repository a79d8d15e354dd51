"""Rate limiters on real Redis, and the reschedule of a job that is over a limit."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from pyqueue import keys, ratelimit
from pyqueue.controls import MAX_RESCHEDULES
from pyqueue.job import Job
from pyqueue.ratelimit import OverLimit
from tests.controls import jobs
from tests.controls.helpers import (
    controls,
    lock_holder,
    pop_job,
    run,
    scheduled,
    unreachable_redis,
)
from tests.worker.conftest import wait_for


class Clock:
    """Epoch seconds that move only when a test (or the limiter's sleep) moves them."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_window_allows_limit_then_raises(r: redis.Redis) -> None:
    clock = Clock()
    limiter = ratelimit.window("w", 3, per=10, redis=r, clock=clock)
    for _ in range(3):
        limiter.acquire()
        clock.now += 1
    with pytest.raises(OverLimit) as caught:
        limiter.acquire()
    # The first acquisition (at +0) leaves the window at +10; now is +3.
    assert caught.value.retry_after == pytest.approx(7.0)
    assert caught.value.period == 10
    assert "rate limiter 'w' (window, 3 per 10 s) is over its limit" in str(caught.value)


def test_window_slides(r: redis.Redis) -> None:
    clock = Clock()
    limiter = ratelimit.window("w", 2, per=10, redis=r, clock=clock)
    limiter.acquire()
    clock.now += 5
    limiter.acquire()
    clock.now += 5
    # The first acquisition is now exactly one window old, so it no longer counts.
    limiter.acquire()
    with pytest.raises(OverLimit):
        limiter.acquire()
    clock.now += 5
    limiter.acquire()


def test_window_waits_for_slot(r: redis.Redis) -> None:
    clock = Clock()
    limiter = ratelimit.window("w", 1, per=2, redis=r, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    lease = limiter.acquire(wait_timeout=5)
    assert sum(clock.slept) == pytest.approx(2.0, abs=0.01)
    assert lease.acquired_at == pytest.approx(clock.now, abs=0.001)


def test_window_wait_gives_up(r: redis.Redis) -> None:
    clock = Clock()
    limiter = ratelimit.window("w", 1, per=60, redis=r, clock=clock, wait_timeout=0.05)
    limiter.acquire()
    with pytest.raises(OverLimit):
        limiter.acquire()


def test_window_uses_redis_clock(r: redis.Redis) -> None:
    limiter = ratelimit.window("server-clock", 2, per=60, redis=r)
    first = limiter.acquire()
    limiter.acquire()
    with pytest.raises(OverLimit) as caught:
        limiter.acquire()
    assert 59.0 < caught.value.retry_after <= 60.0
    assert first.acquired_at == pytest.approx(time.time(), abs=5)
    assert limiter.count() == 2
    assert 0 < r.pttl(keys.rate_limiter("window", "server-clock")) <= 60_000


def test_limiters_independent_by_name(r: redis.Redis) -> None:
    ratelimit.window("one", 1, per=60, redis=r).acquire()
    ratelimit.window("two", 1, per=60, redis=r).acquire()
    ratelimit.concurrent("one", 1, redis=r).acquire()


def test_concurrent_limit_and_release(r: redis.Redis) -> None:
    limiter = ratelimit.concurrent("c", 2, redis=r)
    first = limiter.acquire()
    limiter.acquire()
    assert limiter.holders() == 2
    with pytest.raises(OverLimit) as caught:
        limiter.acquire()
    assert caught.value.period is None
    assert "(concurrent, 2 at once)" in str(caught.value)
    first.release()
    limiter.acquire()


def test_concurrent_context_releases_on_error(r: redis.Redis) -> None:
    limiter = ratelimit.concurrent("c", 1, redis=r)
    with pytest.raises(RuntimeError), limiter.acquire():
        raise RuntimeError("inside")
    assert limiter.holders() == 0
    with limiter.acquire():
        assert limiter.holders() == 1


def test_concurrent_crashed_holder_times_out(r: redis.Redis) -> None:
    clock = Clock()
    limiter = ratelimit.concurrent("c", 1, lock_timeout=5, redis=r, clock=clock)
    limiter.acquire()  # Never released, as by a process that crashed.
    clock.now += 4.9
    with pytest.raises(OverLimit) as caught:
        limiter.acquire()
    assert caught.value.retry_after == pytest.approx(0.1, abs=0.002)
    clock.now += 0.2
    limiter.acquire()


def test_concurrent_waits_for_release(r: redis.Redis) -> None:
    limiter = ratelimit.concurrent("c", 1, redis=r)
    held = limiter.acquire()
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        held.release()

    waiting = ratelimit.concurrent("c", 1, redis=r, sleep=sleep)
    waiting.acquire(wait_timeout=5)
    assert polls == [ratelimit.CONCURRENT_POLL]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ratelimit.window("", 1), "name must be a non-empty string"),
        (lambda: ratelimit.window("w", 0), "limit must be an int of 1 or more"),
        (lambda: ratelimit.window("w", True), "limit must be an int of 1 or more"),
        (lambda: ratelimit.window("w", 1, per=0), "per must be a number of seconds"),
        (lambda: ratelimit.concurrent("c", 1, lock_timeout=-1), "lock_timeout must be"),
        (lambda: ratelimit.window("w", 1, wait_timeout=-1), "wait_timeout must be"),
    ],
)
def test_invalid_limiter(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _over_limit(job: Job) -> None:
    raise OverLimit("api", "window", 5, 0.25, 1.0)


def test_over_limit_reschedules_job(r: redis.Redis) -> None:
    jid = jobs.CountJob.perform_async("k")
    payload = pop_job(r)
    before = time.time()
    run(controls(r, rand=lambda: 0.0), payload, _over_limit)

    [(member, score)] = scheduled(r)
    assert member["jid"] == jid
    assert member["overlimit_count"] == 1
    assert "enqueued_at" not in member
    assert before + 0.25 <= score <= time.time() + 0.25
    assert r.zcard(keys.RETRY) == 0


def test_over_limit_backoff_grows(r: redis.Redis) -> None:
    jobs.CountJob.perform_async("k")
    payload = pop_job(r)
    payload["overlimit_count"] = 3
    before = time.time()
    run(controls(r, rand=lambda: 0.5), payload, _over_limit)
    [(member, score)] = scheduled(r)
    assert member["overlimit_count"] == 4
    # retry_after 0.25 s plus rand 0.5 x period 1 s x (3 + 1).
    assert score - before == pytest.approx(2.25, abs=0.2)


def test_over_limit_fails_after_max(r: redis.Redis) -> None:
    jobs.CountJob.perform_async("k")
    payload = pop_job(r)
    payload["overlimit_count"] = MAX_RESCHEDULES
    with pytest.raises(OverLimit):
        run(controls(r), payload, _over_limit)
    assert r.zcard(keys.SCHEDULE) == 0


def test_over_limit_keeps_unique_lock(r: redis.Redis) -> None:
    jid = jobs.UntilExecutedJob.perform_async("k")
    payload = pop_job(r)
    run(controls(r), payload, _over_limit)
    assert lock_holder(r, payload) == jid
    [(member, _)] = scheduled(r)
    assert member["jid"] == jid


def test_reschedule_writes_payload_as_fetched(r: redis.Redis) -> None:
    """Edits that inner middleware made to the payload are not written back."""
    jobs.CountJob.perform_async("k")
    payload = pop_job(r)

    def edit_then_fail(job: Job) -> None:
        job.payload["args"] = ["edited"]
        job.payload["added"] = True
        _over_limit(job)

    run(controls(r), payload, edit_then_fail)
    [(member, _)] = scheduled(r)
    assert member["args"] == ["k"]
    assert "added" not in member


def test_worker_reschedules_over_limit_job(launch: Any, r: redis.Redis) -> None:
    # Fill the job's window with acquisitions dated 10 s ahead, so that they
    # still count when the job runs, however long the start takes.
    ahead = ratelimit.window(
        "controls-test", jobs.RATE_LIMIT, redis=r, clock=lambda: time.time() + 10
    )
    for _ in range(jobs.RATE_LIMIT):
        ahead.acquire()
    launcher = launch()
    jid = jobs.RateLimitedJob.perform_async(1)

    member = wait_for(lambda: r.zrange(keys.SCHEDULE, 0, -1), timeout=10)[0]
    assert json.loads(member)["jid"] == jid
    assert r.zcard(keys.RETRY) == 0
    assert launcher.counters.pending()[1] + int(r.get(keys.STAT_FAILED) or 0) == 0


def test_release_error_logged_on_exit(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    limiter = ratelimit.concurrent("c", 1, redis=r)
    lease = limiter.acquire()
    with lease:
        # Point the limiter at a server that is not there, as during an outage.
        limiter._redis = unreachable_redis()
    assert "could not release a slot of rate limiter 'c'" in caplog.text
    limiter._redis.close()
    assert r.zcard(limiter.key) == 1
