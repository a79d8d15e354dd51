"""The default size of the app's PostgreSQL pool follows the worker that runs the jobs."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from app_jobs import db, settings
from app_jobs.settings import load_settings
from pyqueue import Job, config
from pyqueue.launcher import Launcher, current_settings

# What PoolSizeJob saw: the max_size of the pool that db.get_pool() opened.
pool_sizes: queue.SimpleQueue[int] = queue.SimpleQueue()


class PoolSizeJob(Job, name="AppPoolSuite::PoolSizeJob"):
    def perform(self) -> None:
        pool_sizes.put(db.get_pool().max_size)


@contextmanager
def running_worker(redis_url: str, concurrency: int) -> Iterator[Launcher]:
    """Run an in-process worker with a quick heartbeat and shutdown, and no cron poller."""
    worker_settings = config.build(
        {
            "redis_url": redis_url,
            "concurrency": concurrency,
            "heartbeat_interval": 0.2,
            "timeout": 2,
            "cron_poll_interval": 0,
            "poll_interval_average": 60,
        }
    )
    launcher = Launcher(worker_settings)
    launcher.start()
    try:
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture
def app_env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Jobs read DATABASE_URL and REDIS_URL through the process-wide settings and pool."""
    monkeypatch.delenv("PYQUEUE_CONCURRENCY", raising=False)
    monkeypatch.delenv("APP_JOBS_DB_POOL_SIZE", raising=False)
    settings.get_settings.cache_clear()
    db.close_pool()
    try:
        yield
    finally:
        db.close_pool()
        settings.get_settings.cache_clear()


def test_pool_size_without_worker() -> None:
    assert current_settings() is None
    assert load_settings({}).pool_size == 7
    assert load_settings({"PYQUEUE_CONCURRENCY": "10"}).pool_size == 12
    assert load_settings({"APP_JOBS_DB_POOL_SIZE": "4"}).pool_size == 4


def test_pool_size_follows_running_worker(redis_url: str) -> None:
    with running_worker(redis_url, concurrency=7):
        assert load_settings({}).pool_size == 9
        # In `pyqueue run -c 7`, the flag wins over PYQUEUE_CONCURRENCY.
        assert load_settings({"PYQUEUE_CONCURRENCY": "3"}).pool_size == 9
        assert load_settings({"APP_JOBS_DB_POOL_SIZE": "4"}).pool_size == 4

    assert load_settings({"PYQUEUE_CONCURRENCY": "3"}).pool_size == 5


def test_job_opens_pool_sized_by_worker(app_env: None, redis_url: str) -> None:
    with running_worker(redis_url, concurrency=7) as launcher:
        PoolSizeJob.set(client=launcher.client).perform_async()
        try:
            max_size = pool_sizes.get(timeout=10)
        except queue.Empty:
            pytest.fail("PoolSizeJob did not finish within 10 s; its failure is in the log")

    assert max_size == 9
