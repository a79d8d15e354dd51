"""Fixtures of the job controls tests: in-process launchers and `pyqueue run` workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyqueue import config
from pyqueue.launcher import Launcher
from tests.controls import jobs
from tests.fixtures.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]

# In-process workers: a fast heartbeat, no cron, and a scheduled poller that
# peeks every second, so rescheduled and retried jobs come back quickly.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.5,
    "timeout": 2,
    "cron_poll_interval": 0,
    "poll_interval_average": 1,
    "queues": [jobs.QUEUE],
}


@pytest.fixture
def launch(redis_url: str) -> Iterator[Callable[..., Launcher]]:
    """Start in-process launchers; each one still running is stopped after the test."""
    started: list[Launcher] = []

    def factory(**overrides: Any) -> Launcher:
        settings = config.build({"redis_url": redis_url, **FAST, **overrides})
        launcher = Launcher(settings)
        launcher.start()
        started.append(launcher)
        return launcher

    try:
        yield factory
    finally:
        for launcher in started:
            launcher.stop()


class Worker:
    """A `pyqueue run` subprocess that loads tests.controls.jobs; output goes to a file."""

    def __init__(self, url: str, log: Path, queue: str = jobs.QUEUE) -> None:
        self.log = log
        command = [
            str(Path(sys.executable).with_name("pyqueue")),
            "run",
            "-r",
            "tests.controls.jobs",
            "-q",
            queue,
            "-c",
            "3",
            "--redis-url",
            url,
        ]
        env = {
            **os.environ,
            "PYQUEUE_HEARTBEAT_INTERVAL": "1",
            "PYQUEUE_POLL_INTERVAL_AVERAGE": "1",
            "PYQUEUE_CRON_POLL_INTERVAL": "0",
            "PYQUEUE_TIMEOUT": "2",
        }
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker, as a crash would; nothing happens if it already exited."""
        self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def wait(self) -> None:
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def two_workers(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Worker]]:
    """Two `pyqueue run` processes on the private Redis, shared by the tests of a module."""
    directory = tmp_path_factory.mktemp("controls-workers")
    workers = [Worker(redis_server.url, directory / f"worker{i}.log") for i in range(2)]
    try:
        yield workers
    finally:
        # Both stop at once, so the test waits for one shutdown, not two.
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()
