"""The worker configurations that the benchmark compares, and how each fills its queue.

pyqueue and Ruby Sidekiq read the same job format, so pyqueue's client fills
the queue for both. The Python peers run from their own virtual environment
(.bench-venv) and fill their queues with their own clients there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.drain import DONE_KEY, START_KEY, Contender, Fill
from bench.peers import venv
from pyqueue.client import Client

ROOT = Path(__file__).resolve().parent.parent
JOBS_RB = ROOT / "bench" / "ruby" / "jobs.rb"
FILL_BATCH = 10_000


def fill_sidekiq_format(url: str, jobs: int) -> None:
    """Push the markers and ``jobs`` BenchNoop jobs in Sidekiq's format."""
    client = Client(url)
    client.push({"class": "BenchMark", "args": [START_KEY]})
    for start in range(0, jobs, FILL_BATCH):
        count = min(FILL_BATCH, jobs - start)
        client.push_bulk({"class": "BenchNoop", "args": [[] for _ in range(count)]})
    client.push({"class": "BenchMark", "args": [DONE_KEY]})
    client.redis.connection_pool.disconnect()


def pyqueue_worker(threads: int, processes: int = 1, fetch: str | None = None) -> Contender:
    pyqueue = str(Path(sys.executable).parent / "pyqueue")
    command = [pyqueue, "run", "-r", "bench.jobs", "-c", str(threads)]
    name = f"pyqueue 1 process x {threads} threads"
    if processes > 1:
        command += ["--processes", str(processes)]
        name = f"pyqueue {processes} processes x {threads} threads"
    if fetch is not None:
        command += ["--fetch", fetch]
        name += f", {fetch} fetch"
    return Contender(
        name, command, fill_sidekiq_format, kind="pyqueue", processes=processes, fetch=fetch or ""
    )


def sidekiq_worker(threads: int) -> Contender:
    command = ["sidekiq", "-r", str(JOBS_RB), "-c", str(threads), "-q", "default"]
    return Contender(
        f"Ruby Sidekiq 6.4 1 process x {threads} threads",
        command,
        fill_sidekiq_format,
        kind="sidekiq",
    )


def cores() -> int:
    return len(os.sched_getaffinity(0))


def _peer_fill(framework: str) -> Fill:
    def fill(url: str, jobs: int) -> None:
        subprocess.run(
            [str(venv.PYTHON), "-m", "bench.peers.fill", framework, str(jobs)],
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": url},
            check=True,
        )

    return fill


def peer_workers() -> list[Contender]:
    """Return the Dramatiq, Huey and Celery configurations, run from .bench-venv."""
    bin_dir = venv.PYTHON.parent
    dramatiq = [str(bin_dir / "dramatiq"), "bench.peers.dramatiq_jobs"]
    huey = [str(bin_dir / "huey_consumer"), "bench.peers.huey_jobs.huey"]
    celery = [str(bin_dir / "celery"), "-A", "bench.peers.celery_jobs", "worker"]
    return [
        Contender(
            "Dramatiq 1 process x 8 threads",
            [*dramatiq, "--processes", "1", "--threads", "8"],
            _peer_fill("dramatiq"),
            kind="dramatiq",
        ),
        Contender(
            "Dramatiq 2 processes x 8 threads",
            [*dramatiq, "--processes", "2", "--threads", "8"],
            _peer_fill("dramatiq"),
            kind="dramatiq",
            processes=2,
        ),
        Contender(
            "Huey 1 process x 10 threads",
            [*huey, "-w", "10", "-k", "thread"],
            _peer_fill("huey"),
            kind="huey",
        ),
        Contender(
            "Huey 2 processes",
            [*huey, "-w", "2", "-k", "process"],
            _peer_fill("huey"),
            kind="huey",
            processes=2,
        ),
        Contender(
            "Celery prefork 2 processes",
            [*celery, "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"],
            _peer_fill("celery"),
            kind="celery",
            processes=2,
        ),
    ]
