"""Helpers for the reliability tests and the fault suite: payloads, worker subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
PYQUEUE = Path(sys.executable).with_name("pyqueue")
MARK = "Reliability::MarkJob"
FIRST_RUN_SLEEP = "Reliability::FirstRunSleepJob"
EXIT = "Reliability::ExitJob"
LATENCY = "Reliability::LatencyJob"


def job(job_class: str, args: list[Any], jid: str, queue: str = "default", **extra: Any) -> str:
    """Return a job string as a producer pushes it."""
    item = {"class": job_class, "args": args, "queue": queue, "retry": True, "jid": jid}
    item.update(extra)
    return json.dumps(item, separators=(",", ":"))


def jid_of(number: int) -> str:
    return f"{number:024x}"


def working_lists(conn: redis.Redis) -> dict[str, list[str]]:
    """Return every working list with its jobs."""
    return {str(key): conn.lrange(key, 0, -1) for key in conn.scan_iter("pyqueue:working:*")}


class WorkerProcess:
    """A ``pyqueue run -r tests.reliability.jobs`` subprocess, logging to a file."""

    def __init__(self, redis_url: str, log: Path, *args: str, env: dict[str, str] | None = None):
        self.redis_url = redis_url
        self.log = log
        self.command = [
            str(PYQUEUE),
            "run",
            "-r",
            "tests.reliability.jobs",
            "--redis-url",
            redis_url,
            *args,
        ]
        # A one-second heartbeat shows the running job quickly, and no cron poller.
        settings = {"PYQUEUE_HEARTBEAT_INTERVAL": "1", "PYQUEUE_CRON_POLL_INTERVAL": "0"}
        full_env = {**os.environ, **settings, **(env or {})}
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=full_env, stdout=output, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_registered(self, conn: redis.Redis, timeout: float = 20.0) -> str:
        """Return the identity once the process is in ``processes``."""
        marker = f":{self.pid}:"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited at start:\n{self.output()[-3000:]}")
            for member in conn.smembers("processes"):
                if marker in member:
                    return str(member)
            time.sleep(0.05)
        pytest.fail(f"worker {self.pid} did not register within {timeout} s:\n{self.output()}")

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {timeout} s:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and reap it, so its pid no longer exists."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
