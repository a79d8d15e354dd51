"""Applying SendGrid events to deliveries on a real PostgreSQL: types, order, attempts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from app_jobs import delivery_store
from app_jobs.delivery_store import ProcessResult, process_events
from tests.fixtures.sendgrid_events import (
    Delivery,
    create_delivery,
    event,
    fetch_all,
    fetch_one,
)

EMAIL = "vendor@example.com"
T0 = 1_714_986_100  # 2024-05-06T09:01:40Z

Connection = psycopg.Connection[Any]


class SoftBounceRecorder:
    """Stands in for the retry policy and records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, dt.datetime]] = []

    def __call__(
        self, conn: Connection, delivery_id: int, attempt: int, bounced_at: dt.datetime
    ) -> dt.datetime | None:
        self.calls.append((delivery_id, attempt, bounced_at))
        return bounced_at + dt.timedelta(hours=1)


@pytest.fixture
def recorder() -> SoftBounceRecorder:
    return SoftBounceRecorder()


@pytest.fixture
def delivery(database_url: str) -> Delivery:
    return create_delivery(database_url, EMAIL, "msg1")


def apply(conn: Connection, events: list[Any], recorder: SoftBounceRecorder) -> ProcessResult:
    return process_events(conn, events, on_soft_bounce=recorder)


def ours(
    delivery: Delivery, name: str, offset: int, app_attempt: int = 1, **fields: Any
) -> dict[str, Any]:
    """An event of ``delivery`` carrying the custom args the sender puts on every send."""
    return event(
        name,
        T0 + offset,
        email=EMAIL,
        sg_event_id=f"{name}-{offset}-{app_attempt}",
        sg_message_id=f"msg{app_attempt}.filter0001.1.0",
        app_delivery_id=str(delivery.id),
        app_attempt=str(app_attempt),
        **fields,
    )


def row(url: str, delivery: Delivery) -> dict[str, Any]:
    return fetch_one(url, "SELECT * FROM email_deliveries WHERE id = %s", [delivery.id])


def suppressions(url: str) -> list[tuple[str, str, int | None]]:
    rows = fetch_all(url, "SELECT email, kind, asm_group_id FROM suppressions ORDER BY id")
    return [(r["email"], r["kind"], r["asm_group_id"]) for r in rows]


