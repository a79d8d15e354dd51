"""The data side of ``bin/demo``: seeding, sample webhook events, counting sends, the checks.

Every event the demo seeds has a title that starts with ``DEMO_PREFIX``. That
marker lets the demo reject a database that contains emails it did not
create, because its console or file backend would mark them sent without
sending them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app_jobs import models
from app_jobs.cli import SEED_VENDORS, SEED_WELCOME
from app_jobs.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from app_jobs.webhooks import WEBHOOK_PATH

DEMO_PREFIX = "[demo] "
EVENT_TITLE = DEMO_PREFIX + "Spring Makers Market"
# Worker queues that must be empty before the demo starts its worker.
APP_QUEUES = ("email_delivery", "email_webhooks", "default")
# Deliveries in these states are still waiting for a send.
UNSENT = ("queued", "sending", "blocked")
# The line ConsoleMailer prints for each email it "sends".
CONSOLE_LINE = re.compile(r"^\[email\] delivery=(\d+) attempt=(\d+) ")


@dataclasses.dataclass(frozen=True)
class Seed:
    """The rows one demo run created: its event, the vendors and the due and future emails."""

    event_id: int
    vendors: int
    due_email_ids: tuple[int, ...]
    future_email_ids: tuple[int, ...]


def seed_demo(conn: psycopg.Connection[Any], now: dt.datetime) -> Seed:
    """Insert a new demo event with three vendors, two emails due now and two later."""
    starts_at = (now + dt.timedelta(days=30)).replace(hour=9, minute=0, second=0, microsecond=0)
    event_id = models.create_event(conn, EVENT_TITLE, starts_at, "Harbour Hall, Pier 4")
    for name, email, company in SEED_VENDORS:
        models.add_recipient(conn, event_id, name, email, company)

    due = [
        ("welcome", now - dt.timedelta(minutes=1), "Welcome to {{event_title}}", SEED_WELCOME),
        (
            "stand_details",
            now - dt.timedelta(seconds=10),
            "Your stand at {{event_title}}",
            "Hello {{vendor_first_name}},\n\nStand numbers are out. Setup opens at {{event_time}}"
            " on {{event_date}} at {{event_venue}}.",
        ),
    ]
    future = [
        (
            "one_week",
            starts_at - dt.timedelta(days=7),
            "{{event_title}}: one week to go",
            "Hello {{vendor_name}},\n\nSetup opens at {{event_time}} on {{event_date}}.",
        ),
        (
            "one_day",
            starts_at - dt.timedelta(days=1),
            "See you tomorrow at {{event_venue}}",
            "Hello {{vendor_name}},\n\nDoors open at {{event_time}}.",
        ),
    ]
    due_ids = [_schedule(conn, event_id, entry, "on_signup") for entry in due]
    future_ids = [_schedule(conn, event_id, entry, "before_event") for entry in future]
    return Seed(event_id, len(SEED_VENDORS), tuple(due_ids), tuple(future_ids))


def _schedule(
    conn: psycopg.Connection[Any],
    event_id: int,
    entry: tuple[str, dt.datetime, str, str],
    trigger: str,
) -> int:
    name, scheduled_for, subject, body = entry
    return models.schedule_email(
        conn, event_id, subject, body, scheduled_for, name=name, trigger_type=trigger
    )


def foreign_pending(conn: psycopg.Connection[Any]) -> int:
    """Count emails and deliveries still to be sent that belong to events the demo did not seed."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM scheduled_emails s JOIN events e ON e.id = s.event_id"
        "   WHERE s.status IN ('scheduled', 'sending') AND NOT starts_with(e.title, %(prefix)s))"
        " + (SELECT count(*) FROM email_deliveries d"
        "   JOIN scheduled_emails s ON s.id = d.scheduled_email_id"
        "   JOIN events e ON e.id = s.event_id"
        "   WHERE d.status = ANY(%(unsent)s) AND NOT starts_with(e.title, %(prefix)s))",
        {"prefix": DEMO_PREFIX, "unsent": list(UNSENT)},
    ).fetchone()
    return int(row[0]) if row else 0


def email_statuses(conn: psycopg.Connection[Any], email_ids: tuple[int, ...]) -> dict[int, str]:
    rows = conn.execute(
        "SELECT id, status FROM scheduled_emails WHERE id = ANY(%s)", (list(email_ids),)
    ).fetchall()
    return {int(row[0]): str(row[1]) for row in rows}


@dataclasses.dataclass(frozen=True)
class DemoDelivery:
    id: int
    scheduled_email_id: int
    recipient_email: str
    attempt: int
    status: str
    send_errors: int
    message_id: str | None


def deliveries(conn: psycopg.Connection[Any], event_id: int) -> list[DemoDelivery]:
    """Return every delivery of the event's scheduled emails, by id."""
    rows = conn.execute(
        "SELECT d.id, d.scheduled_email_id, d.recipient_email, d.attempt, d.status,"
        " d.send_errors, d.sendgrid_message_id FROM email_deliveries d"
        " JOIN scheduled_emails s ON s.id = d.scheduled_email_id"
        " WHERE s.event_id = %s ORDER BY d.id",
        (event_id,),
    ).fetchall()
    return [DemoDelivery(*row) for row in rows]


