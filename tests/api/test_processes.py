"""ProcessSet and Workers on data written by pyqueue's heartbeat and by hand as Sidekiq 6.4.1."""

from __future__ import annotations

import json

import pytest
import redis

from pyqueue import stats
from pyqueue.api import NotFound, ProcessSet, Workers
from pyqueue.config import Settings
from pyqueue.heartbeat import Heartbeat
from tests.api.helpers import encoded, job, write_process


def heartbeat(r: redis.Redis, identity: str, signals: list[str] | None = None) -> Heartbeat:
    received = signals if signals is not None else []
    return Heartbeat(
        r,
        Settings(concurrency=3, queues=(("critical", 0), ("default", 0)), tag="api-test"),
        identity,
        stats.Counters(),
        stats.WorkState(),
        is_quiet=lambda: False,
        on_signal=received.append,
    )


def test_all_reads_pyqueue_heartbeat(r: redis.Redis) -> None:
    beat = heartbeat(r, "worker-1:100:0123456789ab")
    beat.beat()
    records = ProcessSet(r).all()
    assert len(records) == 1
    record = records[0]
    assert record.problems == ()
    assert record.identity == "worker-1:100:0123456789ab"
    assert record.hostname == "worker-1"
    assert record.tag == "api-test"
    assert record.queues == ("critical", "default")
    assert record.concurrency == 3
    assert record.busy == 0
    assert record.quiet is False
    assert record.stopping is False
    assert record.rss_kb is not None and record.rss_kb > 0
    assert record.rtt_us is not None
    assert record.beat is not None and record.started_at is not None
    assert record.info is not None and record.info["identity"] == record.identity


def test_all_skips_expired_and_flags_bad_info(r: redis.Redis) -> None:
    write_process(r, "a:1:aaaaaaaaaaaa", rss=1000)
    write_process(r, "b:2:bbbbbbbbbbbb", info="{broken", quiet=True)
    write_process(r, "c:3:cccccccccccc", info="[1]")
    r.sadd("processes", "gone:4:dddddddddddd")
    r.sadd("processes", "str:5:eeeeeeeeeeee")
    r.set("str:5:eeeeeeeeeeee", "x")
    records = {record.identity: record for record in ProcessSet(r).all()}
    assert sorted(records) == [
        "a:1:aaaaaaaaaaaa",
        "b:2:bbbbbbbbbbbb",
        "c:3:cccccccccccc",
        "str:5:eeeeeeeeeeee",
    ]
    assert records["a:1:aaaaaaaaaaaa"].problems == ()
    assert "info is not valid JSON" in records["b:2:bbbbbbbbbbbb"].problems[0]
    assert records["b:2:bbbbbbbbbbbb"].stopping is True
    assert records["b:2:bbbbbbbbbbbb"].info is None
    assert records["c:3:cccccccccccc"].problems == ("info is a JSON array, not an object",)
    assert (
        "is a string, but Sidekiq's layout needs a hash"
        in records["str:5:eeeeeeeeeeee"].problems[0]
    )
    assert ProcessSet(r).size() == 5


def test_concurrency_field_overrides_info(r: redis.Redis) -> None:
    write_process(r, "a:1:aaaaaaaaaaaa", rss=1000)
    write_process(r, "b:2:bbbbbbbbbbbb", rss=500, extra={"concurrency": "8"})
    processes = ProcessSet(r)
    assert [p.concurrency for p in processes.all()] == [5, 8]
    assert processes.total_concurrency() == 13
    assert processes.total_rss() == 1500


def test_quiet_and_stop_reach_heartbeat(r: redis.Redis) -> None:
    received: list[str] = []
    beat = heartbeat(r, "worker-2:200:0123456789ab", received)
    beat.beat()
    processes = ProcessSet(r)
    processes.quiet("worker-2:200:0123456789ab")
    processes.stop("worker-2:200:0123456789ab")
    assert r.lrange("worker-2:200:0123456789ab-signals", 0, -1) == ["TERM", "TSTP"]
    assert 0 < r.ttl("worker-2:200:0123456789ab-signals") <= 60
    beat.beat()
    beat.beat()
    assert received == ["TSTP", "TERM"]


