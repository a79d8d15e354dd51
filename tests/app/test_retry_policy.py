"""Soft-bounce retries at +1 h, +4 h and +24 h, at most four sends, never when suppressed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app_jobs import jobs
from app_jobs.db import connect
from app_jobs.dispatch import SendContext
from app_jobs.retry_policy import on_soft_bounce, retry_delay, retry_delivery, retry_jid
from app_jobs.sender import run_sender
from tests.app.support import (
    START,
    Clock,
    app_settings,
    delivery_rows,
    make_event,
    rows,
    schedule,
    send_context,
)
from tests.fixtures.fake_sendgrid import FakeSendGrid, Reply, error


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(
    database_url: str, redis_url: str, fake_sendgrid: FakeSendGrid, clock: Clock
) -> Iterator[SendContext]:
    with send_context(app_settings(database_url, redis_url, fake_sendgrid), clock) as context:
        yield context


@pytest.fixture
def delivery_id(ctx: SendContext, database_url: str) -> int:
    """One delivery, sent as attempt 1 at START."""
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=1)
        schedule(conn, sample.event_id, START)
    run_sender(ctx)
    [row] = delivery_rows(database_url).values()
    return int(row["id"])


def soft_bounce(url: str, delivery_id: int, attempt: int, at: dt.datetime) -> dt.datetime | None:
    """Do what the webhook processor does: mark the attempt blocked and call the hook."""
    with connect(url) as conn:
        conn.execute(
            "UPDATE email_deliveries SET status = 'blocked', bounce_type = 'blocked',"
            " last_event_at = %s WHERE id = %s AND attempt = %s",
            (at, delivery_id, attempt),
        )
        return on_soft_bounce(conn, delivery_id, attempt, at)


def scheduled_jobs(r: redis.Redis) -> list[tuple[dict[str, Any], float]]:
    return [
        (json.loads(member), score)
        for member, score in r.zrange("schedule", 0, -1, withscores=True)
    ]


def test_retry_delays() -> None:
    assert [retry_delay(attempt) for attempt in (1, 2, 3, 4)] == [
        dt.timedelta(hours=1),
        dt.timedelta(hours=4),
        dt.timedelta(hours=24),
        None,
    ]


def test_bounces_retried_then_stop(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    clock: Clock,
    r: redis.Redis,
    delivery_id: int,
) -> None:
    """Each soft bounce schedules the next attempt; the fourth send is the last."""
    for attempt, hours in ((1, 1), (2, 4), (3, 24)):
        bounced_at = clock.advance(minutes=10)
        retry_at = soft_bounce(database_url, delivery_id, attempt, bounced_at)

        assert retry_at == bounced_at + dt.timedelta(hours=hours)
        [(payload, score)] = scheduled_jobs(r)
        assert payload["class"] == "EmailRetryJob"
        assert payload["queue"] == "email_delivery"
        assert payload["retry"] == 2
        assert payload["args"] == [delivery_id, attempt]
        assert payload["jid"] == retry_jid(delivery_id, attempt)
        assert score == retry_at.timestamp()
        row = delivery_rows(database_url)["vendor1@example.org"]
        assert row["next_retry_at"] == retry_at
        assert row["retry_jid"] == payload["jid"]

        r.delete("schedule")  # the poller would move it to the queue at its time
        clock.now = retry_at
        result = retry_delivery(ctx, delivery_id, attempt)

        assert result is not None
        assert result.outcome == "sent"
        assert fake_sendgrid.requests[-1].custom_args["app_attempt"] == str(attempt + 1)
        row = delivery_rows(database_url)["vendor1@example.org"]
        assert row["attempt"] == attempt + 1
        assert row["status"] == "sent"
        assert row["next_retry_at"] is None
        assert row["retry_jid"] is None
        assert row["sendgrid_message_id"] == fake_sendgrid.requests[-1].message_id

    assert soft_bounce(database_url, delivery_id, 4, clock.advance(minutes=10)) is None
    assert scheduled_jobs(r) == []
    assert fake_sendgrid.count() == 4
    assert rows(
        database_url,
        "SELECT attempt, status FROM email_delivery_attempts ORDER BY attempt",
    ) == [(1, "sent"), (2, "sent"), (3, "sent"), (4, "sent")]
    assert delivery_rows(database_url)["vendor1@example.org"]["status"] == "blocked"


def test_duplicate_bounce_schedules_once(
    database_url: str, clock: Clock, r: redis.Redis, delivery_id: int
) -> None:
    first = soft_bounce(database_url, delivery_id, 1, clock.now)
    with connect(database_url) as conn:
        second = on_soft_bounce(conn, delivery_id, 1, clock.now + dt.timedelta(minutes=5))
    assert first == second
    assert len(scheduled_jobs(r)) == 1


def test_older_attempt_bounce_ignored(
    ctx: SendContext, database_url: str, clock: Clock, r: redis.Redis, delivery_id: int
) -> None:
    retry_at = soft_bounce(database_url, delivery_id, 1, clock.now)
    assert retry_at is not None
    clock.now = retry_at
    retry_delivery(ctx, delivery_id, 1)
    r.delete("schedule")
    with connect(database_url) as conn:
        assert on_soft_bounce(conn, delivery_id, 1, clock.now) is None
    assert scheduled_jobs(r) == []


def test_retry_job_runs_once(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    clock: Clock,
    delivery_id: int,
) -> None:
    """A duplicate or late job for the same attempt sends nothing."""
    retry_at = soft_bounce(database_url, delivery_id, 1, clock.now)
    assert retry_at is not None
    clock.now = retry_at
    jobs.use_context(ctx)
    try:
        jobs.EmailRetryJob().perform(delivery_id, 1)
        jobs.EmailRetryJob().perform(delivery_id, 1)
    finally:
        jobs.use_context(None)
    assert fake_sendgrid.count() == 2
    assert delivery_rows(database_url)["vendor1@example.org"]["attempt"] == 2


def test_early_retry_job_does_nothing(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    clock: Clock,
    delivery_id: int,
) -> None:
    soft_bounce(database_url, delivery_id, 1, clock.now)
    clock.advance(minutes=30)
    assert retry_delivery(ctx, delivery_id, 1) is None
    assert fake_sendgrid.count() == 1
    row = delivery_rows(database_url)["vendor1@example.org"]
    assert row["status"] == "blocked"
    assert row["attempt"] == 1


def test_suppressed_address_not_scheduled(
    database_url: str, clock: Clock, r: redis.Redis, delivery_id: int
) -> None:
    with connect(database_url) as conn:
        conn.execute(
            "INSERT INTO suppressions (email, kind, asm_group_id)"
            " VALUES ('VENDOR1@example.org', 'group_unsubscribe', 42)"
        )
    assert soft_bounce(database_url, delivery_id, 1, clock.now) is None
    assert scheduled_jobs(r) == []


def test_suppressed_after_scheduling_not_sent(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    clock: Clock,
    delivery_id: int,
) -> None:
    retry_at = soft_bounce(database_url, delivery_id, 1, clock.now)
    assert retry_at is not None
    with connect(database_url) as conn:
        conn.execute(
            "INSERT INTO suppressions (email, kind) VALUES ('vendor1@example.org', 'spam')"
        )
    clock.now = retry_at

    assert retry_delivery(ctx, delivery_id, 1) is None

    assert fake_sendgrid.count() == 1
    row = delivery_rows(database_url)["vendor1@example.org"]
    assert row["status"] == "blocked"
    assert row["next_retry_at"] is None
    assert "suppressed (spam)" in row["error"]


def test_transient_error_on_retry_goes_to_sender(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    clock: Clock,
    delivery_id: int,
) -> None:
    retry_at = soft_bounce(database_url, delivery_id, 1, clock.now)
    assert retry_at is not None
    clock.now = retry_at
    fake_sendgrid.script(Reply(status=503))

    result = retry_delivery(ctx, delivery_id, 1)

    assert result is not None
    assert result.outcome == "retry"
    row = delivery_rows(database_url)["vendor1@example.org"]
    assert (row["status"], row["attempt"]) == ("queued", 2)
    clock.advance(minutes=2)
    run_sender(ctx)
    assert [r.custom_args["app_attempt"] for r in fake_sendgrid.requests] == ["1", "2", "2"]
    assert delivery_rows(database_url)["vendor1@example.org"]["status"] == "sent"


def test_config_error_on_retry_waits_for_sender(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    clock: Clock,
    r: redis.Redis,
    delivery_id: int,
) -> None:
    retry_at = soft_bounce(database_url, delivery_id, 1, clock.now)
    assert retry_at is not None
    clock.now = retry_at
    fake_sendgrid.script(error(401, "bad key"))

    assert retry_delivery(ctx, delivery_id, 1) is None

    row = delivery_rows(database_url)["vendor1@example.org"]
    assert (row["status"], row["attempt"], row["sending_started_at"]) == ("queued", 2, None)
    assert r.exists("app_jobs:sendgrid:config_error") == 1
    run_sender(ctx)
    assert delivery_rows(database_url)["vendor1@example.org"]["status"] == "sent"
    assert fake_sendgrid.requests[-1].custom_args["app_attempt"] == "2"
    assert r.exists("app_jobs:sendgrid:config_error") == 0
