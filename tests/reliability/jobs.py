"""Jobs for the reliability tests and the fault suite.

Every run of a job increments ``reliability:runs:<jid>`` and adds the jid to
``reliability:started``; a run that reaches its end adds the jid to
``reliability:done``. A jid in neither ``done`` nor a Redis set or queue is
lost, and a jid with a run count above 1 ran twice. The jobs write through
the worker's own client (``pyqueue run`` makes it the default client), and
they retry a write for up to a minute, so that a Redis restart under load
cannot make them fail.
"""

from __future__ import annotations

import os
import time
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
    """Count a run of ``jid``; return the run number (1 for the first run)."""

    def write(conn: redis.Redis) -> int:
        pipe = conn.pipeline(transaction=True)
        pipe.incr(RUNS_PREFIX + jid)
        pipe.sadd(STARTED, jid)
        runs, _ = pipe.execute()
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
    values = conn.mget([RUNS_PREFIX + jid for jid in jids]) if jids else []
    return {jid: int(value or 0) for jid, value in zip(jids, values, strict=True)}
