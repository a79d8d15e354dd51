"""Drain rate: how fast one worker configuration empties a queue of no-op jobs.

Each run flushes the private Redis, fills the queue with a start marker, N
no-op jobs and an end marker, starts the worker and waits for the end
marker. The markers store the time they started, so the rate is N divided
by the time between them: start-up and shutdown do not count. With
several threads the end marker can start while up to C-1 no-op jobs still
run, which shifts the end by a few microseconds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import procs
from bench.server import BenchRedis

START_KEY = "bench:start"
DONE_KEY = "bench:done"

Fill = Callable[[str, int], None]
"""Push the start marker, N no-op jobs and the end marker, given the Redis URL and N."""


@dataclass(frozen=True)
class Contender:
    """One worker configuration in the drain table."""

    name: str
    command: Sequence[str]
    fill: Fill
    env: Mapping[str, str] = field(default_factory=dict)
    # What the target checks look for: "pyqueue", "sidekiq", "dramatiq", ...
    kind: str = ""
    processes: int = 1
    fetch: str = ""


@dataclass(frozen=True)
class DrainRun:
    rate: float  # jobs per second between the two markers
    cpu_us_per_job: float  # worker CPU (all its processes) per job, in microseconds
    max_rss_kb: int  # the largest RSS of one worker process during the run
    start_rss_kb: int  # the largest RSS of one worker process when the first job started


@dataclass
class DrainSeries:
    name: str
    kind: str = ""
    processes: int = 1
    fetch: str = ""
    jobs: int = 0
    runs: list[DrainRun] = field(default_factory=list)
    error: str = ""

    @property
    def rates(self) -> list[float]:
        return [run.rate for run in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.runs else 0.0


class DrainFailed(RuntimeError):
    """Raised when a worker exits early or does not reach the end marker in time."""


def measure(server: BenchRedis, contender: Contender, jobs: int) -> DrainRun:
    """Run one drain of ``jobs`` no-op jobs and return its figures."""
    conn = server.client()
    conn.flushall()
    contender.fill(server.url, jobs)
    log = Path(tempfile.mkstemp(prefix="pyqueue-bench-", suffix=".log")[1])
    worker = procs.WorkerProcess(contender.command, {**contender.env, "REDIS_URL": server.url}, log)
    try:
        return _follow(conn, worker, jobs)
    finally:
        worker.stop()
        conn.close()
        log.unlink(missing_ok=True)


def _follow(conn: redis.Redis, worker: procs.WorkerProcess, jobs: int) -> DrainRun:
    # Generous: the slowest peer here drains a few hundred jobs per second.
    deadline = time.monotonic() + 60 + jobs / 200
    cpu_at_start = 0.0
    start_rss = 0
    max_rss = 0
    while conn.get(DONE_KEY) is None:
        if not worker.alive():
            raise DrainFailed(
                f"worker exited with {worker.process.returncode}:\n{worker.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise DrainFailed(f"no end marker after {jobs} jobs:\n{worker.log_tail()}")
        max_rss = max([max_rss, *procs.tree_rss_kb(worker.pid)])
        if not cpu_at_start and conn.exists(START_KEY):
            cpu_at_start = procs.tree_cpu_seconds(worker.pid)
            start_rss = max_rss
        time.sleep(0.01)
    cpu = procs.tree_cpu_seconds(worker.pid) - cpu_at_start
    started = float(str(conn.get(START_KEY)))
    finished = float(str(conn.get(DONE_KEY)))
    return DrainRun(jobs / (finished - started), cpu * 1e6 / jobs, max_rss, start_rss)


def interleaved(
    server: BenchRedis,
    contenders: Sequence[Contender],
    jobs: int,
    repeats: int,
    echo: Callable[[str], None],
) -> list[DrainSeries]:
    """Measure every contender ``repeats`` times, one round over all of them at a time.

    Rounds spread a passing load on the machine over all rows instead of
    one. A contender whose run fails is recorded as failed and skipped after.
    """
    results = [
        DrainSeries(each.name, each.kind, each.processes, each.fetch, jobs) for each in contenders
    ]
    for index in range(repeats):
        for contender, result in zip(contenders, results, strict=True):
            if result.error:
                continue
            try:
                run = measure(server, contender, jobs)
            except DrainFailed as exc:
                result.error = str(exc).splitlines()[0]
                echo(f"  {contender.name}: run {index + 1} failed: {exc}")
                continue
            result.runs.append(run)
            echo(
                f"  {contender.name}: run {index + 1}: {run.rate:,.0f} jobs/s, "
                f"{run.cpu_us_per_job:.0f} us CPU/job, max RSS {run.max_rss_kb / 1024:.0f} MiB"
            )
    return results


def series(
    server: BenchRedis, contender: Contender, jobs: int, repeats: int, echo: Callable[[str], None]
) -> DrainSeries:
    """Measure ``repeats`` drains of one contender; a failure is recorded, not raised."""
    return interleaved(server, [contender], jobs, repeats, echo)[0]
