"""Soft-bounce retries: a blocked delivery is sent again after 1 h, 4 h and 24 h.

The webhook processor calls ``on_soft_bounce`` when the current attempt of a
delivery soft-bounces (SendGrid's ``bounce`` with type ``blocked`` or
``expired``). It schedules EmailRetryJob, which calls ``retry_delivery``:
that sends attempt N+1 with the same rendered content and a new
``app_attempt``. At most 3 retries follow the original send, so a recipient
gets at most 4 sends, and a suppressed address is never retried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

import psycopg
from psycopg.rows import class_row

from app_jobs import models
from app_jobs.dispatch import SendContext, claim_attempt, deliver
from app_jobs.mailer import SendGridConfigError, SendResult
from app_jobs.models import DELIVERY_COLUMNS, Delivery
from pyqueue.client import Client

log = logging.getLogger(__name__)

# Wait after the soft bounce of attempt 1, 2 and 3; attempt 4 is the last send.
RETRY_DELAYS = {
    1: dt.timedelta(hours=1),
    2: dt.timedelta(hours=4),
    3: dt.timedelta(hours=24),
}
# A retry job may run this early: clocks of the worker hosts differ a little.
CLOCK_SKEW = dt.timedelta(seconds=60)


def retry_delay(attempt: int) -> dt.timedelta | None:
    """Return the wait before retrying a soft bounce of ``attempt``, or None when none is left."""
    return RETRY_DELAYS.get(attempt)


def retry_jid(delivery_id: int, attempt: int) -> str:
    """Return the jid of the retry after ``attempt``: the same for every enqueue of it."""
    return hashlib.sha1(f"email-retry:{delivery_id}:{attempt}".encode()).hexdigest()[:24]


def on_soft_bounce(
    conn: psycopg.Connection[Any],
    delivery_id: int,
    attempt: int,
    bounced_at: dt.datetime,
    *,
    client: Client | None = None,
) -> dt.datetime | None:
    """Schedule the retry of a soft-bounced attempt; return its time, or None when none follows.

    Runs inside the caller's transaction and does not commit. None means the
    delivery is unknown, ``attempt`` is not its current attempt, three
    retries were already made, or the address is suppressed. Calling it again
    for the same attempt returns the time already scheduled. The job is pushed
    before the caller commits; if that transaction rolls back, the job finds
    the delivery not blocked and does nothing.
    """
    row = conn.execute(
        "SELECT attempt, recipient_email, next_retry_at, retry_jid FROM email_deliveries"
        " WHERE id = %s FOR UPDATE",
        (delivery_id,),
    ).fetchone()
    if row is None or row[0] != attempt:
        return None
    _, email, next_retry_at, jid = row
    delay = retry_delay(attempt)
    if delay is None:
        log.info("delivery %s soft-bounced on attempt %s; no retries left", delivery_id, attempt)
        return None
    kinds = models.suppression_kinds(conn, email)
    if kinds:
        log.info("delivery %s not retried: address suppressed (%s)", delivery_id, ", ".join(kinds))
        return None
    if next_retry_at is not None and jid is not None:
        scheduled: dt.datetime = next_retry_at
        return scheduled
    if bounced_at.tzinfo is None:
        bounced_at = bounced_at.replace(tzinfo=dt.UTC)
    retry_at = bounced_at + delay
    jid = schedule_retry_job(delivery_id, attempt, retry_at, client)
    conn.execute(
        "UPDATE email_deliveries SET next_retry_at = %s, retry_jid = %s, updated_at = now()"
        " WHERE id = %s",
        (retry_at, jid, delivery_id),
    )
    log.info(
        "delivery %s soft-bounced on attempt %s; retry at %s",
        delivery_id,
        attempt,
        retry_at.isoformat(),
    )
    return retry_at


def schedule_retry_job(
    delivery_id: int, attempt: int, at: dt.datetime | None, client: Client | None = None
) -> str:
    """Push EmailRetryJob(delivery_id, attempt) for ``at`` (None: now); return its jid."""
    # Imported here because the job module imports this one.
    from app_jobs.jobs import EmailRetryJob

    options: dict[str, Any] = {"jid": retry_jid(delivery_id, attempt)}
    if client is not None:
        options["client"] = client
    setter = EmailRetryJob.set(**options)
    pushed = (
        setter.perform_async(delivery_id, attempt)
        if at is None
        else setter.perform_at(at, delivery_id, attempt)
    )
    return pushed or str(options["jid"])


def retry_delivery(ctx: SendContext, delivery_id: int, attempt: int) -> SendResult | None:
    """Send the next attempt of a delivery that soft-bounced on ``attempt``.

    Does nothing (returns None) unless the delivery is still blocked at that
    attempt, has retries left, is due and its address is not suppressed, so
    a duplicate or late job never sends twice. A SendGrid configuration
    error leaves the new attempt queued for the sender's next run.
    """
    now = ctx.clock()
    with ctx.pool.connection() as conn:
        delivery = claim_retry(conn, delivery_id, attempt, now)
        if delivery is None:
            skip_retry(conn, delivery_id, attempt, now)
            return None
        claim_attempt(conn, delivery)
    log.info("delivery %s: sending attempt %s", delivery.id, delivery.attempt)
    try:
        return deliver(ctx, delivery)
    except SendGridConfigError:
        return None


def claim_retry(
    conn: psycopg.Connection[Any], delivery_id: int, attempt: int, now: dt.datetime
) -> Delivery | None:
    """Start attempt ``attempt + 1`` (status sending); the row lock makes one caller win."""
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        cur.execute(
            f"UPDATE email_deliveries d SET attempt = attempt + 1, status = 'sending',"
            f" sending_started_at = %(now)s, next_retry_at = NULL, retry_jid = NULL,"
            f" sendgrid_message_id = NULL, sent_at = NULL, bounce_type = NULL,"
            f" bounce_reason = NULL, error = NULL, send_errors = 0, updated_at = %(now)s"
            f" WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'blocked'"
            f" AND attempt < %(max)s"
            f" AND (next_retry_at IS NULL OR next_retry_at <= %(early)s)"
            f" AND NOT EXISTS (SELECT 1 FROM suppressions s"
            f"  WHERE lower(s.email) = lower(d.recipient_email))"
            f" RETURNING {DELIVERY_COLUMNS}",
            {
                "id": delivery_id,
                "attempt": attempt,
                "max": models.MAX_ATTEMPTS,
                "now": now,
                "early": now + CLOCK_SKEW,
            },
        )
        return cur.fetchone()


def skip_retry(
    conn: psycopg.Connection[Any], delivery_id: int, attempt: int, now: dt.datetime
) -> None:
    """Log why a retry job did nothing; a suppressed address stops the retries for good."""
    delivery = models.load_delivery(conn, delivery_id)
    if delivery is None or delivery.attempt != attempt or delivery.status != models.BLOCKED:
        log.info("retry of delivery %s after attempt %s not needed", delivery_id, attempt)
        return
    kinds = models.suppression_kinds(conn, delivery.recipient_email)
    if kinds:
        conn.execute(
            "UPDATE email_deliveries SET next_retry_at = NULL, retry_jid = NULL, error = %s,"
            " updated_at = %s WHERE id = %s",
            (f"not retried: the address is suppressed ({', '.join(kinds)})", now, delivery_id),
        )
        log.info("retry of delivery %s cancelled: address suppressed", delivery_id)
    else:
        log.info(
            "retry of delivery %s after attempt %s skipped: not due before %s",
            delivery_id,
            attempt,
            delivery.next_retry_at,
        )
