"""Enqueue rate: pyqueue's client against Sidekiq's, one job at a time and in bulk.

Both push BenchNoop jobs with empty args to the benchmark's private Redis,
over one connection each, and time only the pushes (not the start of the
interpreter nor the connect).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.server import BenchRedis
from pyqueue.client import Client

ROOT = Path(__file__).resolve().parent.parent
ENQUEUE_RB = ROOT / "bench" / "ruby" / "enqueue.rb"


@dataclass
class EnqueueSeries:
    name: str
    jobs: int
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


def pyqueue_seconds(url: str, mode: str, jobs: int) -> float:
    """Return the seconds pyqueue's Client takes to push ``jobs`` jobs in ``mode``."""
    client = Client(url)
    client.redis.ping()
    started = time.perf_counter()
    if mode == "single":
        for _ in range(jobs):
            client.push({"class": "BenchNoop", "args": []})
    else:
        client.push_bulk({"class": "BenchNoop", "args": [[] for _ in range(jobs)]})
    elapsed = time.perf_counter() - started
    client.redis.connection_pool.disconnect()
    return elapsed


def sidekiq_seconds(url: str, mode: str, jobs: int) -> float:
    """Return the seconds Sidekiq 6.4's client takes, as bench/ruby/enqueue.rb measures them."""
    result = subprocess.run(
        ["ruby", str(ENQUEUE_RB), mode, str(jobs)],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"enqueue.rb failed: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def measure(
    server: BenchRedis,
    single_jobs: int,
    bulk_jobs: int,
    repeats: int,
    echo: Callable[[str], None],
) -> list[EnqueueSeries]:
    """Return four series: pyqueue and Sidekiq, one at a time and bulk, in jobs per second."""
    timers = {"pyqueue": pyqueue_seconds, "Ruby Sidekiq 6.4": sidekiq_seconds}
    results: list[EnqueueSeries] = []
    for mode, jobs in (("single", single_jobs), ("bulk", bulk_jobs)):
        label = "one at a time" if mode == "single" else "push_bulk"
        for name, timer in timers.items():
            series = EnqueueSeries(f"{name} {label}", jobs)
            for _ in range(repeats):
                conn = server.client()
                conn.flushall()
                conn.close()
                series.rates.append(jobs / timer(server.url, mode, jobs))
            echo(f"  {series.name}: {series.median:,.0f} jobs/s")
            results.append(series)
    return results
