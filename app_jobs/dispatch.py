"""Sending one claimed delivery and storing the outcome of its Mail Send request.

The sender and the soft-bounce retry job both claim a delivery (status
``sending``, committed) and then call ``deliver``. The outcome is written in
a new short transaction after the request: ``sent`` with the message id,
back to ``queued`` with a backoff for a transient error, or ``failed``.
Every update is guarded by ``status = 'sending'`` so that a webhook event
that arrived during the request is never overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import redis
from psycopg_pool import ConnectionPool

from app_jobs import models
from app_jobs.mailer import (
    Mailer,
    OutgoingEmail,
    SendGridConfigError,
    SendResult,
    clear_config_error,
    record_config_error,
)
from app_jobs.models import Delivery
from app_jobs.settings import AppSettings

log = logging.getLogger(__name__)

# Transient failures (429, 5xx, timeouts, crash re-sends) wait 1, 2, 4 ... minutes,
# at most an hour, and the delivery fails after this many (about four hours).
RETRY_BASE_SECONDS = 60
RETRY_MAX_SECONDS = 3600
MAX_SEND_ERRORS = 10


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass
class SendContext:
    """Dependencies of a sender or retry run; tests pass their own clock, mailer and pool."""

    settings: AppSettings
    pool: ConnectionPool[psycopg.Connection[Any]]
    mailer: Mailer
    # Where the SendGrid configuration error is recorded for the health checks.
    redis: redis.Redis | None = None
    clock: Callable[[], dt.datetime] = utcnow


def claim_attempt(conn: psycopg.Connection[Any], delivery: Delivery) -> None:
    """Write the history row of an attempt that is about to be sent."""
    upsert_attempt(conn, delivery.id, delivery.attempt, models.SENDING, None, None)


def upsert_attempt(
    conn: psycopg.Connection[Any],
    delivery_id: int,
    attempt: int,
    status: str,
    message_id: str | None,
    sent_at: dt.datetime | None,
) -> None:
    """Write the attempt's history row. A status set by a webhook event is kept."""
    conn.execute(
        "INSERT INTO email_delivery_attempts (delivery_id, attempt, sendgrid_message_id,"
        " status, sent_at) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (delivery_id, attempt) DO UPDATE SET"
        " sendgrid_message_id = coalesce(EXCLUDED.sendgrid_message_id,"
        "  email_delivery_attempts.sendgrid_message_id),"
        " sent_at = coalesce(email_delivery_attempts.sent_at, EXCLUDED.sent_at),"
        " status = CASE WHEN email_delivery_attempts.status IN ('queued', 'sending')"
        "  THEN EXCLUDED.status ELSE email_delivery_attempts.status END",
        (delivery_id, attempt, message_id, status, sent_at),
    )


def outgoing(delivery: Delivery) -> OutgoingEmail:
    return OutgoingEmail(
        delivery_id=delivery.id,
        attempt=delivery.attempt,
        scheduled_email_id=delivery.scheduled_email_id,
        to_email=delivery.recipient_email,
        to_name=delivery.recipient_name,
        subject=delivery.subject,
        html=delivery.body_html,
        text=delivery.body_text,
    )


def deliver(ctx: SendContext, delivery: Delivery) -> SendResult:
    """Send a delivery already marked ``sending`` and store the outcome.

    Raises SendGridConfigError after putting the delivery back to ``queued``
    as if it had never been claimed.
    """
    try:
        result = ctx.mailer.send(outgoing(delivery))
    except SendGridConfigError as exc:
        unclaim(ctx, delivery)
        note_config_error(ctx, exc)
        raise
    note_config_ok(ctx)
    if result.outcome == "sent":
        mark_sent(ctx, delivery, result)
    elif result.outcome == "retry":
        mark_retry(ctx, delivery, result)
    else:
        mark_failed(ctx, delivery, result.error or "Mail Send failed")
    return result


def mark_sent(ctx: SendContext, delivery: Delivery, result: SendResult) -> None:
    now = ctx.clock()
    with ctx.pool.connection() as conn:
        # A webhook event may already have moved the status past "sent"; keep it.
        conn.execute(
            "UPDATE email_deliveries SET"
            " status = CASE WHEN status = 'sending' THEN 'sent' ELSE status END,"
            " sendgrid_message_id = coalesce(%(message_id)s, sendgrid_message_id),"
            " sent_at = %(now)s, error = NULL, updated_at = %(now)s"
            " WHERE id = %(id)s AND attempt = %(attempt)s",
            {
                "id": delivery.id,
                "attempt": delivery.attempt,
                "message_id": result.message_id,
                "now": now,
            },
        )
        upsert_attempt(conn, delivery.id, delivery.attempt, models.SENT, result.message_id, now)
    log.info("delivery %s sent (attempt %s)", delivery.id, delivery.attempt)