def test_signal_to_unknown_process(r: redis.Redis) -> None:
    r.sadd("processes", "gone:1:aaaaaaaaaaaa")
    with pytest.raises(NotFound, match="no live process 'gone:1:aaaaaaaaaaaa'"):
        ProcessSet(r).quiet("gone:1:aaaaaaaaaaaa")
    with pytest.raises(NotFound):
        ProcessSet(r).stop("nothing")
    assert r.exists("gone:1:aaaaaaaaaaaa-signals") == 0


def test_cleanup_removes_expired_once_a_minute(r: redis.Redis) -> None:
    write_process(r, "a:1:aaaaaaaaaaaa")
    r.sadd("processes", "gone:2:bbbbbbbbbbbb", "gone:3:cccccccccccc")
    processes = ProcessSet(r)
    assert processes.cleanup() == 2
    assert r.smembers("processes") == {"a:1:aaaaaaaaaaaa"}
    r.sadd("processes", "gone:4:dddddddddddd")
    assert processes.cleanup() == 0
    assert 0 < r.ttl("process_cleanup") <= 60


def test_workers_from_pyqueue_heartbeat(r: redis.Redis) -> None:
    beat = heartbeat(r, "worker-3:300:0123456789ab")
    raw = encoded(job("running1", queue="critical"))
    beat.work.register("t1", "critical", raw, run_at=1_700_000_100.0)
    beat.work.register("t2", "default", encoded(job("running2")), run_at=1_700_000_050.0)
    beat.beat()
    workers = Workers(r)
    records = workers.all()
    assert [w.job.jid for w in records] == ["running2", "running1"]
    first = records[1]
    assert (first.process, first.tid, first.queue) == (
        "worker-3:300:0123456789ab",
        "t1",
        "critical",
    )
    assert first.run_at == 1_700_000_100.0
    assert first.job.raw == raw
    assert first.problems == ()
    assert workers.size() == 2
    found = workers.find_work("running1")
    assert found is not None and found.tid == "t1"
    assert workers.find_work("nope") is None


def test_workers_legacy_key_and_object_payload(r: redis.Redis) -> None:
    """A Sidekiq 6.4.1 process writes only <identity>:workers; payload may be an object."""
    entry = {"queue": "default", "payload": job("legacy1"), "run_at": 1_700_000_000}
    write_process(r, "ruby:9:aaaaaaaaaaaa", busy=1, work={"abc": entry}, work_key=":workers")
    records = Workers(r).all()
    assert len(records) == 1
    assert records[0].job.jid == "legacy1"
    assert records[0].job.job_class == "EchoJob"
    assert records[0].tid == "abc"


def test_workers_bad_entries_flagged(r: redis.Redis) -> None:
    write_process(r, "a:1:aaaaaaaaaaaa")
    r.hset(
        "a:1:aaaaaaaaaaaa:work",
        mapping={
            "t1": "{not json",
            "t2": json.dumps({"queue": "q", "payload": 5, "run_at": "soon"}),
            "t3": json.dumps({"queue": "q", "payload": "[1]", "run_at": 5}),
        },
    )
    r.sadd("processes", "gone:2:bbbbbbbbbbbb")
    r.hset("gone:2:bbbbbbbbbbbb:work", "t9", "{}")
    records = {w.tid: w for w in Workers(r).all()}
    assert sorted(records) == ["t1", "t2", "t3"]
    assert "not valid JSON" in records["t1"].problems[0]
    assert records["t2"].problems == (
        "work entry payload is number, not a job",
        "run_at is 'soon', not a number",
    )
    assert records["t3"].problems == ()
    assert records["t3"].job.problems == ("payload is a JSON array, not an object",)
