"""Per-job time limits: the watchdog, what it can interrupt, and failed jobs in the retry set."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

import pytest
import redis

from pyqueue import keys
from pyqueue.controls import time_limit
from pyqueue.timeout import JobTimeout, Watchdog, run_with_time_limit
from tests.controls import jobs
from tests.controls.helpers import controls, pop_job, run
from tests.worker.conftest import wait_for


def busy_loop(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_python_loop_interrupted() -> None:
    started = time.monotonic()
    with pytest.raises(JobTimeout, match="ran longer than its timeout of 0.2 s"):
        run_with_time_limit(0.2, lambda: busy_loop(5.0))
    assert time.monotonic() - started < 4.0


def test_fast_call_returns() -> None:
    dog = Watchdog()
    results: list[int] = []
    run_with_time_limit(5.0, lambda: results.append(1), watchdog=dog)
    assert results == [1]
    assert dog.pending() == 0


def test_no_timeout_leaks_after_return() -> None:
    """Calls that end right at their limit never leave a JobTimeout pending for later code."""
    dog = Watchdog()
    leaked = 0
    for _ in range(300):
        with contextlib.suppress(JobTimeout):
            run_with_time_limit(0.001, lambda: busy_loop(0.001), watchdog=dog)
        try:
            # Python code after the limited call: a stray JobTimeout would land here.
            for _ in range(2000):
                pass
        except JobTimeout:
            leaked += 1
    assert leaked == 0
    assert dog.pending() == 0


def test_sleep_in_c_not_cut_short() -> None:
    """time.sleep is one C call: JobTimeout arrives only after it returns."""

    def sleep_then_compute() -> None:
        time.sleep(0.6)
        # Python code after the sleep, where the pending exception can land.
        busy_loop(5.0)

    started = time.monotonic()
    with pytest.raises(JobTimeout):
        run_with_time_limit(0.1, sleep_then_compute)
    assert time.monotonic() - started >= 0.6


def test_swallowed_timeout_returns() -> None:
    """A call that catches BaseException keeps running after the limit and returns."""

    def stubborn() -> None:
        try:
            busy_loop(5.0)
        except BaseException:
            return

    run_with_time_limit(0.1, stubborn)


def test_stuck_job_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyqueue.timeout")
    raised: list[tuple[int, Any]] = []
    dog = Watchdog(raise_exc=lambda ident, exc: raised.append((ident, exc)), stuck_after=0.1)
    entry = dog.watch(0.05, ident=12345, jid="abc")
    wait_for(lambda: "still running" in caplog.text, timeout=5)
    assert dog.cancel(entry)
    # Raised once at the limit, then cleared by the cancel.
    assert raised == [(12345, JobTimeout), (12345, None)]
    assert "time limit of 0.05 s reached" in caplog.text


def test_cancelled_watches_compacted() -> None:
    dog = Watchdog()
    for _ in range(3000):
        dog.cancel(dog.watch(3600.0))
    dog.cancel(dog.watch(3600.0))
    wait_for(lambda: dog.heap_size() < 2100, timeout=5)
    assert dog.pending() == 0


def test_watch_other_thread() -> None:
    stop = threading.Event()
    outcome: list[str] = []

    def target() -> None:
        try:
            while not stop.is_set():
                pass
            outcome.append("returned")
        except JobTimeout:
            outcome.append("timeout")

    thread = threading.Thread(target=target)
    thread.start()
    dog = Watchdog()
    assert thread.ident is not None
    dog.watch(0.1, ident=thread.ident)
    thread.join(5)
    stop.set()
    assert outcome == ["timeout"]


def test_time_limit_sources() -> None:
    job = jobs.SlowJob()
    assert time_limit(job, {}) == 0.5
    assert time_limit(job, {"timeout": 2}) == 2.0
    assert time_limit(jobs.CountJob(), {}) is None
    assert time_limit(jobs.CountJob(), {"timeout": "soon"}) is None
    assert time_limit(jobs.CountJob(), {"timeout": 0}) is None


def test_push_option_sets_payload(r: redis.Redis) -> None:
    jobs.CountJob.set(timeout=3).perform_async("t")
    assert pop_job(r)["timeout"] == 3.0
    jobs.SlowJob.perform_async("t", 0)
    assert pop_job(r)["timeout"] == 0.5


def test_class_timeout_applies_without_field(r: redis.Redis) -> None:
    """A job pushed by another producer (no timeout field) gets its class's limit."""
    jobs.SlowJob.perform_async("t", 5.0)
    payload = pop_job(r)
    del payload["timeout"]
    with pytest.raises(JobTimeout, match="timeout of 0.5 s"):
        run(controls(r), payload)


def test_worker_records_timeout(launch: Any, r: redis.Redis) -> None:
    launch()
    jid = jobs.SlowJob.set(timeout=0.2).perform_async("slow", 5.0)
    entry = wait_for(lambda: r.zrange(keys.RETRY, 0, -1), timeout=10)[0]
    job = json.loads(entry)
    assert job["jid"] == jid
    assert job["error_class"] == "JobTimeout"
    assert "timeout of 0.2 s" in job["error_message"]
    assert job["retry_count"] == 0
    assert jobs.runs("slow") == 1
