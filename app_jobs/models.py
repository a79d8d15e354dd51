"""Rows of the email app and the plain queries that read or create them.

Functions take an open psycopg connection and never commit: the caller owns
the transaction. The state changes of a delivery live in sender.py,
retry_policy.py and scanner.py, beside the reasoning for each.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import class_row

# Delivery states, in the order a delivery normally moves through them.
QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
BLOCKED = "blocked"
FAILED = "failed"

# The original send is attempt 1; soft bounces are retried up to attempt 4.
MAX_ATTEMPTS = 4


@dataclasses.dataclass(frozen=True)
class Event:
    id: int
    title: str
    starts_at: dt.datetime | None
    venue: str | None


@dataclasses.dataclass(frozen=True)
class Recipient:
    id: int
    event_id: int
    name: str
    email: str
    company: str | None


@dataclasses.dataclass(frozen=True)
class ScheduledEmail:
    id: int
    event_id: int
    name: str | None
    subject_template: str
    body_template: str
    scheduled_for: dt.datetime
    status: str


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One recipient of one scheduled email, with the content rendered for them."""

    id: int
    scheduled_email_id: int
    recipient_email: str
    recipient_name: str | None
    subject: str
    body_html: str
    body_text: str
    attempt: int
    status: str
    send_errors: int
    sendgrid_message_id: str | None
    next_retry_at: dt.datetime | None
    retry_jid: str | None


DELIVERY_COLUMNS = (
    "id, scheduled_email_id, recipient_email, recipient_name, coalesce(subject, '') AS subject,"
    " coalesce(body_html, '') AS body_html, coalesce(body_text, '') AS body_text, attempt,"
    " status, send_errors, sendgrid_message_id, next_retry_at, retry_jid"
)
EMAIL_COLUMNS = "id, event_id, name, subject_template, body_template, scheduled_for, status"


def load_event(conn: psycopg.Connection[Any], event_id: int) -> Event | None:
    with conn.cursor(row_factory=class_row(Event)) as cur:
        cur.execute("SELECT id, title, starts_at, venue FROM events WHERE id = %s", (event_id,))
        return cur.fetchone()


def load_recipients(conn: psycopg.Connection[Any], event_id: int) -> list[Recipient]:
    with conn.cursor(row_factory=class_row(Recipient)) as cur:
        cur.execute(
            "SELECT id, event_id, name, email, company FROM recipients"
            " WHERE event_id = %s ORDER BY id",
            (event_id,),
        )
        return cur.fetchall()


def load_delivery(conn: psycopg.Connection[Any], delivery_id: int) -> Delivery | None:
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        cur.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM email_deliveries WHERE id = %s", (delivery_id,)
        )
        return cur.fetchone()


def load_email(conn: psycopg.Connection[Any], email_id: int) -> ScheduledEmail | None:
    with conn.cursor(row_factory=class_row(ScheduledEmail)) as cur:
        cur.execute(f"SELECT {EMAIL_COLUMNS} FROM scheduled_emails WHERE id = %s", (email_id,))
        return cur.fetchone()


def suppression_kinds(conn: psycopg.Connection[Any], email: str) -> list[str]:
    """Return the kinds of suppression rows for ``email`` (case-insensitive); [] if none.

    Any row counts, group unsubscribes included: the app sends one kind of
    mail, so a vendor who left any group is not mailed again by a retry.
    """
    rows = conn.execute(
        "SELECT DISTINCT kind FROM suppressions WHERE lower(email) = lower(%s) ORDER BY kind",
        (email,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def create_event(
    conn: psycopg.Connection[Any],
    title: str,
    starts_at: dt.datetime | None = None,
    venue: str | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO events (title, starts_at, venue) VALUES (%s, %s, %s) RETURNING id",
        (title, starts_at, venue),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_recipient(
    conn: psycopg.Connection[Any],
    event_id: int,
    name: str,
    email: str,
    company: str | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO recipients (event_id, name, email, company) VALUES (%s, %s, %s, %s)"
        " RETURNING id",
        (event_id, name, email, company),
    ).fetchone()
    assert row is not None
    return int(row[0])


def schedule_email(
    conn: psycopg.Connection[Any],
    event_id: int,
    subject_template: str,
    body_template: str,
    scheduled_for: dt.datetime,
    name: str | None = None,
    trigger_type: str | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO scheduled_emails"
        " (event_id, name, subject_template, body_template, trigger_type, scheduled_for)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (event_id, name, subject_template, body_template, trigger_type, scheduled_for),
    ).fetchone()
    assert row is not None
    return int(row[0])
