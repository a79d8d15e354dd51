"""Fixtures of the fault suite: result rows for the report table, private Redis servers.

Every scenario records one row per fetch strategy with ``record_row``. When
``PYQUEUE_FAULTS_RESULTS`` names a file (bin/faults sets it), the rows are
appended to it as JSON lines, and bin/faults prints them as a table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.tally import LatencyRow, Row
from tests.fixtures.redis_server import RedisServer
from tests.reliability.conftest import WorkerFactory, workers  # noqa: F401 - fixture

RESULTS_ENV = "PYQUEUE_FAULTS_RESULTS"

RowRecorder = Callable[[Row | LatencyRow], None]


@pytest.fixture
def record_row(request: pytest.FixtureRequest) -> RowRecorder:
    """Record a result row, with the command that reruns this test."""
    test_name = request.node.name.split("[")[0]

    def record(row: Row | LatencyRow) -> None:
        row.command = f"bin/faults -k {test_name}"
        print(row.describe())
        path = os.environ.get(RESULTS_ENV)
        if path:
            with Path(path).open("a", encoding="utf-8") as results:
                results.write(json.dumps(row.as_dict()) + "\n")

    return record


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with appendonly yes, restarted by the test."""
    server = RedisServer(tmp_path / "aof-redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def debug_server(tmp_path: Path) -> Iterator[RedisServer]:
    # DEBUG SLEEP from local clients gives the slow replies.
    server = RedisServer(tmp_path / "debug-redis", extra_args=("--enable-debug-command", "local"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
