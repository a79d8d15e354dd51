"""Applying batches of SendGrid events to PostgreSQL, once each.

EmailDeliveryProcessorJob calls ``process_events`` with one webhook batch.
Every event is inserted into ``webhook_events`` with ``ON CONFLICT DO
NOTHING``, and only a newly inserted event changes a delivery, in the same
transaction, so a re-posted or re-run batch changes nothing. Events are
matched to a delivery by our custom args (``app_delivery_id``,
``app_attempt``), else by the ``X-Message-Id`` prefix of ``sg_message_id``
and the recipient address.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from app_jobs import retry_policy
from app_jobs.delivery_events import (
    KNOWN_EVENTS,
    DeliveryEvent,
    next_status,
    parse_event,
    proposed_status,
    suppression_kind,
)

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]
# on_soft_bounce(conn, delivery_id, attempt, bounced_at) -> retry time or None.
SoftBounceHook = Callable[[Connection, int, int, dt.datetime], "dt.datetime | None"]

# Events per transaction: large enough to amortise the commit, small enough
# that one failing event does not hold many row locks for long.
CHUNK_SIZE = 200
# Two batches that touch the same deliveries may still deadlock on the
# suppressions index; PostgreSQL aborts one of them, which is then re-run.
DEADLOCK_ATTEMPTS = 3


@dataclasses.dataclass
class ProcessResult:
    """Event counts of one ``process_events`` call; safe to log (no addresses)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    not_objects: int = 0
    unknown_type: int = 0
    unknown_delivery: int = 0
    other_attempt: int = 0
    soft_bounces: int = 0

    def add(self, other: ProcessResult) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclasses.dataclass(frozen=True)
class Target:
    """The delivery an event belongs to; ``attempt`` None means the current attempt."""

    delivery_id: int
    attempt: int | None


@dataclasses.dataclass(frozen=True)
class LockedDelivery:
    id: int
    attempt: int
    status: str
    needs_review: bool
    recipient_email: str


def process_events(
    conn: Connection,
    events: Sequence[Any],
    *,
    on_soft_bounce: SoftBounceHook | None = None,
) -> ProcessResult:
    """Store and apply ``events`` (decoded event objects) in transactions of CHUNK_SIZE events.

    Entries that are not JSON objects are counted and skipped. Each chunk
    commits on its own unless the caller already has a transaction open on
    ``conn``, in which case the chunks become savepoints of it.
    ``on_soft_bounce`` defaults to ``app_jobs.retry_policy.on_soft_bounce``.
    Raises psycopg errors after DEADLOCK_ATTEMPTS deadlocks, so the job retries.
    """
    parsed = [parse_event(event) for event in events if isinstance(event, Mapping)]
    result = ProcessResult(received=len(events), not_objects=len(events) - len(parsed))
    hook = on_soft_bounce or _retry_policy_hook
    for start in range(0, len(parsed), CHUNK_SIZE):
        result.add(_process_chunk(conn, parsed[start : start + CHUNK_SIZE], hook))
    return result


def _retry_policy_hook(
    conn: Connection, delivery_id: int, attempt: int, bounced_at: dt.datetime
) -> dt.datetime | None:
    return retry_policy.on_soft_bounce(conn, delivery_id, attempt, bounced_at)


def _process_chunk(
    conn: Connection, events: list[DeliveryEvent], hook: SoftBounceHook
) -> ProcessResult:
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        result = ProcessResult()
        try:
            with conn.transaction():
                targets = correlate(conn, events)
                # One lock order for every batch: by delivery, then by event key.
                order = sorted(
                    range(len(events)),
                    key=lambda i: (_delivery_id(targets[i]), events[i].dedup_key),
                )
                for index in order:
                    _store_and_apply(conn, events[index], targets[index], hook, result)
            return result
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_ATTEMPTS:
                raise
            log.warning("deadlock while applying %d events; running the chunk again", len(events))
    raise AssertionError("unreachable")


def _delivery_id(target: Target | None) -> int:
    return target.delivery_id if target is not None else 0


def correlate(conn: Connection, events: Sequence[DeliveryEvent]) -> list[Target | None]:
    """Return the delivery and attempt of each event, or None when no delivery matches.

    Custom args win. An ``app_delivery_id`` is trusted only when the event's
    address matches the delivery's, so that events of another installation
    that shares the SendGrid account cannot change our rows.
    """
    ids = sorted({e.app_delivery_id for e in events if e.app_delivery_id is not None})
    message_ids = sorted({e.x_message_id for e in events if e.x_message_id is not None})
    recipients = _recipients_by_id(conn, ids)
    sent = _attempts_by_message_id(conn, message_ids)
    targets: list[Target | None] = []
    for event in events:
        email = event.email.lower() if event.email else None
        candidates = [
            (delivery_id, attempt)
            for delivery_id, attempt, address in sent.get(event.x_message_id or "", [])
            if email is None or address == email
        ]
        delivery_id = event.app_delivery_id
        if delivery_id is not None and _same_address(email, recipients.get(delivery_id)):
            attempt = event.app_attempt or next(
                (a for d, a in candidates if d == delivery_id), None
            )
            targets.append(Target(delivery_id, attempt))
        elif len(candidates) == 1:
            targets.append(Target(*candidates[0]))
        else:
            targets.append(None)
    return targets


