"""The scanner: overdue retries, and deliveries left in "sending" by a killed worker."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
import redis

from app_jobs import jobs
from app_jobs.db import connect
from app_jobs.dispatch import SendContext
from app_jobs.mailer import OutgoingEmail, SendResult
from app_jobs.retry_policy import retry_jid
from app_jobs.scanner import scan
from app_jobs.sender import run_sender
from tests.app.support import (
    START,
    Clock,
    app_settings,
    delivery_rows,
    email_status,
    make_event,
    schedule,
    send_context,
)
from tests.fixtures.fake_sendgrid import API_KEY, FakeSendGrid, Reply, slow

STUCK_AFTER = 60


@pytest.fixture
def clock() -> Clock:
    return Clock()


def context_for(
    database_url: str, redis_url: str, fake: FakeSendGrid, clock: Clock, policy: str
) -> AbstractContextManager[SendContext]:
    settings = app_settings(
        database_url,
        redis_url,
        fake,
        stuck_sending_after=STUCK_AFTER,
        stuck_sending_policy=policy,
    )
    return send_context(settings, clock)


@pytest.fixture
def ctx(
    database_url: str, redis_url: str, fake_sendgrid: FakeSendGrid, clock: Clock
) -> Iterator[SendContext]:
    with context_for(database_url, redis_url, fake_sendgrid, clock, "review") as context:
        yield context


def start_sender_process(
    database_url: str, redis_url: str, fake: FakeSendGrid
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SENDGRID_API_KEY=API_KEY,
        APP_JOBS_SENDGRID_HOST=fake.url,
        APP_JOBS_SENDGRID_TIMEOUT="120",
    )
    code = "from app_jobs.jobs import EmailSenderWorker; EmailSenderWorker().perform()"
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def wait_for_requests(fake: FakeSendGrid, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while fake.count() < count:
        assert time.monotonic() < deadline, f"the sender made {fake.count()} requests, not {count}"
        time.sleep(0.02)


@pytest.mark.parametrize("policy", ["review", "resend"])
def test_killed_sender_settled_by_policy(
    database_url: str,
    redis_url: str,
    fake_sendgrid: FakeSendGrid,
    policy: str,
) -> None:
    """SIGKILL while the second request is in flight; the scanner applies the policy."""
    now = dt.datetime.now(dt.UTC)
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=3)
        email_id = schedule(conn, sample.event_id, now - dt.timedelta(minutes=1))
    first, stuck, waiting = sample.emails
    fake_sendgrid.script(Reply(), slow(60))

    process = start_sender_process(database_url, redis_url, fake_sendgrid)
    try:
        wait_for_requests(fake_sendgrid, 2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    before = delivery_rows(database_url)
    assert [before[a]["status"] for a in (first, stuck, waiting)] == ["sent", "sending", "queued"]

    clock = Clock(now + dt.timedelta(seconds=STUCK_AFTER + 30))
    with context_for(database_url, redis_url, fake_sendgrid, clock, policy) as context:
        report = scan(context)
        run_sender(context)

    after = delivery_rows(database_url)
    assert after[first]["status"] == "sent"
    assert after[waiting]["status"] == "sent"
    assert len(fake_sendgrid.sent_to(first)) == 1
    assert len(fake_sendgrid.sent_to(waiting)) == 1
    if policy == "review":
        assert report.flagged_for_review == 1
        assert after[stuck]["status"] == "failed"
        assert after[stuck]["needs_review"] is True
        assert "may or may not have sent it" in after[stuck]["error"]
        assert len(fake_sendgrid.sent_to(stuck)) == 1
    else:
        assert report.resent == 1
        assert after[stuck]["status"] == "sent"
        assert after[stuck]["needs_review"] is False
        assert len(fake_sendgrid.sent_to(stuck)) == 2
    assert email_status(database_url, email_id) == ("sent", None)


class CrashingMailer:
    """Simulates a process dying mid-request: the exception leaves the row in "sending"."""

    def send(self, email: OutgoingEmail) -> SendResult:
        raise RuntimeError("simulated crash during the request")


def crash_mid_send(database_url: str, redis_url: str, clock: Clock) -> None:
    """Run the sender until its first request "crashes", leaving that delivery in sending."""
    settings = app_settings(database_url, redis_url)
    with send_context(settings, clock, CrashingMailer()) as crashing, pytest.raises(RuntimeError):
        run_sender(crashing)


@pytest.mark.parametrize("policy", ["review", "resend"])
def test_webhook_event_proves_send(
    database_url: str,
    redis_url: str,
    fake_sendgrid: FakeSendGrid,
    clock: Clock,
    policy: str,
) -> None:
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=1)
        email_id = schedule(conn, sample.event_id, START)
    crash_mid_send(database_url, redis_url, clock)
    [row] = delivery_rows(database_url).values()
    assert row["status"] == "sending"
    occurred = START + dt.timedelta(seconds=5)
    event = {"event": "processed", "sg_message_id": "abc123.filter0001.1.0"}
    with connect(database_url) as conn:
        conn.execute(
            "INSERT INTO webhook_events (dedup_key, sg_message_id, event, delivery_id, attempt,"
            " occurred_at, payload) VALUES ('e1', %s, 'processed', %s, 1, %s, %s)",
            (event["sg_message_id"], row["id"], occurred, json.dumps(event)),
        )

    clock.advance(seconds=STUCK_AFTER + 1)
    with context_for(database_url, redis_url, fake_sendgrid, clock, policy) as context:
        report = scan(context)
        clock.advance(hours=1)
        run_sender(context)
        scan(context)

    assert report.proven_sent == 1
    [row] = delivery_rows(database_url).values()
    assert row["status"] == "sent"
    assert row["sent_at"] == occurred
    assert row["sendgrid_message_id"] == "abc123"
    assert fake_sendgrid.count() == 0
    assert email_status(database_url, email_id) == ("sent", None)


def test_recent_sending_left_alone(
    ctx: SendContext, database_url: str, redis_url: str, fake_sendgrid: FakeSendGrid, clock: Clock
) -> None:
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=1)
        schedule(conn, sample.event_id, START)
    crash_mid_send(database_url, redis_url, clock)
    clock.advance(seconds=STUCK_AFTER - 1)
    report = scan(ctx)
    assert report.flagged_for_review == 0
    [row] = delivery_rows(database_url).values()
    assert row["status"] == "sending"


def blocked_delivery(
    ctx: SendContext, database_url: str, next_retry_at: dt.datetime | None, last_event: dt.datetime
) -> int:
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=1)
        schedule(conn, sample.event_id, START)
    run_sender(ctx)
    [row] = delivery_rows(database_url).values()
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE email_deliveries SET status = 'blocked', next_retry_at = %s,"
            " last_event_at = %s WHERE id = %s",
            (next_retry_at, last_event, row["id"]),
        )
    return int(row["id"])


def test_overdue_retry_enqueued(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str, clock: Clock, r: redis.Redis
) -> None:
    delivery_id = blocked_delivery(ctx, database_url, START + dt.timedelta(hours=1), START)
    clock.advance(hours=1, minutes=11)

    report = scan(ctx)

    assert report.retries_enqueued == 1
    [raw] = r.lrange("queue:email_delivery", 0, -1)
    payload = json.loads(raw)
    assert payload["class"] == "EmailRetryJob"
    assert payload["args"] == [delivery_id, 1]
    assert payload["jid"] == retry_jid(delivery_id, 1)
    jobs.use_context(ctx)
    try:
        jobs.EmailRetryJob().perform(*payload["args"])
    finally:
        jobs.use_context(None)
    assert [r.custom_args["app_attempt"] for r in fake_sendgrid.requests] == ["1", "2"]


def test_retry_not_yet_overdue_left_alone(
    ctx: SendContext, database_url: str, clock: Clock, r: redis.Redis
) -> None:
    blocked_delivery(ctx, database_url, START + dt.timedelta(hours=1), START)
    clock.advance(hours=1, minutes=5)
    assert scan(ctx).retries_enqueued == 0
    assert r.llen("queue:email_delivery") == 0


def test_missing_retry_scheduled(
    ctx: SendContext, database_url: str, clock: Clock, r: redis.Redis
) -> None:
    """A blocked delivery that never got a retry time gets one, from its bounce time."""
    bounced = START + dt.timedelta(minutes=1)
    delivery_id = blocked_delivery(ctx, database_url, None, bounced)
    clock.advance(minutes=30)

    report = scan(ctx)

    assert report.retries_scheduled == 1
    [(member, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert json.loads(member)["args"] == [delivery_id, 1]
    assert score == (bounced + dt.timedelta(hours=1)).timestamp()
    assert scan(ctx).retries_scheduled == 0


def test_scanner_job_finalizes_emails(
    ctx: SendContext, database_url: str, fake_sendgrid: FakeSendGrid
) -> None:
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=1)
        email_id = schedule(conn, sample.event_id, START)
    run_sender(ctx)
    with connect(database_url) as conn:
        conn.execute("UPDATE scheduled_emails SET status = 'sending' WHERE id = %s", (email_id,))
    jobs.use_context(ctx)
    try:
        jobs.EmailRetryScannerJob().perform()
    finally:
        jobs.use_context(None)
    assert email_status(database_url, email_id) == ("sent", None)
