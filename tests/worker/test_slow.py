"""Timing, CPU and memory bounds of a `pyqueue run` subprocess (bin/test-slow)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.worker.conftest import payload, wait_for
from tests.worker.test_lifecycle import Worker

pytestmark = pytest.mark.slow

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of ``pid`` from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5) (utime, stime); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_value(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{name} missing from /proc/{pid}/status")


@pytest.fixture
def worker_factory(redis_url: str, tmp_path: Path) -> Any:
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        worker = Worker(redis_url, tmp_path / f"worker{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def test_idle_worker_uses_little_cpu(r: redis.Redis, worker_factory: Any) -> None:
    """Five idle threads on four empty weighted queues for 60 s: under 5 % of a core."""
    worker = worker_factory("-c", "5", "-q", "a,5", "-q", "b,3", "-q", "c,1", "-q", "d,1")
    wait_for(lambda: r.scard("processes") == 1, timeout=15)
    pid = worker.process.pid
    r.config_resetstat()
    cpu_before = cpu_seconds(pid)

    time.sleep(60)

    cpu = cpu_seconds(pid) - cpu_before
    brpop = r.info("commandstats").get("cmdstat_brpop", {}).get("calls", 0)
    assert brpop <= 5 * 60 / 2 * 1.2, brpop
    assert cpu < 0.05 * 60, cpu


def test_failing_jobs_do_not_leak(r: redis.Redis, worker_factory: Any) -> None:
    """5,000 failing jobs with ten threads: constant thread count, RSS growth under 30 MB."""
    raws = [payload("WorkerSuite::FailJob", [i], f"{i:024x}", retry=False) for i in range(5000)]
    worker = worker_factory("-c", "10", "--log-level", "error")
    wait_for(lambda: r.scard("processes") == 1, timeout=15)
    pid = worker.process.pid
    threads = status_value(pid, "Threads")

    r.lpush("queue:default", *raws[:500])
    wait_for(lambda: int(r.get("stat:failed") or 0) >= 500, timeout=60, interval=0.2)
    rss_at_500 = status_value(pid, "VmRSS")

    r.lpush("queue:default", *raws[500:])
    samples = []
    while int(r.get("stat:failed") or 0) < 5000:
        samples.append(status_value(pid, "Threads"))
        time.sleep(0.2)
        assert len(samples) < 1500, "jobs did not finish within 300 s"
    rss_at_5000 = status_value(pid, "VmRSS")

    assert max(samples) <= threads + 1
    assert min(samples) >= threads - 1
    assert rss_at_5000 - rss_at_500 <= 30 * 1024
    assert r.get("stat:processed") == "5000"
