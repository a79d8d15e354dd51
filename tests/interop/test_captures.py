"""pyqueue's Redis traffic and stored data compared with captures of Sidekiq 6.4.1.

Client-side scenarios run the same pushes under MONITOR and compare commands,
keys, payload field names, JSON value types and the values the scenario fixes
(class, queue, retry, args, schedule delay). Server-side scenarios run
``pyqueue run`` and compare the entries it stores with the ones Sidekiq wrote.
Job ids and times are never compared.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pyqueue import Client, foreign
from pyqueue.payload import dumps, loads
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.ruby import wait_for_records
from tests.interop.conftest import PyqueueFactory
from tests.interop.monitor import Command, MonitorRecorder, field_types, read_capture
from tests.interop.polling import wait_until
from tests.interop.worker import PyqueueRun

# Connection set-up that redis-py sends and Ruby's client does not (PING is the health check).
SETUP_COMMANDS = {"client", "hello", "select", "auth", "echo", "ping"}


def payload_view(text: str) -> tuple[Any, ...]:
    """Return what a payload must share with Sidekiq's: field order and types, fixed values."""
    payload = loads(text)
    fixed = tuple(dumps(payload.get(field)) for field in ("class", "queue", "retry", "args"))
    return tuple(field_types(text).items()), fixed


def score_delay(score: str, member: str) -> int:
    """Return the whole seconds between a schedule score and the payload's created_at."""
    assert repr(float(score)) == score, f"score {score!r} is not spelled as repr(float)"
    return round(float(score) - loads(member)["created_at"])


def push_view(commands: list[Command]) -> list[tuple[Any, ...]]:
    view: list[tuple[Any, ...]] = []
    for command in commands:
        values = command.args[2:]
        if command.name in ("lpush", "rpush"):
            view.append((command.name, command.key, tuple(payload_view(v) for v in values)))
        elif command.name == "zadd":
            pairs = zip(values[::2], values[1::2], strict=True)
            scored = tuple((score_delay(s, m), payload_view(m)) for s, m in pairs)
            view.append((command.name, command.key, scored))
        else:
            view.append((command.name, command.key, values))
    return view


def record_job(client: Client, **options: Any) -> Any:
    return foreign("RecordArgsJob", client=client, **options)


def push_perform_async(client: Client) -> None:
    record_job(client).perform_async(1, "two", {"three": 3.0, "four": [None, True]})
    foreign("NoopJob", client=client).set(queue="critical").perform_async("x")


def push_perform_in(client: Client) -> None:
    record_job(client).perform_in(3600, "scheduled", 0)
    record_job(client).perform_at(time.time() - 60, "past")


def push_bulk(client: Client) -> None:
    client.push_bulk({"class": "RecordArgsJob", "args": [[1], [2], [3]]})
    now = time.time()
    client.push_bulk(
        {"class": "RecordArgsJob", "args": [[10], [20]], "at": [now + 3600, now + 7200]}
    )


def push_raw_string_class(client: Client) -> None:
    client.push({"class": "SomePythonJob", "args": ["hi"], "queue": "python"})


CLIENT_SCENARIOS: dict[str, Callable[[Client], None]] = {
    "perform_async": push_perform_async,
    "perform_in": push_perform_in,
    "push_bulk": push_bulk,
    "push_raw_string_class": push_raw_string_class,
}


@pytest.mark.parametrize("scenario", sorted(CLIENT_SCENARIOS))
def test_client_traffic_matches_capture(scenario: str, redis_url: str) -> None:
    client = Client(redis_url)
    with MonitorRecorder(redis_url) as monitor:
        CLIENT_SCENARIOS[scenario](client)
    ours = [c for c in monitor.commands if c.name not in SETUP_COMMANDS]
    theirs = read_capture(scenario)

    assert [(c.name, c.key) for c in ours] == [(c.name, c.key) for c in theirs]
    assert push_view(ours) == push_view(theirs)


