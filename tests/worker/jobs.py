"""Jobs for the worker tests, importable by an in-process launcher and by
``pyqueue run -r tests.worker.jobs`` in a subprocess.

Registered names start with ``WorkerSuite::`` so that they never clash with
jobs that other test modules register in the same pytest session.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pyqueue import Job

# Jobs run by an in-process worker append (queue, jid, args) here.
performed: list[tuple[str, str, list[Any]]] = []
performed_lock = threading.Lock()


def reset() -> None:
    with performed_lock:
        performed.clear()


def record(job: Job, args: list[Any]) -> None:
    with performed_lock:
        performed.append((str(job.payload.get("queue")), job.jid, args))


class RecordJob(Job, name="WorkerSuite::RecordJob"):
    def perform(self, *args: Any) -> None:
        record(self, list(args))


class NoopJob(Job, name="WorkerSuite::NoopJob"):
    def perform(self, *args: Any) -> None:
        return None


class FailJob(Job, name="WorkerSuite::FailJob"):
    retry = False

    def perform(self, *args: Any) -> None:
        record(self, list(args))
        raise RuntimeError("FailJob always fails")


class SleepJob(Job, name="WorkerSuite::SleepJob"):
    """Sleeps in one C call, as a job blocked in I/O does: nothing interrupts it."""

    def perform(self, seconds: float) -> None:
        time.sleep(seconds)


class SliceSleepJob(Job, name="WorkerSuite::SliceSleepJob"):
    """Sleeps in 20 ms slices, so an asynchronous Shutdown ends it between slices."""

    def perform(self, seconds: float) -> None:
        record(self, [seconds])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
