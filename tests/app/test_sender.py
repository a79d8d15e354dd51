"""The sender run on real PostgreSQL and Redis against the fake SendGrid."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from app_jobs import jobs
from app_jobs.db import connect
from app_jobs.dispatch import SendContext
from app_jobs.mailer import CONFIG_ERROR_KEY, OutgoingEmail, SendResult, read_config_error
from app_jobs.sender import run_sender
from tests.app.support import (
    START,
    Clock,
    app_settings,
    delivery_rows,
    email_status,
    make_event,
    rows,
    schedule,
    send_context,
)
from tests.fixtures.fake_sendgrid import (
    API_KEY,
    FakeSendGrid,
    Reply,
    dropped,
    error,
    rate_limited,
    slow,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(
    database_url: str, redis_url: str, fake_sendgrid: FakeSendGrid, clock: Clock
) -> Iterator[SendContext]:
    settings = app_settings(database_url, redis_url, fake_sendgrid, sendgrid_timeout=0.5)
    with send_context(settings, clock) as context:
        yield context


def seed(url: str, vendors: int = 3, emails: int = 1) -> tuple[list[str], list[int]]:
    """Create one event with ``vendors`` vendors and ``emails`` due emails."""
    with connect(url) as conn:
        sample = make_event(conn, vendors)
        ids = [
            schedule(conn, sample.event_id, START - dt.timedelta(minutes=n + 1))
            for n in range(emails)
        ]
    return sample.emails, ids


def assert_no_private_data(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text
    assert "@example.org" not in text
    assert API_KEY not in text


def test_due_email_sent_once(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    addresses, [due] = seed(database_url)
    with connect(database_url) as conn:
        future = schedule(conn, 1, START + dt.timedelta(days=1))

    report = run_sender(ctx)

    assert report.emails_claimed == 1
    assert report.sent == 3
    assert sorted(r.recipient for r in fake_sendgrid.requests) == addresses
    assert email_status(database_url, due) == ("sent", None)
    assert email_status(database_url, future) == ("scheduled", None)
    deliveries = delivery_rows(database_url)
    for request in fake_sendgrid.requests:
        row = deliveries[request.recipient]
        assert row["status"] == "sent"
        assert row["sendgrid_message_id"] == request.message_id
        assert row["sent_at"] == START
        assert request.custom_args == {
            "app_delivery_id": str(row["id"]),
            "app_attempt": "1",
            "app_scheduled_email_id": str(due),
        }
    attempts = rows(
        database_url, "SELECT attempt, status, sendgrid_message_id FROM email_delivery_attempts"
    )
    assert sorted(a[2] for a in attempts) == sorted(r.message_id for r in fake_sendgrid.requests)
    assert {(a[0], a[1]) for a in attempts} == {(1, "sent")}

    second = run_sender(ctx)
    assert second.emails_claimed == 0
    assert second.sent == 0
    assert fake_sendgrid.count() == 3
    assert_no_private_data(caplog)


def test_overlapping_runs_send_once(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str
) -> None:
    """Three runs at once with a slow SendGrid: every delivery gets exactly one request."""
    seed(database_url, vendors=4, emails=2)
    fake_sendgrid.default = slow(0.1)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            run_sender(ctx)
        except BaseException as exc:  # reported below, so the test fails with the cause
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    per_delivery = Counter(r.custom_args["app_delivery_id"] for r in fake_sendgrid.requests)
    assert len(per_delivery) == 8
    assert set(per_delivery.values()) == {1}
    statuses = rows(database_url, "SELECT status, count(*) FROM scheduled_emails GROUP BY 1")
    assert statuses == [("sent", 2)]


def test_unknown_variable_fails_only_that_email(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str
) -> None:
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=2)
        bad = schedule(conn, sample.event_id, START, body="<p>{{vendor_phone}}</p>")
        good = schedule(conn, sample.event_id, START)

    report = run_sender(ctx)

    assert report.emails_failed == 1
    status, error_text = email_status(database_url, bad)
    assert status == "failed"
    assert error_text is not None
    assert "unknown template variable {{vendor_phone}} in the body" in error_text
    assert email_status(database_url, good) == ("sent", None)
    assert fake_sendgrid.count() == 2
    assert {r.custom_args["app_scheduled_email_id"] for r in fake_sendgrid.requests} == {str(good)}


def test_values_escaped_in_html(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str
) -> None:
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=0, title="Tom & Jerry's <Fair>")
        conn.execute(
            "INSERT INTO recipients (event_id, name, email) VALUES (%s, %s, %s)",
            (sample.event_id, "<script>alert(1)</script>", "x@example.org"),
        )
        schedule(
            conn,
            sample.event_id,
            START,
            subject="{{event_title}}",
            body="<p>Hi {{vendor_name}}, welcome to {{event_title}}</p>",
        )

    run_sender(ctx)

    [request] = fake_sendgrid.requests
    content = {part["type"]: part["value"] for part in request.body["content"]}
    assert content["text/html"] == (
        "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;, "
        "welcome to Tom &amp; Jerry&#x27;s &lt;Fair&gt;</p>"
    )
    assert content["text/plain"] == "Hi <script>alert(1)</script>, welcome to Tom & Jerry's <Fair>"
    assert request.body["subject"] == "Tom & Jerry's <Fair>"


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(rate_limited(int((START + dt.timedelta(minutes=5)).timestamp())), id="429"),
        pytest.param(Reply(status=500), id="500"),
        pytest.param(Reply(status=503), id="503"),
        pytest.param(slow(2.0), id="timeout"),
        pytest.param(dropped(), id="dropped"),
    ],
)
def test_transient_error_retries_one_delivery(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    clock: Clock,
    reply: Reply,
) -> None:
    addresses, [email_id] = seed(database_url)
    fake_sendgrid.script_for(addresses[1], reply)

    first = run_sender(ctx)

    assert first.sent == 2
    assert first.retrying == 1
    deliveries = delivery_rows(database_url)
    waiting = deliveries[addresses[1]]
    assert waiting["status"] == "queued"
    assert waiting["send_errors"] == 1
    assert waiting["error"]
    expected_retry = START + dt.timedelta(minutes=5 if reply.status == 429 else 1)
    assert waiting["next_retry_at"] == expected_retry
    assert email_status(database_url, email_id)[0] == "sending"

    run_sender(ctx)  # not due yet: nothing is sent
    assert fake_sendgrid.count() == 3

    clock.advance(minutes=6)
    second = run_sender(ctx)

    assert second.sent == 1
    assert [len(fake_sendgrid.sent_to(a)) for a in addresses] == [1, 2, 1]
    assert delivery_rows(database_url)[addresses[1]]["status"] == "sent"
    assert email_status(database_url, email_id) == ("sent", None)


@pytest.mark.parametrize("status", [400, 413])
def test_permanent_error_fails_one_delivery(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str, status: int
) -> None:
    addresses, [email_id] = seed(database_url)
    fake_sendgrid.script_for(addresses[0], error(status, "Invalid to email", field="to.email"))

    report = run_sender(ctx)

    assert report.failed == 1
    assert report.sent == 2
    failed = delivery_rows(database_url)[addresses[0]]
    assert failed["status"] == "failed"
    assert (
        failed["error"]
        == f"SendGrid responded with HTTP {status}: Invalid to email (field to.email)"
    )
    assert email_status(database_url, email_id) == ("sent", None)

    run_sender(ctx)
    assert len(fake_sendgrid.sent_to(addresses[0])) == 1


def test_email_fails_when_every_delivery_fails(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str
) -> None:
    _, [email_id] = seed(database_url, vendors=2)
    fake_sendgrid.default = error(400, "The from address does not match a verified Sender")

    run_sender(ctx)

    status, error_text = email_status(database_url, email_id)
    assert status == "failed"
    assert error_text == "every delivery failed; see email_deliveries.error"


@pytest.mark.parametrize("status", [401, 403, 404])
def test_config_error_keeps_emails_scheduled(
    ctx: SendContext,
    fake_sendgrid: FakeSendGrid,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    r: Any,
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, ids = seed(database_url, vendors=3, emails=2)
    fake_sendgrid.default = error(status, "The provided authorization grant is invalid")

    first = run_sender(ctx)
    second = run_sender(ctx)

    assert first.config_error is not None
    assert second.config_error is not None
    assert fake_sendgrid.count() == 2  # one request per run, then the run stops
    assert [email_status(database_url, i) for i in ids] == [("scheduled", None)] * 2
    assert rows(database_url, "SELECT count(*) FROM email_deliveries") == [(0,)]
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"HTTP {status}" in errors[0].getMessage()
    assert_no_private_data(caplog)
    flag = read_config_error(r)
    assert flag is not None
    assert flag["status"] == status

    fake_sendgrid.default = Reply()
    third = run_sender(ctx)

    assert third.config_error is None
    assert third.sent == 6
    assert r.exists(CONFIG_ERROR_KEY) == 0
    assert [email_status(database_url, i) for i in ids] == [("sent", None)] * 2
    assert "sending resumed" in caplog.text


def test_suppressed_address_not_sent(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str
) -> None:
    addresses, [email_id] = seed(database_url, vendors=2)
    with connect(database_url) as conn:
        conn.execute(
            "INSERT INTO suppressions (email, kind) VALUES (%s, 'unsubscribe')",
            (addresses[0].upper(),),
        )

    run_sender(ctx)

    assert [r.recipient for r in fake_sendgrid.requests] == [addresses[1]]
    skipped = delivery_rows(database_url)[addresses[0]]
    assert skipped["status"] == "failed"
    assert "suppression list (unsubscribe)" in skipped["error"]
    assert email_status(database_url, email_id) == ("sent", None)


def test_email_without_recipients_fails(ctx: SendContext, database_url: str) -> None:
    _, [email_id] = seed(database_url, vendors=0)

    run_sender(ctx)

    status, error_text = email_status(database_url, email_id)
    assert status == "failed"
    assert error_text is not None
    assert "has no recipients" in error_text


class EventDuringRequest:
    """A mailer whose request is overtaken by a webhook event that moves the status."""

    def __init__(self, url: str, status: str, result: SendResult) -> None:
        self.url = url
        self.status = status
        self.result = result

    def send(self, email: OutgoingEmail) -> SendResult:
        with connect(self.url) as conn:
            conn.execute(
                "UPDATE email_deliveries SET status = %s WHERE id = %s",
                (self.status, email.delivery_id),
            )
        return self.result


@pytest.mark.parametrize(
    "result",
    [SendResult("sent", message_id="abc"), SendResult("retry", error="timed out")],
    ids=["sent", "retry"],
)
def test_event_status_not_overwritten(
    database_url: str, redis_url: str, clock: Clock, result: SendResult
) -> None:
    """An event applied during the request wins: no step back, no second send."""
    seed(database_url, vendors=1)
    mailer = EventDuringRequest(database_url, "delivered", result)
    with send_context(app_settings(database_url, redis_url), clock, mailer) as context:
        run_sender(context)
        clock.advance(hours=1)
        report = run_sender(context)

    assert report.sent + report.retrying == 0
    [row] = delivery_rows(database_url).values()
    assert row["status"] == "delivered"


def test_sender_job_performs_run(
    ctx: SendContext, fake_sendgrid: FakeSendGrid, database_url: str
) -> None:
    seed(database_url, vendors=2)
    jobs.use_context(ctx)
    try:
        jobs.EmailSenderWorker().perform()
    finally:
        jobs.use_context(None)
    assert fake_sendgrid.count() == 2
