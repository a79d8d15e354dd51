"""Python mirror of tests/fixtures/ruby/jobs.rb, loaded by ``pyqueue run -r tests.interop.jobs``.

Only worker subprocesses import this module. The test process itself never
does, because tests/test_client.py registers a job named RecordArgsJob too
and one process cannot hold two jobs of one name.

A recording job pushes one JSON entry to ``interop:ran`` (the list Ruby's
jobs use), marked ``"side": "python"``. pyqueue's encoder keeps big integers
and floats exact.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from pyqueue import Job
from pyqueue.payload import dumps

RECORD_LIST = os.environ.get("INTEROP_RECORD_LIST", "interop:ran")

_connection: redis.Redis | None = None
_connection_lock = threading.Lock()


class InteropError(Exception):
    """The error the failing interop jobs raise; Ruby's jobs raise one of the same name."""


def _redis() -> redis.Redis:
    global _connection
    with _connection_lock:
        if _connection is None:
            _connection = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
        return _connection


def record(job: Job, args: list[Any]) -> None:
    entry = {
        "side": "python",
        "pid": os.getpid(),
        "jid": job.jid,
        "class": job.job_name,
        "args": args,
        "job": {key: value for key, value in job.payload.items() if key != "args"},
    }
    _redis().lpush(RECORD_LIST, dumps(entry))


class RecordArgsJob(Job):
    def perform(self, *args: Any) -> None:
        record(self, list(args))


class ShareJob(Job):
    """Sleeps, then records, so that several workers on one queue share the work."""

    def perform(self, index: int, seconds: float) -> None:
        time.sleep(seconds)
        record(self, [index, seconds])


class AlwaysFailJob(Job):
    def perform(self, *args: Any) -> None:
        raise InteropError(f"boom from AlwaysFailJob args={dumps(list(args))}")


class DieNowJob(Job):
    retry = 0

    def perform(self, *args: Any) -> None:
        raise InteropError("die now")


class SleepJob(Job):
    def perform(self, seconds: float) -> None:
        time.sleep(seconds)
        record(self, [seconds])


class FailInRubyJob(Job):
    """Succeeds here; Ruby's FailInRubyJob raises."""

    def perform(self, *args: Any) -> None:
        record(self, list(args))


class FailInPythonJob(Job):
    """Raises here; Ruby's FailInPythonJob records."""

    backtrace = True

    def perform(self, *args: Any) -> None:
        raise InteropError(f"failed in Python args={dumps(list(args))}")
