"""The cron store against a real Redis: hash fields, layouts, markers, enqueue and history."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from pyqueue.cron import CronJob, CronJobError, CronJobNotFound
from pyqueue.payload import dumps, loads
from tests.cron.helpers import FakeClock, make_settings, make_store, queued, utc

# The hash sidekiq-cron 1.8 wrote for this job in a MONITOR capture of Sidekiq 6.4.1.
CAPTURED_HASH = {
    "name": "email_sender_worker",
    "klass": "EmailSenderWorker",
    "cron": "* * * * *",
    "description": "",
    "args": '["from-cron",1]',
    "date_as_argument": "false",
    "message": (
        '{"retry":2,"queue":"email_delivery","class":"EmailSenderWorker","args":["from-cron",1]}'
    ),
    "status": "enabled",
    "active_job": "false",
    "queue_name_prefix": "",
    "queue_name_delimiter": "",
    "last_enqueue_time": "",
    "symbolize_args": "false",
}


def sender_job(**changes: object) -> CronJob:
    job = CronJob(
        name="email_sender_worker",
        cron="* * * * *",
        klass="EmailSenderWorker",
        queue="email_delivery",
        args=["from-cron", 1],
        retry=2,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def test_save_writes_sidekiq_cron_hash(r: redis.Redis, clock: FakeClock) -> None:
    make_store(r, clock).save(sender_job())

    assert r.smembers("cron_jobs") == {"cron_job:email_sender_worker"}
    assert r.hgetall("cron_job:email_sender_worker") == CAPTURED_HASH


def test_save_marks_current_tick(r: redis.Redis, clock: FakeClock) -> None:
    clock.now = utc("2024-05-06T12:00:30Z")

    make_store(r, clock).save(sender_job())

    assert r.zrange("cron_job:email_sender_worker:enqueued", 0, -1, withscores=True) == [
        ("2024-05-06T12:00:00Z", utc("2024-05-06T12:00:30Z"))
    ]


def test_save_keeps_existing_marker(r: redis.Redis, clock: FakeClock) -> None:
    r.zadd("cron_job:email_sender_worker:enqueued", {"2024-05-06T11:00:00Z": 1.0})

    make_store(r, clock).save(sender_job())

    assert r.zrange("cron_job:email_sender_worker:enqueued", 0, -1) == ["2024-05-06T11:00:00Z"]


def test_save_v2_layout(r: redis.Redis, clock: FakeClock) -> None:
    settings = make_settings(cron_layout="v2", cron_namespace="reports")
    store = make_store(r, clock, settings)

    store.save(sender_job(date_as_argument=True))

    assert r.smembers("cron_jobs:reports") == {"cron_job:reports:email_sender_worker"}
    fields = r.hgetall("cron_job:reports:email_sender_worker")
    assert fields["namespace"] == "reports"
    assert fields["date_as_argument"] == "1"
    assert fields["active_job"] == "0"
    assert fields["retry"] == "2"
    assert fields["source"] == "dynamic"
    assert r.exists("cron_job:reports:email_sender_worker:enqueued") == 1
    assert r.exists("cron_jobs", "cron_job:email_sender_worker") == 0
    assert store.get("email_sender_worker") is not None


def test_v1_store_ignores_v2_keys(r: redis.Redis, clock: FakeClock) -> None:
    make_store(r, clock, make_settings(cron_layout="v2")).save(sender_job())

    assert make_store(r, clock).all() == []


def test_ruby_hash_decoded(r: redis.Redis, clock: FakeClock) -> None:
    """A hash as sidekiq-cron 1.11 writes it: "1"/"0" booleans, a source field."""
    r.sadd("cron_jobs", "cron_job:digest")
    r.hset(
        "cron_job:digest",
        mapping={
            "name": "digest",
            "klass": "DigestJob",
            "cron": "0 9 * * *",
            "args": '{"team":7}',
            "message": '{"queue":"mail","class":"DigestJob","args":[{"team":7}]}',
            "status": "disabled",
            "active_job": "1",
            "date_as_argument": "0",
            "symbolize_args": "T",
            "last_enqueue_time": "2024-05-05 09:00:00 UTC",
            "source": "schedule",
        },
    )

    job = make_store(r, clock).require("digest")

    assert job.klass == "DigestJob"
    assert job.queue == "mail"
    assert job.args == [{"team": 7}]
    assert job.status == "disabled"
    assert not job.enabled
    assert job.active_job is True
    assert job.date_as_argument is False
    assert job.symbolize_args is True
    assert job.retry is None
    assert job.last_run == utc("2024-05-05T09:00:00Z")
    assert job.next_run == utc("2024-05-07T09:00:00Z")
    assert job.source == "schedule"


def test_ruby_message_order_kept(r: redis.Redis, clock: FakeClock) -> None:
    """Saving a job read from Ruby keeps its message fields and their order."""
    message = '{"queue":"mail","backtrace":5,"class":"DigestJob","args":[]}'
    r.sadd("cron_jobs", "cron_job:digest")
    r.hset(
        "cron_job:digest",
        mapping={"name": "digest", "klass": "DigestJob", "cron": "0 9 * * *", "message": message},
    )
    store = make_store(r, clock)

    store.save(store.require("digest"))

    assert r.hget("cron_job:digest", "message") == message


def test_enable_disable_write_status_only(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(sender_job())
    r.hset("cron_job:email_sender_worker", "last_enqueue_time", "2024-05-05 09:00:00 UTC")
    before = r.hgetall("cron_job:email_sender_worker")

    store.disable("email_sender_worker")
    disabled = r.hgetall("cron_job:email_sender_worker")
    store.enable("email_sender_worker")

    assert disabled == dict(before, status="disabled")
    assert r.hgetall("cron_job:email_sender_worker") == before


def test_destroy_removes_every_key(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(sender_job())
    store.enqueue_now("email_sender_worker")

    store.destroy("email_sender_worker")

    assert (
        r.exists(
            "cron_job:email_sender_worker",
            "cron_job:email_sender_worker:enqueued",
            "cron_job:email_sender_worker:jid_history",
        )
        == 0
    )
    assert r.smembers("cron_jobs") == set()


@pytest.mark.parametrize("action", ["destroy", "enable", "disable", "enqueue_now", "require"])
def test_unknown_name_raises(r: redis.Redis, clock: FakeClock, action: str) -> None:
    store = make_store(r, clock)

    with pytest.raises(CronJobNotFound, match="'missing'"):
        getattr(store, action)("missing")


def test_enqueue_now_pushes_message(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(sender_job())
    marker = r.zrange("cron_job:email_sender_worker:enqueued", 0, -1)
    clock.now = utc("2024-05-06T12:00:05Z")

    jid = store.enqueue_now("email_sender_worker")

    [payload] = queued(r, "email_delivery")
    assert payload["jid"] == jid
    assert payload["class"] == "EmailSenderWorker"
    assert payload["args"] == ["from-cron", 1]
    assert payload["retry"] == 2
    assert r.hget("cron_job:email_sender_worker", "last_enqueue_time") == (
        "2024-05-06 12:00:05 +0000"
    )
    assert [
        loads(entry) for entry in r.lrange("cron_job:email_sender_worker:jid_history", 0, -1)
    ] == [{"jid": jid, "enqueued": "2024-05-06 12:00:05 +0000"}]
    assert r.zrange("cron_job:email_sender_worker:enqueued", 0, -1) == marker


def test_history_trimmed(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock, make_settings(cron_history_size=3))
    store.save(sender_job())

    jids = [store.enqueue_now("email_sender_worker") for _ in range(5)]

    history = [
        loads(entry)["jid"] for entry in r.lrange("cron_job:email_sender_worker:jid_history", 0, -1)
    ]
    assert history == jids[:1:-1]
    assert [entry["jid"] for entry in store.history("email_sender_worker")] == history


def test_date_as_argument_appended(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(sender_job(date_as_argument=True))

    store.enqueue_now("email_sender_worker")

    [payload] = queued(r, "email_delivery")
    assert payload["args"] == ["from-cron", 1, clock.now]
    assert isinstance(payload["args"][-1], float)


def test_active_job_wrapper(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(sender_job(active_job=True, queue_name_prefix="prod"))

    store.enqueue_now("email_sender_worker")

    [payload] = queued(r, "prod_email_delivery")
    assert payload["class"] == "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
    assert payload["wrapped"] == "EmailSenderWorker"
    [wrapped] = payload["args"]
    assert wrapped["job_class"] == "EmailSenderWorker"
    assert wrapped["queue_name"] == "prod_email_delivery"
    assert wrapped["arguments"] == ["from-cron", 1]


def test_stored_jid_not_reused(r: redis.Redis, clock: FakeClock) -> None:
    r.sadd("cron_jobs", "cron_job:odd")
    message = dumps({"queue": "default", "class": "Odd", "args": [], "jid": "a" * 24})
    r.hset(
        "cron_job:odd",
        mapping={"name": "odd", "klass": "Odd", "cron": "* * * * *", "message": message},
    )
    store = make_store(r, clock)

    first = store.enqueue_now("odd")
    second = store.enqueue_now("odd")

    assert first != second
    assert "a" * 24 not in (first, second)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"klass": ""}, "needs a class"),
        ({"name": ""}, "non-empty name"),
        ({"cron": "every 5 minutes"}, "'every 5 minutes'"),
        ({"status": "paused"}, "enabled or disabled"),
    ],
)
def test_invalid_job_rejected(
    r: redis.Redis, clock: FakeClock, changes: dict[str, str], message: str
) -> None:
    with pytest.raises(CronJobError, match=message):
        make_store(r, clock).save(sender_job(**changes))

    assert r.keys("cron*") == []


def test_all_sorted_skips_missing_hashes(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(sender_job(name="zeta"))
    store.save(sender_job(name="alpha"))
    r.sadd("cron_jobs", "cron_job:gone")

    assert [job.name for job in store.all()] == ["alpha", "zeta"]
    assert store.get("gone") is None
