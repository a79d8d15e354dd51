from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest
import redis

import pyqueue
from pyqueue import Client, Job, foreign, job
from pyqueue.errors import ArgumentError, JobDefinitionError, UnknownJobClass
from pyqueue.job import lookup, unregister
from pyqueue.payload import dumps


class RecordArgsJob(Job):
    def perform(self, *args: object) -> None:
        pass


class CriticalJob(Job, name="Reports::Critical"):
    queue = "critical"
    retry = 3
    backtrace = 5
    tags = ["alpha"]

    def perform(self) -> None:
        pass


@job(queue="mail", retry=2)
def send_digest(user_id: int) -> int:
    return user_id * 2


def only_job(r: redis.Redis, queue: str = "default") -> dict[str, object]:
    raw = r.lindex(f"queue:{queue}", -1)
    assert isinstance(raw, str)
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def test_perform_async_writes_sidekiq_payload(r: redis.Redis) -> None:
    jid = RecordArgsJob.perform_async(1, "two", {"three": 3.0, "four": [None, True]})
    assert jid is not None and re.fullmatch(r"[0-9a-f]{24}", jid)
    assert r.smembers("queues") == {"default"}
    raw = r.lindex("queue:default", -1)
    assert isinstance(raw, str)
    payload = json.loads(raw)
    assert list(payload) == ["retry", "queue", "args", "class", "jid", "created_at", "enqueued_at"]
    assert payload["class"] == "RecordArgsJob"
    assert payload["args"] == [1, "two", {"three": 3.0, "four": [None, True]}]
    assert payload["retry"] is True
    assert payload["jid"] == jid
    assert isinstance(payload["created_at"], float)
    assert isinstance(payload["enqueued_at"], float)
    assert '"three":3.0' in raw
    assert " " not in raw.replace("\u00a0", "")


def test_class_options_copied_into_payload(r: redis.Redis) -> None:
    CriticalJob.perform_async()
    payload = only_job(r, "critical")
    assert payload["class"] == "Reports::Critical"
    assert payload["queue"] == "critical"
    assert payload["retry"] == 3
    assert payload["backtrace"] == 5
    assert payload["tags"] == ["alpha"]
    assert "dead" not in payload
    assert "retry_queue" not in payload


def test_set_overrides_options_for_one_push(r: redis.Redis) -> None:
    RecordArgsJob.set(queue="critical", retry=False).perform_async(7)
    payload = only_job(r, "critical")
    assert payload["retry"] is False
    assert payload["args"] == [7]
    assert r.llen("queue:default") == 0


def test_perform_in_goes_to_schedule_without_at(r: redis.Redis) -> None:
    before = time.time()
    jid = RecordArgsJob.perform_in(60, "later")
    entries = r.zrange("schedule", 0, -1, withscores=True)
    assert len(entries) == 1
    member, score = entries[0]
    payload = json.loads(member)
    assert payload["jid"] == jid
    assert "at" not in payload
    assert "enqueued_at" not in payload
    assert before + 59 <= score <= time.time() + 61
    assert r.llen("queue:default") == 0