# -- signed sample webhook events --------------------------------------------


class WebhookSigner:
    """A P-256 key pair made for one demo run; the receiver is given its public half."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_b64 = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        """Return SendGrid's two signature headers: ECDSA SHA-256 over timestamp + body."""
        stamp = str(timestamp)
        signature = self.private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: stamp,
        }


def sample_events(
    sent: list[DemoDelivery], now: int
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Build processed and delivered events for each delivery, and an open for every other one.

    Returns the events and the status each delivery must reach once they are applied.
    """
    events: list[dict[str, Any]] = []
    expected: dict[int, str] = {}
    for index, delivery in enumerate(sent):
        names = ["processed", "delivered"] + (["open"] if index % 2 == 0 else [])
        for offset, name in enumerate(names):
            events.append(_event(delivery, name, now - len(names) + offset))
        expected[delivery.id] = "opened" if "open" in names else "delivered"
    return events, expected


def _event(delivery: DemoDelivery, name: str, timestamp: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": name,
        "email": delivery.recipient_email,
        "timestamp": timestamp,
        "sg_event_id": secrets.token_urlsafe(16),
        # Custom args arrive as strings, as the mailer sent them.
        "app_delivery_id": str(delivery.id),
        "app_attempt": str(delivery.attempt),
        "app_scheduled_email_id": str(delivery.scheduled_email_id),
    }
    if delivery.message_id:
        event["sg_message_id"] = f"{delivery.message_id}.demo0001.1.0"
    return event


def post_events(
    base_url: str, signer: WebhookSigner, events: list[dict[str, Any]], timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """POST the events, signed, to the receiver; return the HTTP status and the JSON reply."""
    body = json.dumps(events).encode()
    headers = {"Content-Type": "application/json", **signer.headers(body, int(time.time()))}
    request = urllib.request.Request(base_url + WEBHOOK_PATH, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def events_applied(conn: psycopg.Connection[Any], expected: dict[int, str]) -> bool:
    """Return True once every delivery in ``expected`` has reached its status."""
    rows = conn.execute(
        "SELECT id, status FROM email_deliveries WHERE id = ANY(%s)", (list(expected),)
    ).fetchall()
    return {int(row[0]): str(row[1]) for row in rows} == expected


def applied_event_count(conn: psycopg.Connection[Any], delivery_ids: list[int]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM webhook_events WHERE delivery_id = ANY(%s)", (delivery_ids,)
    ).fetchone()
    return int(row[0]) if row else 0


# -- counting sends and checking the run -------------------------------------


def count_sends(backend: str, evidence: Path, found: list[DemoDelivery]) -> Counter[int]:
    """Count the sends of each delivery from what the backend left behind.

    console: the worker's log lines; file: the JSON files of the email folder;
    sendgrid: a delivery accepted on its first request (no send errors) counts once.
    """
    sends: Counter[int] = Counter()
    if backend == "console":
        for line in evidence.read_text(errors="replace").splitlines():
            match = CONSOLE_LINE.match(line)
            if match:
                sends[int(match.group(1))] += 1
    elif backend == "file":
        for path in evidence.glob("delivery-*-attempt-*.json"):
            sends[int(path.name.split("-")[1])] += 1
    else:
        for delivery in found:
            if delivery.status not in UNSENT and delivery.status != "failed":
                sends[delivery.id] += 1 + delivery.send_errors
    return sends


def check_run(
    seed: Seed,
    statuses: dict[int, str],
    found: list[DemoDelivery],
    sends: Counter[int],
    expected: dict[int, str],
) -> list[str]:
    """Return what went wrong in a ``--once`` run; an empty list means every check passed."""
    problems = []
    for email_id in seed.due_email_ids:
        if statuses.get(email_id) != "sent":
            problems.append(f"due email {email_id} is {statuses.get(email_id)!r}, not 'sent'")
    for email_id in seed.future_email_ids:
        if statuses.get(email_id) != "scheduled":
            problems.append(f"future email {email_id} is {statuses.get(email_id)!r}")
    per_email = Counter(delivery.scheduled_email_id for delivery in found)
    for email_id in seed.due_email_ids:
        if per_email[email_id] != seed.vendors:
            problems.append(
                f"due email {email_id} has {per_email[email_id]} deliveries, not {seed.vendors}"
            )
    for delivery in found:
        if sends[delivery.id] != 1:
            problems.append(f"delivery {delivery.id} was sent {sends[delivery.id]} times, not once")
        if delivery.status != expected.get(delivery.id):
            problems.append(
                f"delivery {delivery.id} is {delivery.status!r} after the webhook events, "
                f"not {expected.get(delivery.id)!r}"
            )
    return problems
