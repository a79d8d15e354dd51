"""Ruby Sidekiq 6.4 pushes and ``pyqueue run`` executes; both kinds of worker share queues."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis

from pyqueue import Client
from pyqueue.payload import dumps, loads
from tests.fixtures.ruby import RubyFactory, read_records, ruby_push, wait_for_records
from tests.interop.conftest import PyqueueFactory
from tests.interop.dataset import BULK_ARGS, SCHEDULED_ARGS, SINGLE_ARGS, compare_runs
from tests.interop.polling import wait_until

pytestmark = pytest.mark.ruby

# Pushes the interop set read from stdin as a Ruby producer; prints the jids.
PRODUCER = """
data = JSON.parse(STDIN.read)
single = data["single"].map { |args| RecordArgsJob.set(queue: "interop").perform_async(*args) }
bulk = Sidekiq::Client.push_bulk(
  "class" => RecordArgsJob, "queue" => "interop", "args" => data["bulk"]
)
scheduled = Sidekiq::Client.push(
  "class" => "RecordArgsJob", "queue" => "interop", "args" => data["scheduled"],
  "at" => Time.now.to_f + 2
)
puts JSON.generate({single: single, bulk: bulk, scheduled: scheduled})
"""


def test_ruby_pushes_run_in_pyqueue(
    pyqueue_run: PyqueueFactory, redis_url: str, r: redis.Redis
) -> None:
    worker = pyqueue_run(["interop"], concurrency=5)
    data = {"single": SINGLE_ARGS, "bulk": BULK_ARGS, "scheduled": SCHEDULED_ARGS}
    jids = loads(ruby_push(redis_url, PRODUCER, stdin=dumps(data)))

    expected: dict[str, list[Any]] = dict(zip(jids["single"], SINGLE_ARGS, strict=True))
    expected.update(zip(jids["bulk"], BULK_ARGS, strict=True))
    expected[jids["scheduled"]] = SCHEDULED_ARGS
    assert len(expected) == len(SINGLE_ARGS) + len(BULK_ARGS) + 1

    records = wait_for_records(r, len(expected), timeout=60)
    problems = compare_runs(expected, records)
    assert problems == [], "\n".join(problems[:30]) + "\n" + worker.log()[-2000:]
    assert {record["pid"] for record in records} == {worker.pid}


def test_mixed_workers_share_a_queue(
    pyqueue_run: PyqueueFactory, ruby_sidekiq: RubyFactory, redis_url: str, r: redis.Redis
) -> None:
    ruby = ruby_sidekiq(["mixed"], concurrency=10, timeout=1)
    python = pyqueue_run(["mixed"], concurrency=5)
    # Each job sleeps 50 ms, so both workers are fetching while the queue drains.
    args = [[index, 0.05] for index in range(200)]
    jids = Client(redis_url).push_bulk({"class": "ShareJob", "queue": "mixed", "args": args})
    expected = dict(zip(jids, args, strict=True))

    records = wait_for_records(r, 200, timeout=60)
    assert compare_runs(expected, records) == []
    sides = Counter(record["side"] for record in records)
    assert sides["ruby"] > 0, python.log()[-2000:]
    assert sides["python"] > 0, ruby.log()[-2000:]
    assert sides["ruby"] + sides["python"] == 200
    assert r.llen("queue:mixed") == 0
    assert r.zcard("retry") == 0


def test_ruby_failure_retried_by_pyqueue(
    pyqueue_run: PyqueueFactory, ruby_sidekiq: RubyFactory, redis_url: str, r: redis.Redis
) -> None:
    """Ruby fails the job and writes the retry; pyqueue moves it back and runs it."""
    ruby_sidekiq(["ruby_side"], concurrency=2, timeout=1)
    pyqueue_run(["python_side"], concurrency=2)
    item = {
        "class": "FailInRubyJob",
        "queue": "ruby_side",
        "retry_queue": "python_side",
        "retry": 3,
        "args": [2**70, -0.0, "é🎉"],
    }
    jid = Client(redis_url).push(item)

    member = wait_until(lambda: r.zrange("retry", 0, -1), description="Ruby's retry entry")[0]
    failed = loads(member)
    assert failed["jid"] == jid
    assert failed["queue"] == "python_side"
    assert failed["retry_count"] == 0
    assert failed["error_class"] == "InteropError"
    # Due now instead of in 15 to 25 seconds; pyqueue's poller runs about every second.
    r.zadd("retry", {member: 0}, xx=True)

    (record,) = wait_for_records(r, 1, side="python")
    assert record["jid"] == jid
    assert record["args"] == [2**70, -0.0, "é🎉"]
    assert repr(record["args"][1]) == "-0.0"
    assert record["job"]["retry_count"] == 0
    assert record["job"]["error_message"].startswith("failed in Ruby")
    assert isinstance(record["job"]["failed_at"], float)
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0


def test_pyqueue_failure_retried_by_ruby(
    pyqueue_run: PyqueueFactory, ruby_sidekiq: RubyFactory, redis_url: str, r: redis.Redis
) -> None:
    """pyqueue fails the job and writes the retry with a backtrace; Ruby runs the retry."""
    ruby_sidekiq(["ruby_side"], concurrency=2, timeout=1, env={"INTEROP_POLL_INTERVAL": "1"})
    pyqueue_run(["python_side"], concurrency=2)
    item = {
        "class": "FailInPythonJob",
        "queue": "python_side",
        "retry_queue": "ruby_side",
        "retry": 3,
        "backtrace": True,
        "args": [12345678901234567890, 1e20, {"k": [None]}],
        "custom_field": {"kept": True},
    }
    jid = Client(redis_url).push(item)

    member = wait_until(lambda: r.zrange("retry", 0, -1), description="pyqueue's retry entry")[0]
    failed = loads(member)
    assert failed["jid"] == jid
    assert failed["queue"] == "ruby_side"
    assert failed["retry_count"] == 0
    assert failed["error_class"] == "InteropError"
    assert failed["custom_field"] == {"kept": True}
    r.zadd("retry", {member: 0}, xx=True)

    (record,) = wait_for_records(r, 1, side="ruby")
    assert record["jid"] == jid
    assert record["args"] == [12345678901234567890, 1e20, {"k": [None]}]
    assert record["job"]["retry_count"] == 0
    assert record["job"]["error_message"].startswith("failed in Python")
    assert record["job"]["custom_field"] == {"kept": True}
    assert record["roundtrip_equal"] is True
    assert read_records(r, side="python") == []
    assert r.zcard("retry") == 0