def _same_address(email: str | None, recipient: str | None) -> bool:
    return recipient is not None and (email is None or email == recipient)


def _recipients_by_id(conn: Connection, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT id, recipient_email FROM email_deliveries WHERE id = ANY(%s)", [ids])
        return {row[0]: str(row[1]).lower() for row in cur.fetchall()}


def _attempts_by_message_id(
    conn: Connection, message_ids: list[str]
) -> dict[str, list[tuple[int, int, str]]]:
    """Map X-Message-Id to (delivery id, attempt, lowercased address) of every send with it."""
    if not message_ids:
        return {}
    query = """
        SELECT a.sendgrid_message_id, a.delivery_id, a.attempt, d.recipient_email
          FROM email_delivery_attempts a JOIN email_deliveries d ON d.id = a.delivery_id
         WHERE a.sendgrid_message_id = ANY(%(ids)s)
        UNION
        SELECT sendgrid_message_id, id, attempt, recipient_email
          FROM email_deliveries
         WHERE sendgrid_message_id = ANY(%(ids)s)
    """
    found: dict[str, list[tuple[int, int, str]]] = {}
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(query, {"ids": message_ids})
        for message_id, delivery_id, attempt, email in cur.fetchall():
            found.setdefault(message_id, []).append((delivery_id, attempt, str(email).lower()))
    return found


def _store_and_apply(
    conn: Connection,
    event: DeliveryEvent,
    target: Target | None,
    hook: SoftBounceHook,
    result: ProcessResult,
) -> None:
    delivery = _lock_delivery(conn, target.delivery_id) if target is not None else None
    attempt = None
    if delivery is not None and target is not None:
        attempt = target.attempt or delivery.attempt
    if not _insert_event(conn, event, delivery, attempt):
        result.duplicates += 1
        return
    result.stored += 1
    if event.event not in KNOWN_EVENTS:
        result.unknown_type += 1
        return
    if delivery is None or attempt is None:
        result.unknown_delivery += 1
        return
    if attempt == delivery.attempt:
        if _apply_to_delivery(conn, event, delivery):
            hook(conn, delivery.id, attempt, _event_time(event))
            result.soft_bounces += 1
    else:
        result.other_attempt += 1
    _apply_to_attempt(conn, event, delivery.id, attempt)
    _apply_suppression(conn, event, delivery.recipient_email)


def _event_time(event: DeliveryEvent) -> dt.datetime:
    return event.occurred_at or dt.datetime.now(dt.UTC)


def _lock_delivery(conn: Connection, delivery_id: int) -> LockedDelivery | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "SELECT id, attempt, status, needs_review, recipient_email"
            "  FROM email_deliveries WHERE id = %s FOR UPDATE",
            [delivery_id],
        )
        row = cur.fetchone()
    if row is None:
        return None
    return LockedDelivery(row[0], row[1], row[2], bool(row[3]), str(row[4]))


def _insert_event(
    conn: Connection, event: DeliveryEvent, delivery: LockedDelivery | None, attempt: int | None
) -> bool:
    """Insert the event; return False when its de-duplication key is already stored."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """
            INSERT INTO webhook_events
                (dedup_key, sg_event_id, sg_message_id, event, delivery_id, attempt,
                 occurred_at, payload)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (dedup_key) DO NOTHING
            RETURNING id
            """,
            [
                event.dedup_key,
                event.sg_event_id,
                event.sg_message_id,
                event.event,
                delivery.id if delivery is not None else None,
                attempt if delivery is not None else None,
                event.occurred_at,
                Jsonb(dict(event.raw)),
            ],
        )
        return cur.fetchone() is not None


# One statement for every event type; the parameters decide which columns change.
# LEAST and GREATEST ignore NULL, so "first" and "last" times need no COALESCE.
_UPDATE_DELIVERY = """
UPDATE email_deliveries SET
    status = %(status)s,
    needs_review = CASE WHEN %(clear_review)s THEN false ELSE needs_review END,
    sent_at = CASE WHEN %(proves_send)s THEN COALESCE(sent_at, %(at)s) ELSE sent_at END,
    delivered_at = CASE WHEN %(event)s = 'delivered'
                        THEN LEAST(delivered_at, %(at)s) ELSE delivered_at END,
    opened_at = CASE WHEN %(event)s = 'open' THEN LEAST(opened_at, %(at)s) ELSE opened_at END,
    open_count = COALESCE(open_count, 0) + CASE WHEN %(event)s = 'open' THEN 1 ELSE 0 END,
    clicked_at = CASE WHEN %(event)s = 'click'
                      THEN LEAST(clicked_at, %(at)s) ELSE clicked_at END,
    click_count = COALESCE(click_count, 0) + CASE WHEN %(event)s = 'click' THEN 1 ELSE 0 END,
    spam_reported_at = CASE WHEN %(event)s = 'spamreport'
                            THEN LEAST(spam_reported_at, %(at)s) ELSE spam_reported_at END,
    unsubscribed_at = CASE WHEN %(event)s IN ('unsubscribe', 'group_unsubscribe')
                           THEN LEAST(unsubscribed_at, %(at)s) ELSE unsubscribed_at END,
    bounce_type = CASE WHEN %(record_failure)s THEN %(bounce_type)s ELSE bounce_type END,
    bounce_reason = CASE WHEN %(record_failure)s THEN %(reason)s ELSE bounce_reason END,
    last_event_at = GREATEST(last_event_at, %(at)s),
    updated_at = now()