def test_bulk_push_shares_times_as_captured(redis_url: str) -> None:
    client = Client(redis_url)
    with MonitorRecorder(redis_url) as monitor:
        push_bulk(client)
    for commands in (monitor.matching("lpush"), read_capture("push_bulk")[1:2]):
        payloads = [loads(value) for value in commands[0].args[2:]]
        assert len({p["created_at"] for p in payloads}) == 1
        assert len({p["enqueued_at"] for p in payloads}) == 1
        assert len({p["jid"] for p in payloads}) == len(payloads)


# Server side: a pyqueue worker on "default", the queue of the captured jobs.


@pytest.fixture(scope="module")
def worker(pyqueue_run_module: PyqueueFactory, redis_server: RedisServer) -> PyqueueRun:
    # Flush first: the worker starts before the per-test flush and would run
    # jobs that earlier tests left in "default", and count them.
    redis_server.client().flushall()
    return pyqueue_run_module(["default"], concurrency=5, timeout=1)


def captured_member(capture: str, command: str, key: str) -> str:
    """Return the payload of the first ``command key`` in ``capture`` (ZADD or LPUSH)."""
    for entry in read_capture(capture):
        if entry.name == command and entry.key == key:
            return entry.args[-1]
    raise AssertionError(f"{capture} has no {command} {key}")


def settle(r: redis.Redis, processed: int, failed: int) -> None:
    """Wait until the worker has flushed its counters, so they cannot leak into the next test."""
    # A flush writes both counters, so a count of 0 is stored as "0" or not at all.
    expected = (str(processed), str(failed))
    wait_until(
        lambda: (r.get("stat:processed"), r.get("stat:failed") or "0") == expected,
        description=f"stat:processed = {processed} and stat:failed = {failed}",
    )


def only_member(r: redis.Redis, key: str) -> str:
    members = wait_until(lambda: r.zrange(key, 0, -1), description=f"an entry in {key}")
    assert len(members) == 1, f"{key} has {len(members)} entries"
    return str(members[0])


def assert_same_fields(ours: str, theirs: str, values: tuple[str, ...]) -> None:
    assert field_types(ours) == field_types(theirs)
    ours_payload, theirs_payload = loads(ours), loads(theirs)
    for field in values:
        assert ours_payload[field] == theirs_payload[field], field


def test_job_success_stats_as_captured(worker: PyqueueRun, redis_url: str, r: redis.Redis) -> None:
    with MonitorRecorder(redis_url) as monitor:
        jid = foreign("RecordArgsJob").perform_async("ok", 42)
        (record,) = wait_for_records(r, 1)
        wait_until(lambda: r.get("stat:processed") == "1", description="stat:processed = 1")

    assert record["jid"] == jid
    assert record["args"] == ["ok", 42]
    day = dt.datetime.now(dt.UTC).date().isoformat()
    flushed = {(c.name, *c.args[1:]) for c in monitor.matching("incrby", "expire")}
    assert ("incrby", "stat:processed", "1") in flushed
    assert ("incrby", f"stat:processed:{day}", "1") in flushed
    assert ("expire", f"stat:processed:{day}", "157680000") in flushed
    captured = {(c.name, *c.args[1:]) for c in read_capture("job_success")}
    assert ("expire", "stat:processed:2026-12-04", "157680000") in captured


def test_failure_to_retry_as_captured(worker: PyqueueRun, r: redis.Redis) -> None:
    foreign("AlwaysFailJob", backtrace=5).perform_async("fail-me")
    ours = only_member(r, "retry")
    theirs = captured_member("job_fail_to_retry", "zadd", "retry")

    fixed = ("retry", "queue", "backtrace", "args", "class", "error_class", "error_message")
    assert_same_fields(ours, theirs, (*fixed, "retry_count"))
    payload = loads(ours)
    score = r.zscore("retry", ours)
    assert score is not None
    # First retry: 0**4 + 15 seconds plus a jitter of rand(10) * 1.
    assert 15 <= score - payload["failed_at"] < 25
    lines = json.loads(zlib.decompress(base64.b64decode(payload["error_backtrace"])))
    assert 0 < len(lines) <= 5
    assert all(isinstance(line, str) for line in lines)
    settle(r, processed=1, failed=1)