def at(offset: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(T0 + offset, tz=dt.UTC)


@pytest.mark.parametrize(
    ("initial", "name", "fields", "expected"),
    [
        ("sending", "processed", {}, "sent"),
        ("sent", "deferred", {"attempt": "2", "response": "421 try later"}, "deferred"),
        ("deferred", "delivered", {"response": "250 OK", "tls": 1}, "delivered"),
        ("sent", "open", {"useragent": "Mail", "sg_machine_open": False}, "opened"),
        ("opened", "click", {"url": "https://example.com/a"}, "clicked"),
        (
            "sent",
            "bounce",
            {"type": "bounce", "status": "5.1.1", "reason": "no such user"},
            "bounced",
        ),
        ("sent", "bounce", {"type": "blocked", "reason": "rate limited"}, "blocked"),
        ("deferred", "bounce", {"type": "expired", "reason": "gave up after 72 h"}, "blocked"),
        ("sent", "dropped", {"reason": "Spam Content"}, "dropped"),
        ("delivered", "spamreport", {}, "delivered"),
        ("delivered", "unsubscribe", {}, "delivered"),
        ("clicked", "group_unsubscribe", {"asm_group_id": 42}, "clicked"),
        ("clicked", "group_resubscribe", {"asm_group_id": 42}, "clicked"),
        ("sent", "account_status_change", {"type": "compliance_suspend"}, "sent"),
    ],
)
def test_event_type_sets_status(
    database_url: str,
    db_conn: Connection,
    recorder: SoftBounceRecorder,
    initial: str,
    name: str,
    fields: dict[str, Any],
    expected: str,
) -> None:
    delivery = create_delivery(database_url, EMAIL, "msg1", status=initial)

    result = apply(db_conn, [ours(delivery, name, 5, **fields)], recorder)

    assert result.stored == 1
    assert row(database_url, delivery)["status"] == expected
    stored = fetch_one(database_url, "SELECT * FROM webhook_events")
    assert stored["event"] == name
    assert stored["delivery_id"] == delivery.id
    assert stored["attempt"] == 1
    assert stored["occurred_at"] == at(5)
    assert stored["payload"]["app_delivery_id"] == str(delivery.id)


def test_processed_proves_send_of_sending_row(
    database_url: str, db_conn: Connection, recorder: SoftBounceRecorder
) -> None:
    delivery = create_delivery(database_url, EMAIL, None, status="sending")

    apply(db_conn, [ours(delivery, "processed", 1)], recorder)

    updated = row(database_url, delivery)
    assert updated["status"] == "sent"
    assert updated["sent_at"] == at(1)
    assert updated["last_event_at"] == at(1)


def test_engagement_times_and_counts(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    events = [
        ours(delivery, "delivered", 2),
        ours(delivery, "open", 9),
        ours(delivery, "open", 5),
        ours(delivery, "click", 12, url="https://example.com/b"),
        ours(delivery, "click", 10, url="https://example.com/a"),
        ours(delivery, "open", 5),
    ]

    result = apply(db_conn, events, recorder)

    updated = row(database_url, delivery)
    assert result.duplicates == 1
    assert updated["status"] == "clicked"
    assert updated["delivered_at"] == at(2)
    assert updated["opened_at"] == at(5)
    assert updated["open_count"] == 2
    assert updated["clicked_at"] == at(10)
    assert updated["click_count"] == 2
    assert updated["last_event_at"] == at(12)


def test_hard_bounce_records_reason_and_suppression(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    bounce = ours(delivery, "bounce", 3, type="bounce", status="5.1.1", reason="550 no such user")

    apply(db_conn, [bounce], recorder)

    updated = row(database_url, delivery)
    assert updated["status"] == "bounced"
    assert updated["bounce_type"] == "bounce"
    assert updated["bounce_reason"] == "550 no such user"
    assert suppressions(database_url) == [(EMAIL, "bounce", None)]
    assert recorder.calls == []


def test_invalid_address_block_is_hard(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    bounce = ours(delivery, "bounce", 3, type="blocked", bounce_classification="Invalid Address")

    apply(db_conn, [bounce], recorder)

    assert row(database_url, delivery)["status"] == "bounced"
    assert suppressions(database_url) == [(EMAIL, "bounce", None)]
    assert recorder.calls == []


def test_soft_bounce_calls_retry_policy_once(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    blocked = ours(delivery, "bounce", 3, type="blocked", reason="421 rate limited")
    second = ours(delivery, "bounce", 4, type="expired")

    apply(db_conn, [blocked], recorder)
    apply(db_conn, [blocked], recorder)
    apply(db_conn, [second, blocked], recorder)

    updated = row(database_url, delivery)
    assert updated["status"] == "blocked"
    assert updated["bounce_type"] == "blocked"
    assert updated["bounce_reason"] == "421 rate limited"
    assert recorder.calls == [(delivery.id, 1, at(3))]
    assert suppressions(database_url) == []


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("Bounced Address", "bounce"),
        ("Unsubscribed Address", "unsubscribe"),
        ("Spam Reporting Address", "spam"),
        ("Invalid", "invalid"),
    ],
)
def test_dropped_mirrors_suppression(
    database_url: str,
    db_conn: Connection,
    delivery: Delivery,
    recorder: SoftBounceRecorder,
    reason: str,
    kind: str,
) -> None:
    apply(db_conn, [ours(delivery, "dropped", 1, reason=reason, status="5.0.0")], recorder)

    updated = row(database_url, delivery)
    assert updated["status"] == "dropped"
    assert updated["bounce_reason"] == reason
    assert suppressions(database_url) == [(EMAIL, kind, None)]


def test_spam_and_unsubscribe_flags(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    events = [ours(delivery, "spamreport", 20), ours(delivery, "unsubscribe", 30)]

    apply(db_conn, events, recorder)

    updated = row(database_url, delivery)
    assert updated["status"] == "sent"
    assert updated["spam_reported_at"] == at(20)
    assert updated["unsubscribed_at"] == at(30)
    assert sorted(suppressions(database_url)) == [
        (EMAIL, "spam", None),
        (EMAIL, "unsubscribe", None),
    ]


def test_group_resubscribe_removes_suppression(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    apply(db_conn, [ours(delivery, "group_unsubscribe", 10, asm_group_id=42)], recorder)
    assert suppressions(database_url) == [(EMAIL, "group_unsubscribe", 42)]

    apply(db_conn, [ours(delivery, "group_resubscribe", 20, asm_group_id="42")], recorder)
    assert suppressions(database_url) == []

    apply(db_conn, [ours(delivery, "group_unsubscribe", 30, asm_group_id=42)], recorder)
    assert suppressions(database_url) == [(EMAIL, "group_unsubscribe", 42)]


def test_group_events_out_of_order(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    """A resubscribe that happened later but arrives first still wins."""
    resubscribe = ours(delivery, "group_resubscribe", 20, asm_group_id=42)
    unsubscribe = ours(delivery, "group_unsubscribe", 10, asm_group_id=42)
    other_group = ours(delivery, "group_unsubscribe", 11, asm_group_id=7)

    apply(db_conn, [resubscribe], recorder)
    apply(db_conn, [unsubscribe, other_group], recorder)

    assert suppressions(database_url) == [(EMAIL, "group_unsubscribe", 7)]


def test_group_resubscribe_older_than_unsubscribe(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    unsubscribe = ours(delivery, "group_unsubscribe", 30, asm_group_id=42)
    resubscribe = ours(delivery, "group_resubscribe", 20, asm_group_id=42)

    apply(db_conn, [unsubscribe], recorder)
    apply(db_conn, [resubscribe], recorder)

    assert suppressions(database_url) == [(EMAIL, "group_unsubscribe", 42)]


@pytest.mark.parametrize(
    ("first", "then", "expected"),
    [
        (("bounce", {"type": "bounce"}), ("delivered", {}), "bounced"),
        (("delivered", {}), ("bounce", {"type": "bounce"}), "bounced"),
        (("open", {}), ("delivered", {}), "opened"),
        (("click", {}), ("open", {}), "clicked"),
        (("delivered", {}), ("processed", {}), "delivered"),
        (("delivered", {}), ("deferred", {}), "delivered"),
        (("delivered", {}), ("bounce", {"type": "blocked"}), "delivered"),
        (("open", {}), ("dropped", {"reason": "Bounced Address"}), "opened"),
        (("bounce", {"type": "blocked"}), ("open", {}), "blocked"),
        (("bounce", {"type": "blocked"}), ("bounce", {"type": "bounce"}), "bounced"),
        (("bounce", {"type": "bounce"}), ("click", {}), "bounced"),
        (("dropped", {"reason": "Spam Content"}), ("delivered", {}), "dropped"),
        (("deferred", {}), ("bounce", {"type": "blocked"}), "blocked"),
    ],
)
def test_out_of_order_precedence(
    database_url: str,
    db_conn: Connection,
    delivery: Delivery,
    recorder: SoftBounceRecorder,
    first: tuple[str, dict[str, Any]],
    then: tuple[str, dict[str, Any]],
    expected: str,
) -> None:
    apply(db_conn, [ours(delivery, first[0], 20, **first[1])], recorder)
    apply(db_conn, [ours(delivery, then[0], 10, **then[1])], recorder)

    assert row(database_url, delivery)["status"] == expected


def test_failed_stays_failed(
    database_url: str, db_conn: Connection, recorder: SoftBounceRecorder
) -> None:
    delivery = create_delivery(database_url, EMAIL, "msg1", status="failed")

    apply(db_conn, [ours(delivery, "delivered", 1), ours(delivery, "open", 2)], recorder)

    assert row(database_url, delivery)["status"] == "failed"


def test_event_resolves_delivery_flagged_for_review(
    database_url: str, db_conn: Connection, recorder: SoftBounceRecorder
) -> None:
    """A delivery marked failed after a crash moves on once an event proves the send."""
    delivery = create_delivery(database_url, EMAIL, None, status="failed", needs_review=True)

    apply(db_conn, [ours(delivery, "delivered", 4)], recorder)

    updated = row(database_url, delivery)
    assert updated["status"] == "delivered"
    assert updated["needs_review"] is False
    assert updated["sent_at"] == at(4)
    assert updated["delivered_at"] == at(4)


@pytest.fixture
def retried(database_url: str) -> Delivery:
    """A delivery on attempt 2 (message msg2, sent) whose attempt 1 (msg1) soft-bounced."""
    return create_delivery(database_url, EMAIL, "msg2", attempt=2, older_message_ids=("msg1",))


def attempt_statuses(url: str, delivery: Delivery) -> dict[int, str]:
    rows = fetch_all(
        url,
        "SELECT attempt, status FROM email_delivery_attempts WHERE delivery_id = %s",
        [delivery.id],
    )
    return {r["attempt"]: r["status"] for r in rows}


def test_older_attempt_updates_only_its_row(
    database_url: str, db_conn: Connection, retried: Delivery, recorder: SoftBounceRecorder
) -> None:
    events = [
        ours(retried, "bounce", 50, app_attempt=1, type="bounce", reason="550 gone"),
        ours(retried, "open", 51, app_attempt=1),
    ]

    result = apply(db_conn, events, recorder)

    updated = row(database_url, retried)
    assert result.other_attempt == 2
    assert updated["status"] == "sent"
    assert updated["attempt"] == 2
    assert updated["open_count"] == 0
    assert updated["bounce_reason"] is None
    assert attempt_statuses(database_url, retried) == {1: "bounced", 2: "sent"}
    # The address bounced for good, whichever attempt reported it.
    assert suppressions(database_url) == [(EMAIL, "bounce", None)]
    stored = fetch_all(database_url, "SELECT delivery_id, attempt FROM webhook_events")
    assert stored == [{"delivery_id": retried.id, "attempt": 1}] * 2


def test_older_attempt_soft_bounce_not_retried(
    database_url: str, db_conn: Connection, retried: Delivery, recorder: SoftBounceRecorder
) -> None:
    apply(db_conn, [ours(retried, "bounce", 50, app_attempt=1, type="blocked")], recorder)

    assert row(database_url, retried)["status"] == "sent"
    assert recorder.calls == []


def test_current_attempt_updates_delivery_and_row(
    database_url: str, db_conn: Connection, retried: Delivery, recorder: SoftBounceRecorder
) -> None:
    apply(db_conn, [ours(retried, "delivered", 60, app_attempt=2)], recorder)

    assert row(database_url, retried)["status"] == "delivered"
    assert attempt_statuses(database_url, retried) == {1: "blocked", 2: "delivered"}


def test_correlates_by_message_id_prefix(
    database_url: str, db_conn: Connection, retried: Delivery, recorder: SoftBounceRecorder
) -> None:
    """Without custom args, the X-Message-Id prefix and the address pick delivery and attempt."""
    old = event("delivered", T0 + 5, email="Vendor@Example.COM", sg_message_id="msg1.recvd-1.0")
    new = event("open", T0 + 6, email=EMAIL.upper(), sg_message_id="msg2.filter0002.5.0")

    result = apply(db_conn, [old, new], recorder)

    assert result.unknown_delivery == 0
    assert result.other_attempt == 1
    assert row(database_url, retried)["status"] == "opened"
    stored = fetch_all(database_url, "SELECT attempt FROM webhook_events ORDER BY attempt")
    assert [r["attempt"] for r in stored] == [1, 2]


def test_message_id_with_other_address_is_unknown(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    stray = event("delivered", T0, email="someone@example.net", sg_message_id="msg1.recvd-1.0")

    result = apply(db_conn, [stray], recorder)

    assert result.unknown_delivery == 1
    assert row(database_url, delivery)["status"] == "sent"


def test_unknown_delivery_stored_and_ignored(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    missing = event("bounce", T0, email=EMAIL, app_delivery_id="999999", type="bounce")
    foreign = event("spamreport", T0, email="other@example.com", app_delivery_id=str(delivery.id))
    bare = event("delivered", T0, email=EMAIL)

    result = apply(db_conn, [missing, foreign, bare], recorder)

    assert result.stored == 3
    assert result.unknown_delivery == 3
    assert row(database_url, delivery)["status"] == "sent"
    assert suppressions(database_url) == []
    stored = fetch_all(database_url, "SELECT delivery_id, attempt FROM webhook_events")
    assert stored == [{"delivery_id": None, "attempt": None}] * 3


def test_unknown_event_type_stored(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    result = apply(db_conn, [ours(delivery, "machine_opened_v2", 1)], recorder)

    assert result.stored == 1
    assert result.unknown_type == 1
    assert row(database_url, delivery)["last_event_at"] is None


def test_non_objects_skipped(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    result = apply(db_conn, ["text", 5, None, ours(delivery, "delivered", 1)], recorder)

    assert result.not_objects == 3
    assert result.stored == 1


def test_odd_values_stored(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    """NUL characters, a missing timestamp and nested fields do not stop a batch."""
    odd = ours(delivery, "delivered", 1, response="250\x00 OK", pool={"name": "p", "id": 3})
    del odd["timestamp"]

    apply(db_conn, [odd], recorder)

    updated = row(database_url, delivery)
    assert updated["status"] == "delivered"
    assert updated["delivered_at"] is not None
    stored = fetch_one(database_url, "SELECT occurred_at, payload FROM webhook_events")
    assert stored["occurred_at"] is None
    assert stored["payload"]["response"] == "250 OK"


def test_rerun_changes_nothing(
    database_url: str, db_conn: Connection, delivery: Delivery, recorder: SoftBounceRecorder
) -> None:
    batch = [
        ours(delivery, "processed", 0),
        ours(delivery, "delivered", 2),
        ours(delivery, "open", 5),
        ours(delivery, "click", 10),
        event(
            "group_unsubscribe", T0 + 100, email=EMAIL, sg_message_id="msg1.f.1.0", asm_group_id=9
        ),
    ]
    apply(db_conn, batch, recorder)
    before = row(database_url, delivery)

    result = apply(db_conn, batch, recorder)

    assert result.duplicates == 5
    assert result.stored == 0
    assert row(database_url, delivery) == before
    assert len(fetch_all(database_url, "SELECT id FROM webhook_events")) == 5
    assert suppressions(database_url) == [(EMAIL, "group_unsubscribe", 9)]


def test_batches_split_into_chunks(
    database_url: str,
    db_conn: Connection,
    delivery: Delivery,
    recorder: SoftBounceRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery_store, "CHUNK_SIZE", 3)
    opens = [ours(delivery, "open", offset) for offset in range(10)]

    result = apply(db_conn, opens + opens[:4], recorder)

    assert result.stored == 10
    assert result.duplicates == 4
    assert row(database_url, delivery)["open_count"] == 10


def test_deadlock_reruns_chunk(
    database_url: str,
    db_conn: Connection,
    delivery: Delivery,
    recorder: SoftBounceRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = delivery_store._store_and_apply
    failures = iter([True])

    def deadlock_once(*args: Any) -> None:
        real(*args)
        if next(failures, False):
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(delivery_store, "_store_and_apply", deadlock_once)

    result = apply(db_conn, [ours(delivery, "open", 1), ours(delivery, "click", 2)], recorder)

    assert result.stored == 2
    assert result.duplicates == 0
    updated = row(database_url, delivery)
    assert updated["open_count"] == 1
    assert updated["click_count"] == 1
