"""The sender run: claim due scheduled emails, then send each recipient's delivery once.

A run has three steps, each in short transactions that never span a request:

1. Claim due emails with ``FOR UPDATE SKIP LOCKED`` (scheduled -> sending)
   and, in the same transaction, render one delivery per recipient.
2. Send every queued delivery that is due. A delivery is marked ``sending``
   and committed before its request, and ``sent`` with SendGrid's message id
   after it, so an overlapping run never picks it up and a crash leaves a
   trace the scanner can settle.
3. Mark each email whose deliveries are all settled ``sent`` (or ``failed``
   when every delivery failed).

A retryable response (429, 5xx, timeout) puts only that delivery back to
``queued`` with ``next_retry_at``; a later run sends it. A 401/403/404 stops
the run and returns every email that has not been sent to anyone to
``scheduled``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import psycopg
from psycopg.rows import class_row

from app_jobs import models
from app_jobs.dispatch import SendContext, claim_attempt, deliver
from app_jobs.mailer import SendGridConfigError
from app_jobs.models import DELIVERY_COLUMNS, EMAIL_COLUMNS, Delivery, ScheduledEmail
from app_jobs.templates import TemplateError, render_email, template_values

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunReport:
    """Counts of one sender run, logged at its end."""

    emails_claimed: int = 0
    emails_failed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    config_error: SendGridConfigError | None = None


def run_sender(ctx: SendContext) -> RunReport:
    """Send every due email and every due queued delivery; return what happened."""
    report = RunReport()
    while (created := claim_next_email(ctx)) is not None:
        report.emails_claimed += 1
        if not created:
            report.emails_failed += 1
    try:
        send_queued(ctx, report)
    except SendGridConfigError as exc:
        report.config_error = exc
        released = release_unsent_emails(ctx)
        log.warning("sender stopped; %d emails returned to scheduled", released)
    finalize_emails(ctx)
    log.info(
        "sender run: %d emails claimed (%d failed to render), %d deliveries sent, "
        "%d to retry, %d failed",
        report.emails_claimed,
        report.emails_failed,
        report.sent,
        report.retrying,
        report.failed,
    )
    return report


def claim_next_email(ctx: SendContext) -> bool | None:
    """Claim one due email and create its deliveries.

    Returns None when nothing is due, True when deliveries were created, and
    False when the email failed (a template error or no recipients).
    """
    now = ctx.clock()
    with ctx.pool.connection() as conn, conn.cursor(row_factory=class_row(ScheduledEmail)) as cur:
        cur.execute(
            f"UPDATE scheduled_emails SET status = 'sending', updated_at = %(now)s"
            f" WHERE id = (SELECT id FROM scheduled_emails"
            f"  WHERE status = 'scheduled' AND scheduled_for <= %(now)s"
            f"  ORDER BY scheduled_for, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {EMAIL_COLUMNS}",
            {"now": now},
        )
        email = cur.fetchone()
        if email is None:
            return None
        try:
            count = create_deliveries(conn, email, now)
        except TemplateError as exc:
            fail_email(conn, email.id, str(exc), now)
            log.warning("scheduled email %s failed: %s", email.id, exc)
            return False
        if count == 0:
            message = f"event {email.event_id} has no recipients; add vendors and reschedule"
            fail_email(conn, email.id, message, now)
            log.warning("scheduled email %s failed: %s", email.id, message)
            return False
        log.info("scheduled email %s claimed with %d deliveries", email.id, count)
        return True


def create_deliveries(
    conn: psycopg.Connection[Any], email: ScheduledEmail, now: dt.datetime
) -> int:
    """Render the email for every vendor of its event and insert one delivery each.

    Raises TemplateError before inserting anything. A suppressed address
    gets a failed delivery instead of a send.
    """
    event = models.load_event(conn, email.event_id)
    if event is None:
        raise TemplateError(f"event {email.event_id} of scheduled email {email.id} is missing")
    rows = []
    for recipient in models.load_recipients(conn, email.event_id):
        values = template_values(
            vendor_name=recipient.name,
            vendor_company=recipient.company,
            event_title=event.title,
            event_starts_at=event.starts_at,
            event_venue=event.venue,
        )
        rendered = render_email(email.subject_template, email.body_template, values)
        kinds = models.suppression_kinds(conn, recipient.email)
        status, error = models.QUEUED, None
        if kinds:
            status = models.FAILED
            error = f"not sent: the address is on the suppression list ({', '.join(kinds)})"
        rows.append(
            (email.id, recipient.id, recipient.email, recipient.name, rendered.subject)
            + (rendered.html, rendered.text, status, error, now)
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO email_deliveries (scheduled_email_id, recipient_id, recipient_email,"
            " recipient_name, subject, body_html, body_text, status, error, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (scheduled_email_id, lower(recipient_email)) DO NOTHING",
            rows,
        )
    return len(rows)


def fail_email(conn: psycopg.Connection[Any], email_id: int, error: str, now: dt.datetime) -> None:
    conn.execute(
        "UPDATE scheduled_emails SET status = 'failed', error = %s, updated_at = %s WHERE id = %s",
        (error, now, email_id),
    )


def send_queued(ctx: SendContext, report: RunReport) -> None:
    """Send queued deliveries until none is due; raises SendGridConfigError to stop."""
    while (delivery := claim_next_delivery(ctx)) is not None:
        result = deliver(ctx, delivery)
        if result.outcome == "sent":
            report.sent += 1
        elif result.outcome == "retry":
            report.retrying += 1
        else:
            report.failed += 1


def claim_next_delivery(ctx: SendContext) -> Delivery | None:
    """Move one due queued delivery to sending and commit; None when none is due."""
    now = ctx.clock()
    with ctx.pool.connection() as conn, conn.cursor(row_factory=class_row(Delivery)) as cur:
        cur.execute(
            f"UPDATE email_deliveries SET status = 'sending', sending_started_at = %(now)s,"
            f" updated_at = %(now)s"
            f" WHERE id = (SELECT id FROM email_deliveries WHERE status = 'queued'"
            f"  AND (next_retry_at IS NULL OR next_retry_at <= %(now)s)"
            f"  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {DELIVERY_COLUMNS}",
            {"now": now},
        )
        delivery = cur.fetchone()
        if delivery is not None:
            claim_attempt(conn, delivery)
        return delivery


def release_unsent_emails(ctx: SendContext) -> int:
    """Return to ``scheduled`` every sending email whose deliveries were never tried.

    Deliveries never handed to the mailer are deleted; an email with any
    other delivery keeps its state. Returns the number of emails released.
    """
    with ctx.pool.connection() as conn:
        rows = conn.execute("SELECT id FROM scheduled_emails WHERE status = 'sending'").fetchall()
    released = 0
    for (email_id,) in rows:
        with ctx.pool.connection() as conn:
            if release_email(conn, int(email_id), ctx.clock()):
                released += 1
            else:
                conn.rollback()
    return released


def release_email(conn: psycopg.Connection[Any], email_id: int, now: dt.datetime) -> bool:
    locked = conn.execute(
        "SELECT id FROM scheduled_emails WHERE id = %s AND status = 'sending' FOR UPDATE",
        (email_id,),
    ).fetchone()
    if locked is None:
        return False
    # Deleting first takes the row locks, so a delivery that another run is
    # claiming right now is waited for and then left alone.
    conn.execute(
        "DELETE FROM email_deliveries WHERE scheduled_email_id = %s"
        " AND attempt = 1 AND send_errors = 0 AND sending_started_at IS NULL"
        " AND status IN ('queued', 'failed')",
        (email_id,),
    )
    remaining = conn.execute(
        "SELECT count(*) FROM email_deliveries WHERE scheduled_email_id = %s", (email_id,)
    ).fetchone()
    if remaining is None or remaining[0] > 0:
        return False
    conn.execute(
        "UPDATE scheduled_emails SET status = 'scheduled', updated_at = %s WHERE id = %s",
        (now, email_id),
    )
    return True


def finalize_emails(ctx: SendContext) -> int:
    """Mark sending emails whose deliveries are all settled; return how many changed.

    An email is ``sent`` when at least one delivery was accepted and
    ``failed`` when every delivery failed.
    """
    with ctx.pool.connection() as conn:
        cursor = conn.execute(
            "UPDATE scheduled_emails e SET"
            " status = CASE WHEN ok.accepted THEN 'sent' ELSE 'failed' END,"
            " sent_at = CASE WHEN ok.accepted THEN %(now)s END,"
            " error = CASE WHEN ok.accepted THEN NULL"
            "  ELSE 'every delivery failed; see email_deliveries.error' END,"
            " updated_at = %(now)s"
            " FROM (SELECT scheduled_email_id AS id, bool_or(status <> 'failed') AS accepted"
            "  FROM email_deliveries WHERE scheduled_email_id IN"
            "   (SELECT id FROM scheduled_emails WHERE status = 'sending')"
            "  GROUP BY scheduled_email_id"
            "  HAVING bool_and(status NOT IN ('queued', 'sending'))) ok"
            " WHERE e.id = ok.id AND e.status = 'sending'",
            {"now": ctx.clock()},
        )
        return cursor.rowcount
