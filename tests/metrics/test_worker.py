"""Metrics of a real in-process worker: jobs run by the launcher, scraped over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pyqueue.client import Client
from pyqueue.launcher import Launcher
from tests.fixtures.redis_server import free_port
from tests.metrics import jobs
from tests.metrics.scrape import Samples, scrape, value
from tests.worker.conftest import make_settings, wait_for

NOOP = {"queue": "default", "class": "MetricsSuite::NoopJob"}
FAIL = {"queue": "default", "class": "MetricsSuite::FailJob"}


@pytest.fixture
def worker(redis_url: str) -> Iterator[Launcher]:
    """A launcher with two threads serving its metrics and the cluster's on a free port."""
    settings = make_settings(
        redis_url, concurrency=2, metrics_port=free_port(), metrics_cluster=True
    )
    launcher = Launcher(settings)
    jobs.release.clear()
    launcher.start()
    try:
        yield launcher
    finally:
        jobs.release.set()
        launcher.manager.stop_now()
        launcher.stop()


def url(launcher: Launcher) -> str:
    return f"http://127.0.0.1:{launcher.settings.metrics_port}/metrics"


def push(client: Client, job_class: str, **options: Any) -> None:
    client.push({"class": job_class, "args": [], **options})


def processed(launcher: Launcher, labels: dict[str, str]) -> float:
    return value(scrape(url(launcher)), "pyqueue_jobs_processed_total", **labels) or 0


def test_worker_counts_real_jobs(worker: Launcher, redis_url: str, r: redis.Redis) -> None:
    client = Client(redis_url)
    for _ in range(3):
        push(client, "MetricsSuite::NoopJob")
    push(client, "MetricsSuite::FailJob", retry=True)
    push(client, "MetricsSuite::FailJob", retry=0)
    push(client, "MetricsSuite::FailJob", retry=False)

    wait_for(lambda: processed(worker, NOOP) == 3 and processed(worker, FAIL) == 3)
    samples: Samples = scrape(url(worker))

    assert value(samples, "pyqueue_jobs_failed_total", **FAIL) == 3
    assert value(samples, "pyqueue_jobs_retried_total", **FAIL) == 1
    assert value(samples, "pyqueue_jobs_dead_total", **FAIL) == 1
    assert value(samples, "pyqueue_jobs_failed_total", **NOOP) is None
    assert value(samples, "pyqueue_job_duration_seconds_count", **NOOP) == 3
    assert value(samples, "pyqueue_busy_workers") == 0
    assert value(samples, "pyqueue_concurrency") == 2
    assert r.zcard("retry") == 1
    assert r.zcard("dead") == 1


def test_worker_busy_and_cluster_gauges(worker: Launcher, redis_url: str) -> None:
    push(Client(redis_url), "MetricsSuite::BlockJob")

    wait_for(lambda: value(scrape(url(worker)), "pyqueue_busy_workers") == 1)
    # The heartbeat writes the busy count to Redis every 0.2 s in these settings.
    wait_for(lambda: value(scrape(url(worker)), "pyqueue_cluster_busy_workers") == 1)
    during = scrape(url(worker))
    jobs.release.set()
    wait_for(lambda: value(scrape(url(worker)), "pyqueue_busy_workers") == 0)

    assert value(during, "pyqueue_processes") == 1
    assert value(during, "pyqueue_cluster_concurrency") == 2
    assert value(during, "pyqueue_queue_size", queue="default") == 0
    assert value(during, "pyqueue_redis_up") == 1
