"""Sample data for the dashboard tests and screenshots, written as workers and Ruby write it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import redis

from pyqueue import keys
from pyqueue.config import Settings
from pyqueue.cron import CronJob, CronStore
from pyqueue.payload import dumps
from pyqueue.retry import encode_backtrace
from tests.api.helpers import write_bad_entries, write_process

# A fixed "now" (2024-05-06 10:00:00 UTC) keeps relative times stable in tests.
NOW = 1_714_989_600.0
IDENTITY = "worker-1.example:4242:0a1b2c3d4e5f"
SECRET_ARGUMENT = "alice@example.com"

BACKTRACE = [
    "app_jobs/mailer.py:88:in `send'",
    "app_jobs/jobs.py:41:in `perform'",
    "pyqueue/processor.py:120:in `_run'",
]


def payload(jid: str, job_class: str, queue: str, args: list[Any], **fields: Any) -> str:
    item: dict[str, Any] = {
        "retry": True,
        "queue": queue,
        "args": args,
        "class": job_class,
        "jid": jid,
        "created_at": NOW - 600,
        "enqueued_at": NOW - 120,
    }
    item.update(fields)
    return dumps(item)


def failure(jid: str, job_class: str, queue: str, args: list[Any], count: int) -> str:
    return payload(
        jid,
        job_class,
        queue,
        args,
        error_class="SendGridError",
        error_message="HTTP 503 from the SendGrid API <b>try later</b>",
        error_backtrace=encode_backtrace(BACKTRACE),
        failed_at=NOW - 3600,
        retried_at=NOW - 300,
        retry_count=count,
    )


def seed(r: redis.Redis, settings: Settings | None = None, bad: bool = True) -> None:
    """Write counters, history, queues, the three sets, a process and cron jobs."""
    r.mset({keys.STAT_PROCESSED: 48_213, keys.STAT_FAILED: 312})
    today = dt.datetime.fromtimestamp(NOW, dt.UTC).date()
    for offset in range(30):
        day = today - dt.timedelta(days=offset)
        r.set(keys.stat_daily("processed", day), 1200 + (offset * 137) % 900)
        r.set(keys.stat_daily("failed", day), (offset * 7) % 23)
    seed_queues(r)
    seed_sets(r)
    work = {
        "t1a2": {
            "queue": "mail",
            "payload": payload("runningjid000000000001", "SendEmailJob", "mail", [SECRET_ARGUMENT]),
            "run_at": NOW - 12,
        }
    }
    write_process(r, IDENTITY, busy=1, beat=NOW - 3, work=work)
    seed_cron(r, settings or Settings())
    if bad:
        write_bad_entries(r)


def seed_queues(r: redis.Redis) -> None:
    for queue, count in (("default", 3), ("mail", 30), ("critical", 1)):
        r.sadd(keys.QUEUES, queue)
        for index in range(count):
            jid = f"{queue[:4]}{index:019d}"
            r.lpush(
                keys.queue(queue), payload(jid, "SendEmailJob", queue, [index, SECRET_ARGUMENT])
            )


def seed_sets(r: redis.Redis) -> None:
    r.zadd(
        keys.RETRY,
        {
            failure(f"retry{i:019d}", "SendEmailJob", "mail", [i, SECRET_ARGUMENT], i): NOW + 60 * i
            for i in range(1, 4)
        },
    )
    r.zadd(
        keys.SCHEDULE,
        {
            payload(f"sched{i:019d}", "DigestJob", "default", [i]): NOW + 3600 * i
            for i in range(1, 3)
        },
    )
    r.zadd(
        keys.DEAD,
        {failure("dead0000000000000000001", "WebhookJob", "default", [{"id": 7}], 25): NOW - 86400},
    )


def seed_cron(r: redis.Redis, settings: Settings) -> None:
    store = CronStore(r, settings, clock=lambda: NOW)
    store.save(
        CronJob(
            name="daily_digest",
            cron="0 9 * * *",
            klass="DigestJob",
            queue="default",
            args=[SECRET_ARGUMENT],
            description="Morning digest email",
        )
    )
    # As if the 09:00 run had been enqueued, in sidekiq-cron's own time format.
    r.hset(store.hash_key("daily_digest"), "last_enqueue_time", "2024-05-06 09:00:00 +0000")
    store.save(
        CronJob(name="stuck_scan", cron="*/5 * * * *", klass="StuckScanJob", status="disabled")
    )
