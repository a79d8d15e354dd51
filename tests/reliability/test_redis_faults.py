"""Redis faults while a worker runs: a server restart and killed client connections."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

import pyqueue
from pyqueue.client import Client
from pyqueue.launcher import Launcher
from tests.fixtures.redis_server import RedisServer
from tests.reliability import jobs
from tests.reliability.support import MARK
from tests.worker.conftest import LaunchFactory, make_settings, wait_for

SCHEDULED_JID = "b03a00000000000000000001"
NOW_JID = "b03a00000000000000000002"
KILLED_JID = "b03b00000000000000000001"


@pytest.fixture
def aof_worker(aof_server: RedisServer) -> Iterator[Launcher]:
    """A worker on the append-only server; its jobs write to that server too."""
    pyqueue.configure_client(Client(aof_server.url))
    settings = make_settings(
        aof_server.url, concurrency=3, poll_interval_average=1, timeout=2, cron_poll_interval=5
    )
    launcher = Launcher(settings)
    launcher.start()
    try:
        yield launcher
    finally:
        launcher.stop()
        pyqueue.configure_client(None)


def thread_names() -> set[str]:
    return {thread.name for thread in threading.enumerate()}


def test_restart_keeps_scheduled_and_new_jobs(
    aof_server: RedisServer, aof_worker: Launcher, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis restarts while a job is scheduled: new jobs run at once, the scheduled one on time."""
    conn = aof_server.client()
    client = Client(aof_server.url)
    started = time.time()
    client.push({"class": MARK, "args": [], "jid": SCHEDULED_JID, "at": started + 6})

    with caplog.at_level(logging.INFO):
        time.sleep(1)
        aof_server.restart(down_for=2)
        time.sleep(max(0.0, started + 4 - time.time()))
        client.push({"class": MARK, "args": [], "jid": NOW_JID})
        pushed = time.time()
        wait_for(lambda: conn.sismember(jobs.DONE, NOW_JID), timeout=5)
        assert time.time() - pushed < 5
        wait_for(lambda: conn.sismember(jobs.DONE, SCHEDULED_JID), timeout=12)

    ran_at = time.time()
    # Due at +6 s; the poller cycles about every second (poll_interval_average 1).
    assert started + 6 <= ran_at <= started + 6 + 1 + 5
    assert conn.zcard("schedule") == 0
    assert jobs.run_counts(conn, [SCHEDULED_JID, NOW_JID]) == {SCHEDULED_JID: 1, NOW_JID: 1}
    assert len(aof_worker.manager.processors()) == 3
    assert {"pyqueue-poller", "pyqueue-cron", "pyqueue-heartbeat", "pyqueue-recovery"} <= (
        thread_names()
    )
    beat = conn.hget(aof_worker.identity, "beat")
    wait_for(lambda: conn.hget(aof_worker.identity, "beat") != beat, timeout=2)
    # Each component logs the outage once when it starts and once when it ends.
    starts = Counter(r.name for r in caplog.records if "is unavailable" in r.getMessage())
    ends = Counter(r.name for r in caplog.records if "available again" in r.getMessage())
    assert {"pyqueue.reliable_fetch", "pyqueue.heartbeat"} <= set(starts)
    assert all(count == 1 for count in starts.values()), starts
    assert all(count == 1 for count in ends.values()), ends
    assert set(ends) == set(starts)


def test_killed_connections_reconnect(
    r: redis.Redis, launch: LaunchFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """CLIENT KILL TYPE normal while idle: the next job runs at once and no thread dies."""
    launcher = launch(concurrency=3)
    time.sleep(1)

    with caplog.at_level(logging.INFO):
        killed = r.execute_command("CLIENT", "KILL", "TYPE", "normal")
        time.sleep(2)
        r.lpush("queue:default", f'{{"class":"{MARK}","args":[],"jid":"{KILLED_JID}"}}')
        pushed = time.monotonic()
        wait_for(lambda: r.sismember(jobs.DONE, KILLED_JID), timeout=5)

    assert killed >= 3
    assert time.monotonic() - pushed < 5
    assert launcher.manager._started == 3
    assert "died" not in caplog.text
    starts = Counter(rec.name for rec in caplog.records if "is unavailable" in rec.getMessage())
    assert all(count <= 1 for count in starts.values()), starts
    assert r.llen("queue:default") == 0
