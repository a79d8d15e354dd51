"""One metrics endpoint for all children of ``pyqueue run --processes 2``.

Two children of 5 threads each finish 100 no-op jobs, then run 10 jobs that
block. The test ends one child, with SIGKILL or with its own TERM, and the
supervisor restarts it. The host endpoint must then add up only live
children in the gauges and keep every finished job in the counters.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from pyqueue.client import Client
from tests.fixtures.redis_server import free_port
from tests.metrics.scrape import Samples, scrape, value
from tests.perf.conftest import SupervisorFactory, wait_for
from tests.perf.jobs import RELEASE_KEY

NOOP = {"queue": "default", "class": "PerfSuite::Noop"}
GAUGES = ("pyqueue_busy_workers", "pyqueue_concurrency")


def busy_and_concurrency(url: str) -> tuple[float | None, float | None]:
    samples = scrape(url)
    return value(samples, "pyqueue_busy_workers"), value(samples, "pyqueue_concurrency")


# After SIGKILL, basic fetch has lost the killed child's 5 jobs, while
# reliable fetch recovers them from its working list for the new child.
# After TERM the child pushes its jobs back, and the new child runs them.
@pytest.mark.parametrize(
    ("signum", "fetch", "expected_busy"),
    [
        (signal.SIGKILL, "basic", 5),
        (signal.SIGKILL, "reliable", 10),
        (signal.SIGTERM, "basic", 10),
    ],
)
def test_host_metrics_follow_live_children(
    supervisor: SupervisorFactory,
    r: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
    fetch: str,
    expected_busy: int,
) -> None:
    metrics_dir = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    handle = supervisor("-c", "5", "--fetch", fetch, "--metrics-port", str(port))
    first, second = handle.wait_for_children(r, 2)
    client = Client(redis_url)
    client.push_bulk({"class": "PerfSuite::Noop", "args": [[] for _ in range(100)]})
    wait_for(lambda: value(scrape(url), "pyqueue_jobs_processed_total", **NOOP) == 100)
    client.push_bulk({"class": "PerfSuite::Block", "args": [[] for _ in range(10)]})
    wait_for(lambda: busy_and_concurrency(url) == (10, 10))
    before = scrape(url)
    counter_files = sorted(metrics_dir.glob(f"counter_{first}.db"))

    os.kill(first, signum)
    new_pid = handle.wait_for_new_child({first, second})
    wait_for(lambda: busy_and_concurrency(url) == (expected_busy, 10), timeout=15)
    after = scrape(url)
    r.set(RELEASE_KEY, 1)

    assert new_pid not in (first, second)
    assert value(before, "pyqueue_busy_workers") == 10
    assert value(after, "pyqueue_busy_workers") == expected_busy
    assert value(after, "pyqueue_concurrency") == 10
    assert value(after, "pyqueue_jobs_processed_total", **NOOP) == 100
    assert gauge_pids(after) == set()
    assert not list(metrics_dir.glob(f"gauge_*_{first}.db"))
    assert sorted(metrics_dir.glob(f"counter_{first}.db")) == counter_files


def gauge_pids(samples: Samples) -> set[str]:
    """Return the pid labels on busy and concurrency samples (livesum gauges carry none)."""
    return {
        dict(labels)["pid"] for name, labels in samples if name in GAUGES and "pid" in dict(labels)
    }
