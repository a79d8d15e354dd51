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
