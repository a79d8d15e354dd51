"""Stopping and killing workers with reliable fetch: nothing is lost, stops end early."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pyqueue.fetch import UnitOfWork
from pyqueue.launcher import Launcher
from pyqueue.manager import IDLE_GRACE
from tests.reliability import jobs
from tests.reliability.conftest import WorkerFactory
from tests.reliability.support import FIRST_RUN_SLEEP, MARK, jid_of, job, working_lists
from tests.worker.conftest import LaunchFactory, make_settings, wait_for


def test_term_pushes_running_jobs_back(r: redis.Redis, launch: LaunchFactory) -> None:
    """Jobs running at the stop timeout return to the tail of their queue, before waiting ones."""
    raws = [job(FIRST_RUN_SLEEP, [30], jid_of(i)) for i in range(3)]
    r.lpush("queue:default", *raws)
    launcher = launch(timeout=0.5, concurrency=2)
    wait_for(lambda: r.scard(jobs.STARTED) == 2)

    launcher.stop()

    # The two that ran are at the tail, so they run next; the waiting one is before them.
    queue = r.lrange("queue:default", 0, -1)
    assert queue[0] == raws[2]
    assert sorted(queue[1:]) == sorted(raws[:2])
    assert working_lists(r) == {}
    assert launcher.identity not in r.smembers("pyqueue:working_index")
    assert r.get("stat:processed") is None
    assert jobs.run_counts(r, [jid_of(0), jid_of(1)]) == {jid_of(0): 1, jid_of(1): 1}


def test_graceful_stop_acknowledges_finished_jobs(r: redis.Redis, launch: LaunchFactory) -> None:
    raws = [job(MARK, [0.3], jid_of(i)) for i in range(4)]
    r.lpush("queue:default", *raws)
    launcher = launch(timeout=10, concurrency=4)
    wait_for(lambda: r.scard(jobs.STARTED) == 4)

    launcher.stop()

    assert r.scard(jobs.DONE) == 4
    assert r.llen("queue:default") == 0
    assert working_lists(r) == {}
    assert r.get("stat:processed") == "4"


class StuckFetcher:
    """Delegates to a real fetcher, but each thread's first fetch hangs until released.

    It simulates a fetch that waits a long time for a pool connection or on
    a dead socket.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.stuck = 0
        self._seen: set[int] = set()

    def retrieve_work(self) -> UnitOfWork | None:
        ident = threading.get_ident()
        if ident not in self._seen:
            self._seen.add(ident)
            self.stuck += 1
            self.release.wait(60)
            return None
        unit: UnitOfWork | None = self.inner.retrieve_work()
        return unit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def stuck_launcher(redis_url: str) -> Iterator[tuple[Launcher, StuckFetcher]]:
    launcher = Launcher(make_settings(redis_url, timeout=25, concurrency=3))
    fetcher = StuckFetcher(launcher.manager.context.fetcher)
    launcher.manager.context.fetcher = fetcher
    launcher.start()
    try:
        yield launcher, fetcher
    finally:
        fetcher.release.set()
        launcher.stop()


def test_idle_stop_does_not_wait_for_timeout(
    stuck_launcher: tuple[Launcher, StuckFetcher], caplog: pytest.LogCaptureFixture
) -> None:
    """With no job running, a fetch that hangs does not hold the stop for the 25 s timeout."""
    launcher, fetcher = stuck_launcher
    wait_for(lambda: fetcher.stuck == 3)

    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="pyqueue.manager"):
        launcher.stop()
    took = time.monotonic() - started

    assert took < IDLE_GRACE + 3, took
    assert "shutdown timeout reached" not in caplog.text
    assert "not waiting for 3 threads still in a fetch" in caplog.text


def test_stop_waits_for_job_then_returns(r: redis.Redis, launch: LaunchFactory) -> None:
    """A job that ends before the timeout is waited for; the stop then ends without the timeout."""
    r.lpush("queue:default", job(MARK, [1.0], jid_of(1)))
    launcher = launch(timeout=25, concurrency=2)
    wait_for(lambda: launcher.busy_count() == 1)

    started = time.monotonic()
    launcher.stop()

    assert time.monotonic() - started < 1.0 + IDLE_GRACE + 2
    assert r.sismember(jobs.DONE, jid_of(1))
    assert r.get("stat:processed") == "1"


def test_sigkill_mid_job_loses_nothing(r: redis.Redis, workers: WorkerFactory) -> None:
    """A worker killed with SIGKILL mid-job: the next worker runs the job again at start."""
    raws = [job(FIRST_RUN_SLEEP, [60], jid_of(i)) for i in range(2)]
    raws.append(job(MARK, [], jid_of(2)))
    r.lpush("queue:default", *raws)
    first = workers("-c", "2")
    identity = first.wait_registered(r)
    wait_for(lambda: r.scard(jobs.STARTED) == 2, timeout=15)

    first.kill()
    assert r.llen(f"pyqueue:working:{identity}") == 2

    killed_at = time.monotonic()
    second = workers("-c", "2")
    wait_for(lambda: r.scard(jobs.DONE) == 3, timeout=15)

    assert time.monotonic() - killed_at < 15
    counts = jobs.run_counts(r, [jid_of(i) for i in range(3)])
    # The two jobs that ran at the kill ran twice; the one that waited ran once.
    assert sorted(counts.values()) == [1, 2, 2]
    assert r.llen("queue:default") == 0
    assert r.exists(f"pyqueue:working:{identity}") == 0
    assert "recovered from dead process" in second.output()

    second.send(signal.SIGTERM)
    assert second.wait(timeout=15) == 0
    assert working_lists(r) == {}
    assert r.smembers("pyqueue:working_index") == set()


def test_idle_worker_process_stops_early(r: redis.Redis, workers: WorkerFactory) -> None:
    """Twenty idle threads on a pool of four connections stop well within the timeout."""
    worker = workers("-c", "20", "-t", "25", env={"PYQUEUE_REDIS_POOL_SIZE": "4"})
    worker.wait_registered(r)
    time.sleep(2)

    started = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0

    assert time.monotonic() - started < 10
    assert "shutdown timeout reached" not in worker.output()
