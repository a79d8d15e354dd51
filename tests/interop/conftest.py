"""Fixtures of the interop tests: ``pyqueue run`` workers beside Ruby Sidekiq."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.fixtures.redis_server import RedisServer
from tests.interop.worker import PyqueueRun, require_pyqueue_run

PyqueueFactory = Callable[..., PyqueueRun]


@pytest.fixture
def pyqueue_run(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PyqueueFactory]:
    """Factory that starts ``pyqueue run`` workers and stops them all after the test."""
    yield from _worker_factory(redis_server, tmp_path_factory)


@pytest.fixture(scope="module")
def pyqueue_run_module(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PyqueueFactory]:
    """Factory like ``pyqueue_run`` whose workers live until the test module ends.

    The ``redis_url`` fixture flushes the database before each test; the
    worker's next heartbeat registers it again.
    """
    yield from _worker_factory(redis_server, tmp_path_factory)


def _worker_factory(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PyqueueFactory]:
    require_pyqueue_run()
    started: list[PyqueueRun] = []

    def start(queues: Sequence[str] = ("default",), **options: Any) -> PyqueueRun:
        worker = PyqueueRun(redis_server.url, queues, tmp_path_factory.mktemp("pyqueue"), **options)
        started.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
