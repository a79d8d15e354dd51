"""pyqueue pushes jobs and a real Ruby Sidekiq 6.4 worker runs them with equal arguments."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
import redis

from pyqueue import Client, foreign
from pyqueue.payload import dumps, loads
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.ruby import RubyFactory, RubySidekiq, ruby_roundtrip, wait_for_records
from tests.interop.dataset import (
    ACCEPTED_EDGE_ARGS,
    BULK_ARGS,
    SCHEDULED_ARGS,
    SINGLE_ARGS,
    compare_runs,
    differences,
)

pytestmark = pytest.mark.ruby

QUEUE = "interop"


@pytest.fixture(scope="module")
def ruby_worker(ruby_sidekiq_module: RubyFactory, redis_server: RedisServer) -> RubySidekiq:
    # Flush first: the worker starts before the per-test flush and would run
    # jobs that earlier tests left in its queue.
    redis_server.client().flushall()
    # A one-second poll average moves the scheduled job soon after it is due.
    return ruby_sidekiq_module([QUEUE], timeout=1, env={"INTEROP_POLL_INTERVAL": "1"})


def record_job() -> Any:
    return foreign("RecordArgsJob", queue=QUEUE)


def test_interop_set_runs_in_ruby(ruby_worker: RubySidekiq, redis_url: str, r: redis.Redis) -> None:
    client = Client(redis_url)
    expected: dict[str, list[Any]] = {}
    for args in SINGLE_ARGS:
        jid = record_job().set(client=client).perform_async(*args)
        assert jid is not None
        expected[jid] = args

    bulk_jids = client.push_bulk({"class": "RecordArgsJob", "queue": QUEUE, "args": BULK_ARGS})
    assert len(bulk_jids) == len(BULK_ARGS)
    for jid, args in zip(bulk_jids, BULK_ARGS, strict=True):
        assert jid is not None
        expected[jid] = args

    due = time.time() + 2
    scheduled_jid = record_job().set(client=client).perform_at(due, *SCHEDULED_ARGS)
    assert scheduled_jid is not None
    expected[scheduled_jid] = SCHEDULED_ARGS
    scheduled_members = r.zrange("schedule", 0, -1)

    records = wait_for_records(r, len(expected), timeout=60)
    problems = compare_runs(expected, records)
    assert problems == [], "\n".join(problems[:30])
    assert {record["side"] for record in records} == {"ruby"}
    encoded_differently = [
        record["args_json"] for record in records if record["args_json"] != dumps(record["args"])
    ]
    assert encoded_differently == []
    reencoded_differently = [record["raw"] for record in records if not record["roundtrip_equal"]]
    assert reencoded_differently == []

    scheduled = next(record for record in records if record["jid"] == scheduled_jid)
    assert scheduled["job"]["enqueued_at"] >= due - 0.01
    assert len(scheduled_members) == 1
    assert ruby_roundtrip(redis_url, scheduled_members) == []


def test_ruby_reencodes_payloads_identically(
    ruby_worker: RubySidekiq, redis_url: str, r: redis.Redis
) -> None:
    """Ruby's JSON.generate(JSON.parse(x)) returns the bytes pyqueue wrote."""
    client = Client(redis_url)
    for args in SINGLE_ARGS:
        record_job().set(client=client, retry=3, backtrace=5, tags=["a"]).perform_async(*args)
    client.push_bulk({"class": "RecordArgsJob", "queue": QUEUE, "args": BULK_ARGS[:50]})

    records = wait_for_records(r, len(SINGLE_ARGS) + 50)
    assert len(records) == len(SINGLE_ARGS) + 50
    changed = [record["raw"] for record in records if record["roundtrip_equal"] is not True]
    assert changed == []
    assert all(record["raw"] is not None for record in records)


def test_ruby_float_spelling_matches(ruby_worker: RubySidekiq, redis_url: str) -> None:
    """Floats near the decimal/exponent switch are spelled as Ruby's Float#to_s spells them."""
    values = [
        1e-5,
        9.999e-5,
        1e-4,
        0.00012,
        123456789012345.0,
        999999999999999.9,
        1e15,
        1.5e15,
        1234567890123456.0,
        9999999999999998.0,
        1e16,
        1e17,
        1e20,
        1e22,
        1e23,
        5e-324,
        -1e15,
    ]
    raws = [dumps([value]) for value in values]
    different = [raws[index] for index in ruby_roundtrip(redis_url, raws)]
    assert different == [], f"Ruby re-encodes these payload arrays differently: {different}"


def test_edge_arguments_run_in_ruby(
    ruby_worker: RubySidekiq, redis_url: str, r: redis.Redis
) -> None:
    """Unusual but valid arguments (a 17-digit float, -0.0, emoji) reach Ruby unchanged."""
    jid = record_job().perform_async(*ACCEPTED_EDGE_ARGS)
    assert jid is not None

    (record,) = wait_for_records(r, 1)
    assert record["jid"] == jid
    assert differences(ACCEPTED_EDGE_ARGS, record["args"]) == []
    floats = [value for value in ACCEPTED_EDGE_ARGS if isinstance(value, float)]
    assert [repr(v) for v in record["args"] if isinstance(v, float)] == [repr(v) for v in floats]
    assert record["roundtrip_equal"] is True
    # Valid RFC 8259 JSON: a NaN or Infinity token would make this raise.
    json.loads(record["raw"], parse_constant=reject_constant)


def reject_constant(token: str) -> Any:
    raise AssertionError(f"payload contains the non-standard JSON token {token}")


REJECTED_VALUES: list[tuple[Any, str]] = [
    (float("nan"), "nan"),
    (float("inf"), "inf"),
    (float("-inf"), "-inf"),
    (b"\x8b\x08\x00", "bytes"),
    (dt.datetime(2024, 5, 6), "datetime"),
    ({1, 2}, "set"),
    ({1: "int key"}, "int"),
    ((1, 2), "tuple"),
    (object(), "object"),
]


@pytest.mark.parametrize(("value", "named"), REJECTED_VALUES, ids=[n for _, n in REJECTED_VALUES])
def test_rejected_argument_writes_nothing(
    value: Any, named: str, redis_url: str, r: redis.Redis
) -> None:
    with pytest.raises((TypeError, ValueError)) as raised:
        record_job().perform_async("fine", value)
    message = str(raised.value)
    assert "args[1]" in message
    assert named in message
    with pytest.raises((TypeError, ValueError), match=r"args\[0\]\['inner'\]"):
        record_job().perform_in(60, {"inner": value})
    with pytest.raises((TypeError, ValueError), match=r"args\[0\]"):
        Client(redis_url).push_bulk({"class": "RecordArgsJob", "args": [[1], [value]]})
    # Only job keys count: the module's Ruby worker writes heartbeat keys meanwhile.
    job_keys = [k for k in r.scan_iter() if k in ("queues", "schedule") or k.startswith("queue:")]
    assert job_keys == []


def test_ruby_records_are_lossless(
    ruby_worker: RubySidekiq, redis_url: str, r: redis.Redis
) -> None:
    """The Ruby recording path keeps big integers and float spellings exact."""
    values = [2**100, -(2**64), 12345678901234567890, -0.0, 1e20, 0.1, 5e-324]
    jid = record_job().perform_async(*values)
    (record,) = wait_for_records(r, 1)
    assert record["jid"] == jid
    assert differences(values, record["args"]) == []
    assert loads(record["raw"])["args"] == values