def test_retry_zero_to_dead_as_captured(worker: PyqueueRun, redis_url: str, r: redis.Redis) -> None:
    with MonitorRecorder(redis_url) as monitor:
        foreign("DieNowJob", retry=0).perform_async("dead-on-arrival")
        ours = only_member(r, "dead")
    theirs = captured_member("retry_zero_straight_to_dead", "zadd", "dead")

    fixed = ("retry", "queue", "args", "class", "error_class", "error_message", "retry_count")
    assert_same_fields(ours, theirs, fixed)
    assert r.zcard("retry") == 0
    assert dead_transaction(monitor.commands) == dead_transaction(
        read_capture("retry_zero_straight_to_dead")
    )
    settle(r, processed=1, failed=1)


def dead_transaction(commands: list[Command]) -> list[tuple[str, ...]]:
    """Return the MULTI block that adds to ``dead``, with scores replaced by their role."""
    start = next(i for i, c in enumerate(commands) if c.name == "zadd" and c.key == "dead")
    client = commands[start].client
    own = [i for i, c in enumerate(commands) if c.client == client]
    begin = max(i for i in own if i < start and commands[i].name == "multi")
    end = min(i for i in own if i > start and commands[i].name == "exec")
    block = [commands[i] for i in own if begin <= i <= end]
    shaped: list[tuple[str, ...]] = []
    for command in block:
        if command.name == "zremrangebyscore":
            cutoff = float(command.args[3])
            death = float(commands[start].args[2])
            shaped.append((command.name, command.key, command.args[2], str(round(death - cutoff))))
        elif command.name == "zadd":
            shaped.append((command.name, command.key))
        else:
            shaped.append((command.name, *command.args[1:]))
    return shaped


def test_retry_false_no_dead_as_captured(worker: PyqueueRun, r: redis.Redis) -> None:
    foreign("AlwaysFailJob", retry=False).perform_async("gone")
    wait_until(lambda: r.get("stat:failed") == "1", description="stat:failed = 1")
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0
    assert r.get("stat:processed") == "1"


def test_retries_exhausted_as_captured(worker: PyqueueRun, r: redis.Redis) -> None:
    foreign("AlwaysFailJob", retry=1).perform_async("exhaust-me")
    first = only_member(r, "retry")
    assert loads(first)["retry_count"] == 0
    # Make the retry due now instead of in 15 to 25 seconds.
    r.zadd("retry", {first: 0}, xx=True)
    ours = only_member(r, "dead")
    theirs = captured_member("retries_exhausted_to_dead", "zadd", "dead")

    assert_same_fields(ours, theirs, ("retry", "queue", "retry_count"))
    assert loads(ours)["jid"] == loads(first)["jid"]
    assert r.zcard("retry") == 0
    settle(r, processed=2, failed=2)


def test_scheduled_move_as_captured(worker: PyqueueRun, redis_url: str, r: redis.Redis) -> None:
    with MonitorRecorder(redis_url) as monitor:
        jid = foreign("RecordArgsJob").perform_in(1, "scheduled", 99)
        (record,) = wait_for_records(r, 1)
    assert record["jid"] == jid

    moved = [c for c in monitor.matching("lpush") if c.key == "queue:default"]
    assert len(moved) == 1
    theirs = [c for c in read_capture("scheduled_poller") if c.name == "lpush"]
    captured_move = next(
        c for c in theirs if c.key == "queue:default" and "RecordArgsJob" in c.args[2]
    )
    assert field_types(moved[0].args[2]) == field_types(captured_move.args[2])
    removed = [c for c in monitor.commands if c.client == "lua" and c.name == "zrem"]
    assert [c.key for c in removed] == ["schedule"]
    settle(r, processed=1, failed=0)


