"""Delivery event parsing, de-duplication keys and the status precedence rules."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from app_jobs.delivery_events import (
    PROGRESS,
    next_status,
    parse_event,
    proposed_status,
    suppression_kind,
)


def test_parse_event_known_fields_and_extra() -> None:
    event = parse_event(
        {
            "email": "User@Example.com",
            "timestamp": 1714986102,
            "event": "delivered",
            "sg_event_id": "E2",
            "sg_message_id": "b26msg.filter0001.1.0",
            "smtp-id": "<b26msg@example.com>",
            "category": ["digest", "may"],
            "tls": 1,
            "response": "250 OK",
            "app_delivery_id": "17",
            "app_attempt": "2",
            "app_scheduled_email_id": "5",
            "marketing_campaign_id": 9,
        }
    )

    assert event.event == "delivered"
    assert event.email == "User@Example.com"
    assert event.occurred_at == dt.datetime(2024, 5, 6, 9, 1, 42, tzinfo=dt.UTC)
    assert event.x_message_id == "b26msg"
    assert event.smtp_id == "<b26msg@example.com>"
    assert event.categories == ("digest", "may")
    assert event.tls == 1
    assert event.response == "250 OK"
    assert event.app_delivery_id == 17
    assert event.app_attempt == 2
    assert event.extra == {"app_scheduled_email_id": "5", "marketing_campaign_id": 9}


def test_parse_event_numbers_as_strings() -> None:
    event = parse_event(
        {
            "event": "deferred",
            "timestamp": "1714986102",
            "attempt": "3",
            "tls": "0",
            "cert_err": "1",
            "asm_group_id": "42",
            "category": "digest",
        }
    )

    assert event.timestamp == 1714986102
    assert event.delivery_attempt == 3
    assert event.tls == 0
    assert event.cert_err == 1
    assert event.asm_group_id == 42
    assert event.categories == ("digest",)


@pytest.mark.parametrize(
    "value",
    [None, True, "soon", "", "1.5", 1.5, float("nan"), "9" * 30, [1], {"a": 1}, -5, 10**13],
)
def test_parse_event_odd_timestamp_is_none(value: object) -> None:
    event = parse_event({"event": "open", "timestamp": value})

    assert event.timestamp is None
    assert event.occurred_at is None
    assert "timestamp" in event.raw


def test_parse_event_integral_float_timestamp() -> None:
    assert parse_event({"event": "open", "timestamp": 1714986105.0}).timestamp == 1714986105


def test_parse_event_rejects_bad_custom_args() -> None:
    event = parse_event({"event": "open", "app_delivery_id": "abc", "app_attempt": "0"})

    assert event.app_delivery_id is None
    assert event.app_attempt is None


def test_parse_event_missing_event_name() -> None:
    event = parse_event({"email": "a@example.com"})

    assert event.event == ""
    assert proposed_status(event) is None


def test_parse_event_removes_nul_characters() -> None:
    event = parse_event({"event": "bounce", "reason": "bad\x00 mailbox", "x\x00": ["a\x00"]})

    assert event.reason == "bad mailbox"
    assert event.raw == {"event": "bounce", "reason": "bad mailbox", "x": ["a"]}


def test_dedup_key_prefers_sg_event_id() -> None:
    first = parse_event({"event": "open", "sg_event_id": "E3", "timestamp": 1})
    again = parse_event({"event": "open", "sg_event_id": "E3", "timestamp": 2})

    assert first.dedup_key == "sg:E3"
    assert again.dedup_key == first.dedup_key


def test_dedup_key_fallback_ignores_case_and_number_form() -> None:
    fields = {"event": "group_unsubscribe", "sg_message_id": "m.1", "asm_group_id": 42}
    first = parse_event({**fields, "timestamp": 1714986200, "email": "User@Example.com"})
    again = parse_event(
        {**fields, "timestamp": "1714986200", "email": "user@example.com", "asm_group_id": "42"}
    )

    assert first.dedup_key.startswith("fb:")
    assert again.dedup_key == first.dedup_key


@pytest.mark.parametrize(
    "change",
    [
        {"event": "group_resubscribe"},
        {"timestamp": 1714986201},
        {"email": "other@example.com"},
        {"asm_group_id": 43},
        {"sg_message_id": "m.2"},
    ],
)
def test_dedup_key_fallback_differs(change: dict[str, object]) -> None:
    fields = {
        "event": "group_unsubscribe",
        "sg_message_id": "m.1",
        "asm_group_id": 42,
        "timestamp": 1714986200,
        "email": "user@example.com",
    }

    assert parse_event({**fields, **change}).dedup_key != parse_event(fields).dedup_key


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"event": "processed"}, "sent"),
        ({"event": "deferred"}, "deferred"),
        ({"event": "delivered"}, "delivered"),
        ({"event": "open"}, "opened"),
        ({"event": "click"}, "clicked"),
        ({"event": "dropped", "reason": "Bounced Address"}, "dropped"),
        ({"event": "bounce", "type": "bounce"}, "bounced"),
        ({"event": "bounce"}, "bounced"),
        ({"event": "bounce", "type": "blocked"}, "blocked"),
        ({"event": "bounce", "type": "expired"}, "blocked"),
        ({"event": "bounce", "type": "Blocked", "bounce_classification": "Reputation"}, "blocked"),
        (
            {"event": "bounce", "type": "blocked", "bounce_classification": "Invalid Address"},
            "bounced",
        ),
        ({"event": "spamreport"}, None),
        ({"event": "unsubscribe"}, None),
        ({"event": "group_unsubscribe"}, None),
        ({"event": "group_resubscribe"}, None),
        ({"event": "account_status_change"}, None),
    ],
)
def test_proposed_status(fields: dict[str, object], expected: str | None) -> None:
    assert proposed_status(parse_event(fields)) == expected


def test_next_status_progress_never_moves_left() -> None:
    for current, proposed in itertools.product(PROGRESS, PROGRESS):
        expected = max(current, proposed, key=PROGRESS.index)
        assert next_status(current, proposed) == expected, (current, proposed)


@pytest.mark.parametrize("failure", ["blocked", "dropped"])
def test_next_status_failure_before_delivered(failure: str) -> None:
    for current in ("queued", "sending", "sent", "deferred"):
        assert next_status(current, failure) == failure
    for current in ("delivered", "opened", "clicked"):
        assert next_status(current, failure) == current


def test_next_status_hard_bounce_wins_over_progress_and_soft_bounce() -> None:
    for current in (*PROGRESS, "blocked"):
        assert next_status(current, "bounced") == "bounced"
    assert next_status("dropped", "bounced") == "dropped"
    assert next_status("failed", "bounced") == "failed"


@pytest.mark.parametrize("final", ["bounced", "dropped", "failed"])
def test_next_status_final_states_stay(final: str) -> None:
    for proposed in (*PROGRESS, "blocked", "bounced", "dropped"):
        assert next_status(final, proposed) == final


def test_next_status_blocked_ignores_progress_and_engagement() -> None:
    for proposed in PROGRESS:
        assert next_status("blocked", proposed) == "blocked"
    assert next_status("blocked", "dropped") == "blocked"


def test_next_status_flag_events_change_nothing() -> None:
    for current in (*PROGRESS, "blocked", "bounced", "dropped", "failed"):
        assert next_status(current, None) == current


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"event": "bounce", "type": "bounce"}, "bounce"),
        (
            {"event": "bounce", "type": "blocked", "bounce_classification": "Invalid Address"},
            "bounce",
        ),
        ({"event": "bounce", "type": "blocked"}, None),
        ({"event": "bounce", "type": "expired"}, None),
        ({"event": "spamreport"}, "spam"),
        ({"event": "unsubscribe"}, "unsubscribe"),
        ({"event": "group_unsubscribe", "asm_group_id": 42}, "group_unsubscribe"),
        ({"event": "dropped", "reason": "Bounced Address"}, "bounce"),
        ({"event": "dropped", "reason": "Unsubscribed Address"}, "unsubscribe"),
        ({"event": "dropped", "reason": "Spam Reporting Address"}, "spam"),
        ({"event": "dropped", "reason": "Invalid"}, "invalid"),
        ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, None),
        ({"event": "dropped", "reason": "Spam Content"}, None),
        ({"event": "dropped"}, None),
        ({"event": "delivered"}, None),
        ({"event": "open"}, None),
    ],
)
def test_suppression_kind(fields: dict[str, object], kind: str | None) -> None:
    assert suppression_kind(parse_event(fields)) == kind