def test_perform_in_accepts_timedelta(r: redis.Redis) -> None:
    RecordArgsJob.perform_in(dt.timedelta(minutes=5))
    [(_, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert score == pytest.approx(time.time() + 300, abs=5)


def test_perform_at_past_time_pushes_now(r: redis.Redis) -> None:
    RecordArgsJob.perform_at(time.time() - 10, "late")
    RecordArgsJob.perform_in(-5, "negative")
    RecordArgsJob.perform_at(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert r.zcard("schedule") == 0
    assert r.llen("queue:default") == 3


def test_perform_at_datetime_schedules(r: redis.Redis) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    RecordArgsJob.perform_at(when)
    [(_, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert score == pytest.approx(when.timestamp(), abs=0.001)


def test_raw_push_with_past_at_still_goes_to_schedule(r: redis.Redis, redis_url: str) -> None:
    client = Client(redis_url)
    client.push({"class": "RubyJob", "args": [], "at": time.time() - 100})
    assert r.zcard("schedule") == 1
    assert r.llen("queue:default") == 0


def test_schedule_score_is_float_repr(r: redis.Redis, redis_url: str) -> None:
    Client(redis_url).push({"class": "X", "args": [], "at": 1796417922.6519403})
    [(member, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert score == 1796417922.6519403


def test_push_bulk_one_lpush_shared_times_input_order(r: redis.Redis) -> None:
    jids = RecordArgsJob.perform_bulk([[1], [2], [3]])
    assert len(jids) == 3
    assert len(set(jids)) == 3
    raw = r.lrange("queue:default", 0, -1)
    payloads = [json.loads(x) for x in reversed(raw)]
    assert [p["args"] for p in payloads] == [[1], [2], [3]]
    assert [p["jid"] for p in payloads] == jids
    assert len({p["created_at"] for p in payloads}) == 1
    assert len({p["enqueued_at"] for p in payloads}) == 1


def test_push_bulk_batches_of_thousand(r: redis.Redis, redis_url: str) -> None:
    jids = Client(redis_url).push_bulk({"class": "X", "args": [[i] for i in range(2500)]})
    assert len(jids) == 2500
    assert r.llen("queue:default") == 2500
    assert json.loads(r.lindex("queue:default", -1) or "")["args"] == [0]


def test_push_bulk_with_at_list(r: redis.Redis, redis_url: str) -> None:
    now = time.time()
    Client(redis_url).push_bulk(
        {"class": "X", "args": [[10], [20]], "at": [now + 3600, now + 7200]}
    )
    entries = r.zrange("schedule", 0, -1, withscores=True)
    assert [json.loads(m)["args"] for m, _ in entries] == [[10], [20]]
    assert all("at" not in json.loads(m) for m, _ in entries)


def test_push_bulk_keeps_single_push_shape(r: redis.Redis, redis_url: str) -> None:
    client = Client(redis_url)
    client.push({"class": "X", "args": [0], "tags": ["a"]})
    client.push_bulk({"class": "X", "args": [[1], [2]], "tags": ["a"]})

    single, *bulk = [json.loads(x) for x in reversed(r.lrange("queue:default", 0, -1))]

    assert [list(job) for job in bulk] == [list(single)] * 2
    assert bulk[0]["jid"] != bulk[1]["jid"]


def test_push_bulk_names_the_bad_argument(r: redis.Redis, redis_url: str) -> None:
    with pytest.raises(ArgumentError, match=r"args\[0\].*bytes"):
        Client(redis_url).push_bulk({"class": "X", "args": [[1], [b"raw"]]})

    assert r.exists("queue:default") == 0


def test_push_bulk_template_bytes_exact(r: redis.Redis, redis_url: str) -> None:
    """The template path writes the bytes that encoding each job hash would write."""
    args = [[1e20, "ünïcode \u2028", {"k": [None, True, 1.5]}], [10**30, -0.0], [1.0e15]]
    item = {"class": "X", "args": args, "queue": "bulk", "tags": ["1e+20"], "retry": 3}
    plain = Client(redis_url)
    passing = Client(redis_url)
    passing.middleware.add(lambda payload, queue, call: call(payload))

    plain.push_bulk(item)
    passing.push_bulk(item)

    written = list(reversed(r.lrange("queue:bulk", 0, -1)))
    fast, slow = written[:3], written[3:]
    volatile = ("jid", "created_at", "enqueued_at")
    for fast_raw, slow_raw in zip(fast, slow, strict=True):
        fast_job, slow_job = json.loads(fast_raw), json.loads(slow_raw)
        assert list(fast_job) == list(slow_job)
        for field in volatile:
            fast_job.pop(field), slow_job.pop(field)
        assert fast_job == slow_job
        assert fast_raw == dumps(json.loads(fast_raw))
    assert '"args":[1.0e+20,"ünïcode \u2028",' in fast[0]
    assert len({json.loads(raw)["jid"] for raw in fast}) == 3


def test_push_bulk_rejects_jid_for_many(redis_url: str) -> None:
    with pytest.raises(ArgumentError, match="jid"):
        Client(redis_url).push_bulk({"class": "X", "args": [[1], [2]], "jid": "a" * 24})


def test_push_bulk_rejects_wrong_at_length(redis_url: str) -> None:
    with pytest.raises(ArgumentError, match="one per job"):
        Client(redis_url).push_bulk({"class": "X", "args": [[1], [2]], "at": [1.0]})


def test_rejected_argument_writes_nothing(r: redis.Redis) -> None:
    with pytest.raises(ArgumentError, match=r"args\[1\]"):
        RecordArgsJob.perform_async(1, float("nan"))
    assert r.keys("*") == []


def test_unknown_fields_kept(r: redis.Redis, redis_url: str) -> None:
    Client(redis_url).push({"class": "X", "args": [], "bid": "b-1", "cattr": {"u": 1}})
    payload = only_job(r)
    assert payload["bid"] == "b-1"
    assert payload["cattr"] == {"u": 1}


def test_client_middleware_edits_and_vetoes(r: redis.Redis, redis_url: str) -> None:
    client = Client(redis_url)

    def tag(payload, queue, call_next):  # type: ignore[no-untyped-def]
        payload["tags"] = ["mw"]
        return call_next(payload)

    def veto_odd(payload, queue, call_next):  # type: ignore[no-untyped-def]
        return None if payload["args"][0] % 2 else call_next(payload)

    client.middleware.add(tag)
    client.middleware.add(veto_odd)
    assert client.push({"class": "X", "args": [1]}) is None
    jid = client.push({"class": "X", "args": [2]})
    assert jid is not None
    assert only_job(r)["tags"] == ["mw"]
    assert client.push_bulk({"class": "X", "args": [[1], [2], [3]]})[0::2] == [None, None]
    assert r.llen("queue:default") == 2


def test_retry_for_stored_as_int(r: redis.Redis, redis_url: str) -> None:
    Client(redis_url).push({"class": "X", "args": [], "retry_for": dt.timedelta(hours=2)})
    assert only_job(r)["retry_for"] == 7200
    with pytest.raises(ArgumentError, match="retry_for"):
        Client(redis_url).push({"class": "X", "args": [], "retry_for": 2_000_000_000})


def test_empty_queue_rejected(redis_url: str) -> None:
    with pytest.raises(ArgumentError, match="queue"):
        Client(redis_url).push({"class": "X", "args": [], "queue": ""})


def test_foreign_job_options(r: redis.Redis) -> None:
    foreign("HardJob", queue="ruby", retry=3, backtrace=True).perform_async("x")
    payload = only_job(r, "ruby")
    assert payload["class"] == "HardJob"
    assert payload["retry"] == 3
    assert payload["backtrace"] is True


def test_function_job(r: redis.Redis) -> None:
    assert send_digest(21) == 42
    send_digest.perform_async(5)
    payload = only_job(r, "mail")
    assert payload["class"] == "send_digest"
    assert payload["retry"] == 2
    assert lookup("send_digest") is send_digest.job_class


def test_registry_lookup_and_duplicates() -> None:
    assert lookup("RecordArgsJob") is RecordArgsJob
    assert lookup("Reports::Critical") is CriticalJob
    with pytest.raises(UnknownJobClass, match="tests.missing.Job"):
        lookup("tests.missing.Job")
    with pytest.raises(JobDefinitionError, match="two jobs are named 'RecordArgsJob'"):
        type("Other", (Job,), {"__module__": "elsewhere"}, name="RecordArgsJob")


def test_bad_option_type_rejected_at_definition() -> None:
    with pytest.raises(JobDefinitionError, match="retry"):

        class BadRetry(Job):
            retry = "often"  # type: ignore[assignment]

    unregister("BadRetry")


def test_public_api_names() -> None:
    assert set(pyqueue.__all__) >= {"Job", "Client", "job", "foreign", "configure_client"}
