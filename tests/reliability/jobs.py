"""Jobs for the reliability tests and the fault suite.

Every run of a job adds a random run id to the SET ``reliability:runs:<jid>``
and the jid to ``reliability:started``. A run that reaches its end also adds
the jid to ``reliability:done``. A jid in neither ``done`` nor a Redis set or
queue is lost, and a jid with more than one run id ran twice. Runs are a SET
of ids rather than a counter because redis-py repeats a command whose reply
timed out, and a repeated INCR would count one run twice.

The jobs write through the worker's own client (``pyqueue run`` makes it
the default client), and they retry a write for up to a minute, so that a
Redis restart under load cannot make them fail.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from pyqueue import Job
from pyqueue.client import default_client

RUNS_PREFIX = "reliability:runs:"
STARTED = "reliability:started"
DONE = "reliability:done"
WRITE_PATIENCE = 60.0


def _write(action: Callable[[redis.Redis], Any]) -> Any:
    deadline = time.monotonic() + WRITE_PATIENCE
    while True:
        try:
            return action(default_client().redis)
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def mark_start(jid: str) -> int:
    """Record a run of ``jid``; return the run number (1 for the first run)."""
    run_id = uuid.uuid4().hex

    def write(conn: redis.Redis) -> int:
        pipe = conn.pipeline(transaction=True)
        pipe.sadd(RUNS_PREFIX + jid, run_id)
        pipe.scard(RUNS_PREFIX + jid)
        pipe.sadd(STARTED, jid)
        _, runs, _ = pipe.execute()
        return int(runs)

    return int(_write(write))


def mark_done(jid: str) -> None:
    _write(lambda conn: conn.sadd(DONE, jid))


def sleep_in_slices(seconds: float) -> None:
    """Sleep in 20 ms slices, so that a Shutdown raised in the thread ends the sleep."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)


class MarkJob(Job, name="Reliability::MarkJob"):
    """Records its run, sleeps ``seconds``, records that it finished."""

    def perform(self, seconds: float = 0.0) -> None:
        mark_start(self.jid)
        sleep_in_slices(seconds)
        mark_done(self.jid)


class FirstRunSleepJob(Job, name="Reliability::FirstRunSleepJob"):
    """Sleeps ``seconds`` on its first run only, so a run after a kill or stop ends at once."""

    def perform(self, seconds: float) -> None:
        if mark_start(self.jid) == 1:
            sleep_in_slices(seconds)
        mark_done(self.jid)


class ExitJob(Job, name="Reliability::ExitJob"):
    """Ends its whole process with ``os._exit``, as a crash in a C extension would."""

    def perform(self) -> None:
        mark_start(self.jid)
        os._exit(3)


def run_counts(conn: redis.Redis, jids: list[str]) -> dict[str, int]:
    """Return the number of runs of each jid (0 when it never started)."""
    counts: dict[str, int] = {}
    for start in range(0, len(jids), 10_000):
        chunk = jids[start : start + 10_000]
        pipe = conn.pipeline(transaction=False)
        for jid in chunk:
            pipe.scard(RUNS_PREFIX + jid)
        counts.update(zip(chunk, (int(n) for n in pipe.execute()), strict=True))
    return counts


LATENCY = "reliability:latency"


class LatencyJob(Job, name="Reliability::LatencyJob"):
    """Records ``<queue> <seconds from enqueued_at to start>`` in ``reliability:latency``."""

    def perform(self) -> None:
        started = time.time()
        enqueued_at = float(self.payload["enqueued_at"])
        queue = str(self.payload.get("queue"))
        _write(lambda conn: conn.rpush(LATENCY, f"{queue} {started - enqueued_at:.6f}"))