WHERE id = %(id)s
"""


def _apply_to_delivery(conn: Connection, event: DeliveryEvent, delivery: LockedDelivery) -> bool:
    """Apply an event of the current attempt; return True when it soft-bounced the delivery."""
    current = delivery.status
    # A delivery flagged for review after a crash has an unknown outcome. Any
    # event proves that SendGrid took it, so it continues as if still sending.
    unresolved = current == "failed" and delivery.needs_review
    effective = "sending" if unresolved else current
    new = next_status(effective, proposed_status(event))
    changed = new != effective
    conn.execute(
        _UPDATE_DELIVERY,
        {
            "id": delivery.id,
            "status": new if changed else current,
            "clear_review": unresolved and changed,
            "proves_send": effective in ("queued", "sending"),
            "event": event.event,
            "at": _event_time(event),
            "record_failure": changed and new in ("blocked", "bounced", "dropped"),
            "bounce_type": event.bounce_type,
            "reason": event.reason,
        },
    )
    return changed and new == "blocked"


def _apply_to_attempt(
    conn: Connection, event: DeliveryEvent, delivery_id: int, attempt: int
) -> None:
    """Move the status of the attempt's history row by the same precedence rules."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "SELECT status FROM email_delivery_attempts"
            " WHERE delivery_id = %s AND attempt = %s FOR UPDATE",
            [delivery_id, attempt],
        )
        row = cur.fetchone()
    if row is None:
        return
    new = next_status(str(row[0]), proposed_status(event))
    if new != row[0]:
        conn.execute(
            "UPDATE email_delivery_attempts SET status = %s"
            " WHERE delivery_id = %s AND attempt = %s",
            [new, delivery_id, attempt],
        )


def _apply_suppression(conn: Connection, event: DeliveryEvent, recipient_email: str) -> None:
    # Suppressions belong to the address, so events of an older attempt add them too.
    email = event.email or recipient_email
    at = _event_time(event)
    if event.event == "group_resubscribe":
        if event.asm_group_id is not None:
            _remove_group_suppression(conn, email, event.asm_group_id, at)
        return
    kind = suppression_kind(event)
    if kind is None:
        return
    group = event.asm_group_id if kind == "group_unsubscribe" else None
    if kind == "group_unsubscribe" and (
        group is None or _resubscribed_after(conn, email, group, at)
    ):
        return
    _add_suppression(conn, email, kind, group, at)


def _add_suppression(
    conn: Connection, email: str, kind: str, group: int | None, at: dt.datetime
) -> None:
    # created_at is the event time, so that a group_resubscribe can tell whether
    # it came after the unsubscribe it would undo.
    conn.execute(
        "INSERT INTO suppressions (email, kind, asm_group_id, created_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        [email, kind, group, at],
    )
    conn.execute(
        "UPDATE suppressions SET created_at = GREATEST(created_at, %s)"
        " WHERE lower(email) = lower(%s) AND kind = %s AND COALESCE(asm_group_id, 0) = %s",
        [at, email, kind, group or 0],
    )


def _remove_group_suppression(conn: Connection, email: str, group: int, at: dt.datetime) -> None:
    conn.execute(
        "DELETE FROM suppressions WHERE lower(email) = lower(%s) AND kind = 'group_unsubscribe'"
        " AND asm_group_id = %s AND created_at <= %s",
        [email, group, at],
    )


def _resubscribed_after(conn: Connection, email: str, group: int, at: dt.datetime) -> bool:
    """True when a stored group_resubscribe of this address and group is newer than ``at``."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "SELECT 1 FROM webhook_events WHERE event = 'group_resubscribe'"
            " AND lower(payload->>'email') = lower(%s) AND payload->>'asm_group_id' = %s"
            " AND occurred_at > %s LIMIT 1",
            [email, str(group), at],
        )
        return cur.fetchone() is not None
