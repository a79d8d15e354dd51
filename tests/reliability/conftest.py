"""Fixtures for the reliability tests: in-process launchers, worker subprocesses and a
private Redis server with an append-only file for restart tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.redis_server import RedisServer
from tests.reliability.support import WorkerProcess
from tests.worker.conftest import fresh_redis, launch  # noqa: F401 - fixtures used here

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start worker subprocesses on the private server; each is killed after the test."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, url: str | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log = tmp_path / f"worker{len(started)}.log"
        worker = WorkerProcess(url or redis_url, log, *args, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A second redis-server with appendonly yes, for tests that restart it."""
    server = RedisServer(tmp_path / "aof-redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