def test_heartbeat_busy_as_captured(worker: PyqueueRun, redis_url: str, r: redis.Redis) -> None:
    with MonitorRecorder(redis_url) as monitor:
        jid = foreign("SleepJob").perform_async(3.0)
        work = wait_until(lambda: r.hgetall(f"{worker.identity}:work"), description="a work entry")
    (entry,) = work.values()
    captured = [c for c in read_capture("heartbeat_busy") if c.name == "hset"]
    captured_work = next(c for c in captured if c.key.endswith(":workers"))
    captured_process = next(c for c in captured if c.key.count(":") == 2)

    assert field_types(entry) == field_types(captured_work.args[3])
    pushed = next(c for c in monitor.matching("lpush") if c.key == "queue:default")
    assert loads(entry)["payload"] == pushed.args[2]
    assert loads(loads(entry)["payload"])["jid"] == jid
    assert loads(entry)["queue"] == "default"
    legacy = wait_until(
        lambda: r.hgetall(f"{worker.identity}:workers"), description="the :workers entry"
    )
    assert list(legacy.values()) == [entry]

    process = wait_until(lambda: r.hgetall(worker.identity), description="the process hash")
    captured_fields = dict(
        zip(captured_process.args[2::2], captured_process.args[3::2], strict=True)
    )
    assert set(captured_fields) <= set(process)
    info, captured_info = loads(process["info"]), loads(captured_fields["info"])
    assert {k: type(info[k]) for k in captured_info} == {
        k: type(v) for k, v in captured_info.items()
    }
    assert process["quiet"] == "false"
    assert process["busy"] == "1"
    float(process["beat"])
    int(process["rss"])
    int(process["rtt_us"])
    for key in (worker.identity, f"{worker.identity}:work"):
        ttl = r.ttl(key)
        assert 0 < ttl <= 60, key
    wait_until(lambda: not r.hgetall(f"{worker.identity}:work"), description="the job to finish")
    settle(r, processed=1, failed=0)


def test_remote_quiet_and_term_as_captured(
    pyqueue_run: PyqueueFactory, redis_url: str, r: redis.Redis
) -> None:
    worker = pyqueue_run(["stopping"], concurrency=2, timeout=1)
    with MonitorRecorder(redis_url) as monitor:
        foreign("SleepJob", queue="stopping").perform_async(30.0)
        wait_until(lambda: r.hgetall(f"{worker.identity}:work"), description="the job to start")
        # What the Web UI's Quiet button sends.
        with r.pipeline(transaction=True) as pipe:
            pipe.lpush(f"{worker.identity}-signals", "TSTP")
            pipe.expire(f"{worker.identity}-signals", 60)
            pipe.execute()
        wait_until(lambda: r.hget(worker.identity, "quiet") == "true", description="quiet = true")
        assert worker.stop() == 0

    pushed = next(c for c in monitor.matching("lpush") if c.key == "queue:stopping")
    assert r.lrange("queue:stopping", 0, -1) == [pushed.args[2]]
    requeued = [c for c in monitor.matching("rpush") if c.key == "queue:stopping"]
    # A fetcher still blocked in BRPOP may receive the requeued job during the
    # stop and push it back once more, so count copies in the queue, not RPUSHes.
    assert requeued, "the running job was not pushed back"
    assert {c.args[2:] for c in requeued} == {(pushed.args[2],)}
    assert worker.identity not in r.smembers("processes")
    assert r.exists(f"{worker.identity}:work") == 0
    assert r.get("stat:processed") in (None, "0")
    assert r.get("stat:failed") in (None, "0")

    signals = f"{worker.identity}-signals"
    assert ("rpop", signals) in {(c.name, c.key) for c in monitor.commands}
    captured_steps = shutdown_steps(read_capture("stop_term"), "vm:27665:14d87631518e")
    assert len(captured_steps) == 3
    assert shutdown_steps(monitor.commands, worker.identity) >= captured_steps


def shutdown_steps(commands: list[Command], identity: str) -> set[tuple[str, str]]:
    """Return the requeue and deregistration commands, with names reduced to their role."""
    steps: set[tuple[str, str]] = set()
    for command in commands:
        key = command.key.replace(identity, "<identity>")
        if command.name == "rpush" and key.startswith("queue:"):
            steps.add(("rpush", "queue:<name>"))
        elif command.name in ("srem", "unlink") and key in ("processes", "<identity>:work"):
            steps.add((command.name, key))
        elif command.name == "unlink" and key == "<identity>:workers":
            # Sidekiq 6.4.1 names the busy-work hash :workers; Sidekiq 7 and pyqueue use :work.
            steps.add((command.name, "<identity>:work"))
    return steps
