"""Enqueue-to-start latency on an idle worker, and the worker's idle RSS.

A producer pushes one BenchLatency job every 1/rate seconds with the time
of the push in its args. The job appends its own start time minus that
time to a list. The worker starts on an empty queue and waits in its
blocking fetch, as an idle worker does between jobs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import procs
from bench.drain import Contender
from bench.jobs import LATENCY_LIST
from bench.server import BenchRedis
from pyqueue.client import Client

# Seconds an idle worker settles after it registered before its RSS is read.
SETTLE = 2.0


@dataclass(frozen=True)
class LatencyRun:
    name: str
    p50_ms: float
    p99_ms: float
    max_ms: float
    idle_rss_kb: list[int]  # one entry per worker process
    # The p99 of each run, when this run stands for several.
    p99_runs_ms: list[float] = field(default_factory=list)


def interleaved(
    server: BenchRedis,
    rows: Sequence[Contender],
    rate: float,
    jobs: int,
    repeats: int,
    echo: Callable[[str], None],
) -> list[LatencyRun]:
    """Measure each row ``repeats`` times, in rounds over the rows; return their medians.

    One run lasts about ten seconds, and a slow phase of a virtual machine
    can last as long, so rounds spread such a phase over the rows.
    """
    runs: dict[str, list[LatencyRun]] = {row.name: [] for row in rows}
    for _ in range(repeats):
        for row in rows:
            runs[row.name].append(measure(server, row, rate, jobs, echo))
    return [combine(series) for series in runs.values()]


def combine(series: Sequence[LatencyRun]) -> LatencyRun:
    """Return the median p50 and p99 of ``series``, its largest delay and its largest idle RSS."""
    return LatencyRun(
        series[0].name,
        statistics.median(run.p50_ms for run in series),
        statistics.median(run.p99_ms for run in series),
        max(run.max_ms for run in series),
        max((run.idle_rss_kb for run in series), key=sum),
        [run.p99_ms for run in series],
    )


def measure(
    server: BenchRedis,
    contender: Contender,
    rate: float,
    jobs: int,
    echo: Callable[[str], None],
) -> LatencyRun:
    """Run ``jobs`` jobs at ``rate`` per second through an idle worker; return the delays."""
    conn = server.client()
    conn.flushall()
    log = Path(tempfile.mkstemp(prefix="pyqueue-bench-", suffix=".log")[1])
    worker = procs.WorkerProcess(contender.command, {**contender.env, "REDIS_URL": server.url}, log)
    try:
        _wait_registered(conn, worker)
        time.sleep(SETTLE)
        idle_rss = [kb for kb in procs.tree_rss_kb(worker.pid) if kb]
        _produce(server.url, rate, jobs)
        deadline = time.monotonic() + 30
        while conn.llen(LATENCY_LIST) < jobs:
            if time.monotonic() > deadline or not worker.alive():
                raise RuntimeError(
                    f"{contender.name}: latency jobs did not finish\n{worker.log_tail()}"
                )
            time.sleep(0.05)
        delays = sorted(float(value) * 1000 for value in conn.lrange(LATENCY_LIST, 0, -1))
    finally:
        worker.stop()
        conn.close()
        log.unlink(missing_ok=True)
    run = LatencyRun(
        contender.name,
        statistics.median(delays),
        delays[min(len(delays) - 1, int(len(delays) * 0.99))],
        delays[-1],
        idle_rss,
    )
    echo(
        f"  {run.name}: p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
        f"idle RSS {', '.join(f'{kb / 1024:.0f}' for kb in idle_rss)} MiB"
    )
    return run


def _wait_registered(conn: redis.Redis, worker: procs.WorkerProcess) -> None:
    deadline = time.monotonic() + 30
    while not conn.scard("processes"):
        if time.monotonic() > deadline or not worker.alive():
            raise RuntimeError(f"worker did not register:\n{worker.log_tail()}")
        time.sleep(0.05)


def _produce(url: str, rate: float, jobs: int) -> None:
    client = Client(url)
    client.redis.ping()
    interval = 1.0 / rate
    next_push = time.monotonic()
    for _ in range(jobs):
        client.push({"class": "BenchLatency", "args": [time.time()]})
        next_push += interval
        pause = next_push - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    client.redis.connection_pool.disconnect()
