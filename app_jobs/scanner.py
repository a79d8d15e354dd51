"""The scanner: repairs what a lost job or a crashed worker left behind (cron, every 30 min).

- A blocked delivery whose retry time passed without a send gets its
  EmailRetryJob again (the job checks the state, so a duplicate is harmless),
  and a blocked delivery that never got a retry time is given one.
- A delivery left in ``sending`` longer than APP_JOBS_STUCK_SENDING_AFTER
  (the process died between the request and its commit) is settled. A
  webhook event carrying its delivery id and attempt proves the send, so it
  becomes ``sent`` and is never sent again. Without such an event the outcome
  is unknown, because Mail Send has no idempotency key. Then
  APP_JOBS_STUCK_SENDING_POLICY decides: ``review`` marks it failed with
  ``needs_review`` (an email may be missing), ``resend`` queues it again (an
  email may arrive twice).
- Emails whose deliveries are all settled are marked sent or failed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import psycopg

from app_jobs import models
from app_jobs.dispatch import MAX_SEND_ERRORS, SendContext, upsert_attempt
from app_jobs.retry_policy import on_soft_bounce, schedule_retry_job
from app_jobs.sender import finalize_emails
from pyqueue.client import Client

log = logging.getLogger(__name__)

# A retry job normally runs within seconds of its time; only one this late is missing.
RETRY_GRACE = dt.timedelta(minutes=10)

NOT_SUPPRESSED = (
    "NOT EXISTS (SELECT 1 FROM suppressions s WHERE lower(s.email) = lower(d.recipient_email))"
)


@dataclasses.dataclass
class ScanReport:
    retries_enqueued: int = 0
    retries_scheduled: int = 0
    proven_sent: int = 0
    flagged_for_review: int = 0
    resent: int = 0
    emails_finalized: int = 0


def scan(ctx: SendContext, client: Client | None = None) -> ScanReport:
    """Run every repair once; return the counts."""
    report = ScanReport()
    report.retries_enqueued = enqueue_overdue_retries(ctx, client)
    report.retries_scheduled = schedule_missing_retries(ctx, client)
    settle_stuck_deliveries(ctx, report)
    report.emails_finalized = finalize_emails(ctx)
    log.info(
        "scanner: %d overdue retries enqueued, %d retries scheduled, %d stuck deliveries "
        "proven sent, %d flagged for review, %d queued again, %d emails finalized",
        report.retries_enqueued,
        report.retries_scheduled,
        report.proven_sent,
        report.flagged_for_review,
        report.resent,
        report.emails_finalized,
    )
    return report


def enqueue_overdue_retries(ctx: SendContext, client: Client | None = None) -> int:
    """Push EmailRetryJob now for blocked deliveries whose retry time passed RETRY_GRACE ago."""
    cutoff = ctx.clock() - RETRY_GRACE
    with ctx.pool.connection() as conn:
        rows = conn.execute(
            f"SELECT id, attempt FROM email_deliveries d WHERE status = 'blocked'"
            f" AND attempt < %s AND next_retry_at <= %s AND {NOT_SUPPRESSED} ORDER BY id",
            (models.MAX_ATTEMPTS, cutoff),
        ).fetchall()
    for delivery_id, attempt in rows:
        jid = schedule_retry_job(delivery_id, attempt, None, client)
        with ctx.pool.connection() as conn:
            conn.execute(
                "UPDATE email_deliveries SET retry_jid = %s WHERE id = %s AND attempt = %s",
                (jid, delivery_id, attempt),
            )
        log.info("delivery %s: overdue retry after attempt %s enqueued", delivery_id, attempt)
    return len(rows)


def schedule_missing_retries(ctx: SendContext, client: Client | None = None) -> int:
    """Give a retry time to blocked deliveries that have none (the bounce hook never ran)."""
    cutoff = ctx.clock() - RETRY_GRACE
    with ctx.pool.connection() as conn:
        rows = conn.execute(
            f"SELECT id, attempt, coalesce(last_event_at, updated_at) FROM email_deliveries d"
            f" WHERE status = 'blocked' AND attempt < %s AND next_retry_at IS NULL"
            f" AND retry_jid IS NULL AND coalesce(last_event_at, updated_at) <= %s"
            f" AND {NOT_SUPPRESSED} ORDER BY id",
            (models.MAX_ATTEMPTS, cutoff),
        ).fetchall()
    scheduled = 0
    for delivery_id, attempt, bounced_at in rows:
        with ctx.pool.connection() as conn:
            if on_soft_bounce(conn, delivery_id, attempt, bounced_at, client=client):
                scheduled += 1
    return scheduled


def settle_stuck_deliveries(ctx: SendContext, report: ScanReport) -> None:
    """Settle every delivery in ``sending`` since before the stuck window began."""
    cutoff = ctx.clock() - dt.timedelta(seconds=ctx.settings.stuck_sending_after)
    with ctx.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, attempt FROM email_deliveries WHERE status = 'sending'"
            " AND sending_started_at <= %s ORDER BY id",
            (cutoff,),
        ).fetchall()
    for delivery_id, attempt in rows:
        with ctx.pool.connection() as conn:
            outcome = settle_stuck(conn, ctx, delivery_id, attempt, cutoff)
        if outcome == "sent":
            report.proven_sent += 1
        elif outcome == "review":
            report.flagged_for_review += 1
        elif outcome == "resend":
            report.resent += 1


def settle_stuck(
    conn: psycopg.Connection[Any],
    ctx: SendContext,
    delivery_id: int,
    attempt: int,
    cutoff: dt.datetime,
) -> str | None:
    """Settle one stuck delivery; return "sent", "review", "resend" or None if it moved on."""
    row = conn.execute(
        "SELECT send_errors FROM email_deliveries WHERE id = %s AND attempt = %s"
        " AND status = 'sending' AND sending_started_at <= %s FOR UPDATE SKIP LOCKED",
        (delivery_id, attempt, cutoff),
    ).fetchone()
    if row is None:
        return None
    now = ctx.clock()
    proof = conn.execute(
        "SELECT count(*), min(occurred_at),"
        " (array_agg(sg_message_id ORDER BY occurred_at) FILTER"
        "  (WHERE sg_message_id IS NOT NULL))[1]"
        " FROM webhook_events WHERE delivery_id = %s AND attempt = %s",
        (delivery_id, attempt),
    ).fetchone()
    if proof is not None and proof[0] > 0:
        mark_proven(conn, delivery_id, attempt, proof[1] or now, proof[2], now)
        log.info("stuck delivery %s: a webhook event proves the send", delivery_id)
        return "sent"
    errors = int(row[0]) + 1
    if ctx.settings.stuck_sending_policy == "resend" and errors < MAX_SEND_ERRORS:
        requeue_stuck(conn, delivery_id, attempt, errors, now)
        log.warning("stuck delivery %s: no proof of sending; queued again", delivery_id)
        return "resend"
    flag_for_review(conn, ctx, delivery_id, attempt, now)
    log.warning("stuck delivery %s: no proof of sending; flagged for review", delivery_id)
    return "review"


def mark_proven(
    conn: psycopg.Connection[Any],
    delivery_id: int,
    attempt: int,
    sent_at: dt.datetime,
    sg_message_id: str | None,
    now: dt.datetime,
) -> None:
    # The part of sg_message_id before the first dot is the X-Message-Id of the request.
    message_id = sg_message_id.split(".", 1)[0] if sg_message_id else None
    conn.execute(
        "UPDATE email_deliveries SET status = 'sent', sent_at = coalesce(sent_at, %s),"
        " sendgrid_message_id = coalesce(sendgrid_message_id, %s), error = NULL,"
        " updated_at = %s WHERE id = %s",
        (sent_at, message_id, now, delivery_id),
    )
    upsert_attempt(conn, delivery_id, attempt, models.SENT, message_id, sent_at)


def requeue_stuck(
    conn: psycopg.Connection[Any], delivery_id: int, attempt: int, errors: int, now: dt.datetime
) -> None:
    error = "sending was interrupted with no proof that SendGrid accepted it; sending again"
    conn.execute(
        "UPDATE email_deliveries SET status = 'queued', send_errors = %s, next_retry_at = NULL,"
        " error = %s, updated_at = %s WHERE id = %s",
        (errors, error, now, delivery_id),
    )
    upsert_attempt(conn, delivery_id, attempt, models.QUEUED, None, None)


def flag_for_review(
    conn: psycopg.Connection[Any],
    ctx: SendContext,
    delivery_id: int,
    attempt: int,
    now: dt.datetime,
) -> None:
    error = (
        f"sending was interrupted and no webhook event arrived within "
        f"{ctx.settings.stuck_sending_after} s, so SendGrid may or may not have sent it; "
        "check SendGrid's activity feed, then re-send or close this delivery"
    )
    conn.execute(
        "UPDATE email_deliveries SET status = 'failed', needs_review = true, error = %s,"
        " updated_at = %s WHERE id = %s",
        (error, now, delivery_id),
    )
    upsert_attempt(conn, delivery_id, attempt, models.FAILED, None, None)
