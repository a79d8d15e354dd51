"""Stats snapshot, history and reset on a real redis-server."""

from __future__ import annotations

import datetime as dt

import pytest
import redis

from pyqueue.api import Stats
from pyqueue.client import Client
from tests.api.helpers import encoded, failed_job, job, write_process


def test_snapshot_counts_everything(r: redis.Redis) -> None:
    r.mset({"stat:processed": 120, "stat:failed": 7})
    client = Client(redis=r)
    for queue, count in (("default", 2), ("mail", 3)):
        for i in range(count):
            client.push({"class": "EchoJob", "args": [i], "queue": queue})
    r.zadd("schedule", {encoded(job("s1")): 1.0})
    r.zadd("retry", {encoded(failed_job("r1")): 1.0, encoded(failed_job("r2")): 2.0})
    r.zadd("dead", {encoded(failed_job("d1")): 1.0})
    write_process(r, "host:1:aaaaaaaaaaaa", busy=2)
    write_process(r, "host:2:bbbbbbbbbbbb", busy=1)
    r.sadd("processes", "host:3:expired00000")

    stats = Stats(r).snapshot()
    assert stats.problems == ()
    assert (stats.processed, stats.failed) == (120, 7)
    assert stats.enqueued == 5
    assert stats.queues == {"default": 2, "mail": 3}
    assert (stats.scheduled_size, stats.retry_size, stats.dead_size) == (1, 2, 1)
    assert stats.processes_size == 3
    assert stats.workers_size == 3
    assert 0 <= stats.default_queue_latency < 60


def test_snapshot_empty(r: redis.Redis) -> None:
    stats = Stats(r).snapshot()
    assert stats.processed == 0
    assert stats.enqueued == 0
    assert stats.queues == {}
    assert stats.default_queue_latency == 0.0
    assert stats.problems == ()


def test_snapshot_default_latency(r: redis.Redis) -> None:
    r.lpush("queue:default", encoded(job("a", enqueued_at=1_000.0)))
    assert Stats(r).snapshot(now=1_030.0).default_queue_latency == 30.0


def test_snapshot_flags_bad_data(r: redis.Redis) -> None:
    r.set("stat:processed", "12abc")
    r.hset("stat:failed", "a", "1")
    r.set("dead", "x")
    r.sadd("queues", "default", "broken")
    r.set("queue:broken", "x")
    r.lpush("queue:default", "[1]")
    stats = Stats(r).snapshot()
    assert stats.processed == 12
    assert stats.failed == 0
    assert stats.dead_size == 0
    assert stats.queues == {"default": 1, "broken": 0}
    problems = "\n".join(stats.problems)
    assert "stat:processed is '12abc', not an integer; read as 12" in problems
    assert "key 'stat:failed' is a hash" in problems
    assert "key 'dead' is a string" in problems
    assert "key 'queue:broken' is a string" in problems
    assert len(stats.problems) == 4


def test_snapshot_wrong_queues_and_processes(r: redis.Redis) -> None:
    r.set("queues", "x")
    r.set("processes", "x")
    stats = Stats(r).snapshot()
    assert stats.queues == {}
    assert stats.processes_size == 0
    assert stats.workers_size == 0
    assert len(stats.problems) == 2


def test_history_reads_daily_keys(r: redis.Redis) -> None:
    end = dt.date(2026, 3, 2)
    r.mset(
        {
            "stat:processed:2026-03-02": 10,
            "stat:processed:2026-02-28": 4,
            "stat:failed:2026-03-01": 2,
        }
    )
    history = Stats(r).history(3, end=end)
    assert history.processed == {"2026-03-02": 10, "2026-03-01": 0, "2026-02-28": 4}
    assert history.failed == {"2026-03-02": 0, "2026-03-01": 2, "2026-02-28": 0}
    assert list(history.processed) == ["2026-03-02", "2026-03-01", "2026-02-28"]
    assert history.problems == ()


def test_history_limits(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="between 1 and 1825"):
        Stats(r).history(0)
    with pytest.raises(ValueError):
        Stats(r).history(1826)
    assert len(Stats(r).history(1825).processed) == 1825


def test_reset(r: redis.Redis) -> None:
    r.mset({"stat:processed": 5, "stat:failed": 3, "stat:processed:2026-01-01": 5})
    stats = Stats(r)
    stats.reset("failed")
    assert r.mget("stat:processed", "stat:failed") == ["5", "0"]
    stats.reset()
    assert r.mget("stat:processed", "stat:failed") == ["0", "0"]
    assert r.get("stat:processed:2026-01-01") == "5"
    with pytest.raises(ValueError, match="cannot reset 'busy'"):
        stats.reset("busy")