def mark_retry(ctx: SendContext, delivery: Delivery, result: SendResult) -> None:
    """Queue the delivery again after a backoff, or fail it after MAX_SEND_ERRORS."""
    now = ctx.clock()
    errors = delivery.send_errors + 1
    if errors >= MAX_SEND_ERRORS:
        mark_failed(ctx, delivery, f"gave up after {errors} failed requests; last: {result.error}")
        return
    retry_at = now + dt.timedelta(seconds=retry_delay(errors))
    if result.retry_at is not None:
        retry_at = max(retry_at, dt.datetime.fromtimestamp(result.retry_at, dt.UTC))
    with ctx.pool.connection() as conn:
        # Only while still "sending": if a webhook event proved that a timed-out
        # request was accepted after all, the delivery must not be sent again.
        conn.execute(
            "UPDATE email_deliveries SET status = 'queued', send_errors = %s,"
            " next_retry_at = %s, error = %s, updated_at = %s"
            " WHERE id = %s AND attempt = %s AND status = 'sending'",
            (errors, retry_at, result.error, now, delivery.id, delivery.attempt),
        )
        upsert_attempt(conn, delivery.id, delivery.attempt, models.QUEUED, None, None)
    log.warning(
        "delivery %s not sent (%s); retry %d at %s",
        delivery.id,
        result.error,
        errors,
        retry_at.isoformat(),
    )


def retry_delay(errors: int) -> int:
    """Return seconds to wait after the ``errors``-th transient failure: 60, 120, ... 3600."""
    return int(min(RETRY_BASE_SECONDS * 2 ** (errors - 1), RETRY_MAX_SECONDS))


def mark_failed(ctx: SendContext, delivery: Delivery, error: str) -> None:
    now = ctx.clock()
    with ctx.pool.connection() as conn:
        conn.execute(
            "UPDATE email_deliveries SET status = 'failed', error = %s, updated_at = %s"
            " WHERE id = %s AND attempt = %s AND status = 'sending'",
            (error, now, delivery.id, delivery.attempt),
        )
        upsert_attempt(conn, delivery.id, delivery.attempt, models.FAILED, None, None)
    log.warning("delivery %s failed: %s", delivery.id, error)


def unclaim(ctx: SendContext, delivery: Delivery) -> None:
    """Undo a claim whose request SendGrid rejected as a whole (nothing was sent)."""
    with ctx.pool.connection() as conn:
        conn.execute(
            "UPDATE email_deliveries SET status = 'queued', sending_started_at = NULL,"
            " updated_at = %s WHERE id = %s AND attempt = %s AND status = 'sending'",
            (ctx.clock(), delivery.id, delivery.attempt),
        )
        conn.execute(
            "DELETE FROM email_delivery_attempts WHERE delivery_id = %s AND attempt = %s"
            " AND status = 'sending'",
            (delivery.id, delivery.attempt),
        )


def note_config_error(ctx: SendContext, error: SendGridConfigError) -> None:
    """Record the error for the health checks and log it once per outage."""
    new = True
    if ctx.redis is not None:
        try:
            new = record_config_error(ctx.redis, error, ctx.clock())
        except redis.RedisError as exc:
            log.warning("could not record the SendGrid error in Redis: %s", exc)
    if new:
        log.error(
            "SendGrid rejected the request with HTTP %s (%s): check SENDGRID_API_KEY, its "
            "Mail Send permission, the sender identity and APP_JOBS_SENDGRID_HOST; "
            "sending is paused and emails stay scheduled until a request succeeds",
            error.status_code,
            error.message,
        )
    else:
        log.debug("SendGrid still responds with HTTP %s", error.status_code)


def note_config_ok(ctx: SendContext) -> None:
    if ctx.redis is None:
        return
    try:
        if clear_config_error(ctx.redis):
            log.info("SendGrid accepts requests again; sending resumed")
    except redis.RedisError as exc:
        log.warning("could not clear the SendGrid error in Redis: %s", exc)
