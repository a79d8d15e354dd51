"""Queue reads and actions on a real redis-server, with pyqueue's client and raw LPUSH."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from pyqueue.api import KeyTypeError, Queue
from pyqueue.client import Client
from tests.api.helpers import BAD_QUEUE_ENTRY, encoded, job, write_bad_entries


def push(r: redis.Redis, count: int, queue: str = "default") -> list[str]:
    client = Client(redis=r)
    return [
        str(client.push({"class": "EchoJob", "args": [i], "queue": queue})) for i in range(count)
    ]


def test_all_names_and_sizes(r: redis.Redis) -> None:
    push(r, 2, "mail")
    push(r, 1, "critical")
    assert [q.name for q in Queue.all(r)] == ["critical", "mail"]
    assert Queue("mail", r).size() == 2
    assert Queue("missing", r).size() == 0


def test_latency_float_seconds_and_int_millis(r: redis.Redis) -> None:
    r.rpush("queue:a", encoded(job("old", enqueued_at=1_700_000_000.0)))
    r.rpush("queue:b", encoded(job("ms", enqueued_at=1_700_000_000_000)))
    now = 1_700_000_010.0
    assert Queue("a", r).latency(now=now) == 10.0
    assert Queue("b", r).latency(now=now) == 10.0
    assert Queue("empty", r).latency(now=now) == 0.0


def test_latency_reads_oldest_job(r: redis.Redis) -> None:
    r.lpush("queue:default", encoded(job("oldest", enqueued_at=100.0)))
    r.lpush("queue:default", encoded(job("newest", enqueued_at=200.0)))
    assert Queue("default", r).latency(now=300.0) == 200.0


def test_summaries(r: redis.Redis) -> None:
    r.sadd("queues", "default", "bad", "ms")
    r.lpush("queue:default", encoded(job("a", enqueued_at=50.0)))
    r.lpush("queue:bad", "[1,2]")
    r.set("queue:ms", "not a list")
    listing = Queue.summaries(r, now=60.0)
    assert listing.problems == ()
    rows = {row.name: row for row in listing.queues}
    assert list(rows) == ["bad", "default", "ms"]
    assert (rows["default"].size, rows["default"].latency, rows["default"].problems) == (
        1,
        10.0,
        (),
    )
    assert rows["bad"].latency == 0.0
    assert rows["bad"].problems == ("oldest job: payload is a JSON array, not an object",)
    assert rows["ms"].size == 0
    assert "needs a list" in rows["ms"].problems[0]


def test_summaries_wrong_queues_key(r: redis.Redis) -> None:
    r.set("queues", "x")
    listing = Queue.summaries(r)
    assert listing.queues == ()
    assert "key 'queues' is a string" in listing.problems[0]
    with pytest.raises(KeyTypeError):
        Queue.names(r)


def test_page_newest_and_oldest(r: redis.Redis) -> None:
    jids = push(r, 7)
    queue = Queue("default", r)
    newest = queue.page(0, 3)
    assert newest.total == 7
    assert [j.jid for j in newest.jobs] == list(reversed(jids))[:3]
    oldest = queue.page(0, 3, newest_first=False)
    assert [j.jid for j in oldest.jobs] == jids[:3]
    last = queue.page(6, 3, newest_first=False)
    assert [j.jid for j in last.jobs] == jids[6:]
    assert queue.page(10, 3).jobs == ()
    assert all(j.ok for j in newest.jobs)


def test_jobs_iterates_windows(r: redis.Redis) -> None:
    jids = push(r, 25)
    queue = Queue("default", r)
    assert [j.jid for j in queue.jobs(newest_first=False, window=10)] == jids
    assert [j.jid for j in queue.jobs(window=10)] == list(reversed(jids))


def test_find_job_and_delete(r: redis.Redis) -> None:
    jids = push(r, 3)
    queue = Queue("default", r)
    record = queue.find_job(jids[1])
    assert record is not None
    assert record.args == [1]
    assert queue.find_job("nope") is None
    assert queue.delete(record) is True
    assert queue.delete(record) is False
    assert [j.jid for j in queue.jobs(newest_first=False)] == [jids[0], jids[2]]


def test_clear(r: redis.Redis) -> None:
    push(r, 3, "mail")
    assert Queue("mail", r).clear() == 3
    assert r.exists("queue:mail") == 0
    assert not r.sismember("queues", "mail")


def test_bad_queue_entry_listed_and_deleted(r: redis.Redis) -> None:
    """A job whose args is a JSON string is listed with a problem and deleted by its raw bytes."""
    write_bad_entries(r)
    push(r, 1)
    queue = Queue("default", r)
    page = queue.page()
    assert page.total == 2
    bad = [j for j in page.jobs if j.raw == BAD_QUEUE_ENTRY]
    assert len(bad) == 1
    assert set(bad[0].problems) == {
        "args is string, not an array",
        "enqueued_at is missing, so the queue latency reads as 0",
    }
    assert bad[0].display_args == ('{"id":null,"type":"tag"}',)
    assert queue.delete(bad[0]) is True
    assert queue.size() == 1


def test_wrong_key_type(r: redis.Redis) -> None:
    r.hset("queue:default", "a", "b")
    queue = Queue("default", r)
    page = queue.page()
    assert page.jobs == ()
    assert "key 'queue:default' is a hash" in page.problems[0]
    summary = queue.summary()
    assert summary.size == 0
    assert summary.problems == page.problems
    for call in (queue.size, queue.latency, lambda: queue.delete("x")):
        with pytest.raises(KeyTypeError):
            call()
    assert queue.clear() == 0
    assert r.exists("queue:default") == 0


def test_not_json_oldest_job(r: redis.Redis) -> None:
    r.lpush("queue:default", "{oops")
    queue = Queue("default", r)
    assert queue.latency() == 0.0
    summary: Any = queue.summary()
    assert "not valid JSON" in summary.problems[0]
