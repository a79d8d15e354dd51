"""Expiring jobs: the expires_at field and dropping a job that starts too late."""

from __future__ import annotations

import json
import logging
import time

import pytest
import redis

from pyqueue import expiry, keys
from tests.controls import jobs
from tests.controls.helpers import controls, lock_holder, pop_job, run


def test_expires_at_counts_from_push() -> None:
    assert expiry.expires_at(60, now=1000.0) == 1060.0


def test_expires_at_counts_from_run_time() -> None:
    assert expiry.expires_at(60, at=5000.0, now=1000.0) == 5060.0
    # A run time already passed counts from now.
    assert expiry.expires_at(60, at=500.0, now=1000.0) == 1060.0


def test_push_writes_expires_at(r: redis.Redis) -> None:
    before = time.time()
    jobs.CountJob.set(expires_in=60).perform_async("e")
    payload = pop_job(r)
    assert before + 60 <= payload["expires_at"] <= time.time() + 60
    assert "expires_in" not in payload


def test_scheduled_push_expires_after_run_time(r: redis.Redis) -> None:
    before = time.time()
    jobs.CountJob.set(expires_in=60).perform_in(100, "e")
    payload = json.loads(r.zrange(keys.SCHEDULE, 0, 0)[0])
    assert before + 160 <= payload["expires_at"] <= time.time() + 160


def test_bulk_push_expires(r: redis.Redis) -> None:
    before = time.time()
    jobs.CountJob.set(expires_in=30).perform_bulk([["a"], ["b"]])
    for raw in r.lrange(keys.queue(jobs.QUEUE), 0, -1):
        assert before + 30 <= json.loads(raw)["expires_at"] <= time.time() + 30


def test_bulk_push_expires_per_run_time(r: redis.Redis) -> None:
    now = time.time()
    jobs.CountJob.set(expires_in=10, at=[now + 100, now + 200]).perform_bulk([["a"], ["b"]])
    members = [json.loads(m) for m in r.zrange(keys.SCHEDULE, 0, -1)]
    assert sorted(round(m["expires_at"] - now) for m in members) == [110, 210]


def test_expired_job_dropped(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyqueue.expiry")
    jobs.CountJob.set(expires_in=5).perform_async("late")
    payload = pop_job(r)
    run(controls(r, clock=lambda: payload["expires_at"] + 1), payload)
    assert jobs.runs("late") == 0
    assert r.get(keys.STAT_EXPIRED) == "1"
    assert "expired 1.000 s ago, dropped without running" in caplog.text


def test_job_before_expiry_runs(r: redis.Redis) -> None:
    jobs.CountJob.set(expires_in=5).perform_async("early")
    payload = pop_job(r)
    run(controls(r, clock=lambda: payload["expires_at"] - 0.001), payload)
    assert jobs.runs("early") == 1
    assert r.get(keys.STAT_EXPIRED) is None


def test_expired_unique_job_releases_lock(r: redis.Redis) -> None:
    jobs.UntilExecutedJob.set(expires_in=5).perform_async("late")
    payload = pop_job(r)
    assert lock_holder(r, payload) == payload["jid"]
    run(controls(r, clock=lambda: payload["expires_at"] + 1), payload)
    assert lock_holder(r, payload) is None
    assert jobs.runs("late") == 0


def test_integer_expires_at_is_seconds() -> None:
    assert expiry.is_expired({"expires_at": 1000}, now=1000.5)
    assert not expiry.is_expired({"expires_at": 1000}, now=999.0)


def test_invalid_expires_at_runs(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    jobs.CountJob.perform_async("odd")
    payload = pop_job(r)
    payload["expires_at"] = "tomorrow"
    run(controls(r), payload)
    assert jobs.runs("odd") == 1
    assert "expires_at is 'tomorrow'" in caplog.text
