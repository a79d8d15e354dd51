"""SendGrid delivery events: lenient parsing, de-duplication keys and the status rules.

The webhook receiver stores nothing itself; EmailDeliveryProcessorJob hands
each batch to ``app_jobs.delivery_store.process_events``, which uses the pure
functions here. Events arrive late, out of order and more than once, so the
status of a delivery is computed by precedence (``next_status``), never by
arrival order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

# Statuses of the current attempt that only ever move right.
PROGRESS = ("queued", "sending", "sent", "deferred", "delivered", "opened", "clicked")
_RANK = {status: rank for rank, status in enumerate(PROGRESS)}

# The status an event type proposes for its attempt; bounces are classified separately.
_EVENT_STATUS = {
    "processed": "sent",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "dropped": "dropped",
}

KNOWN_EVENTS = frozenset(
    {
        "processed",
        "dropped",
        "delivered",
        "deferred",
        "bounce",
        "open",
        "click",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
    }
)

# SendGrid's "dropped" reasons that mean the address itself is suppressed, and the
# local suppression kind each one mirrors. Other reasons (such as "Invalid SMTPAPI
# header" or "Spam Content") concern the message, not the address.
DROP_REASON_SUPPRESSIONS = {
    "bounced address": "bounce",
    "unsubscribed address": "unsubscribe",
    "spam reporting address": "spam",
    "invalid": "invalid",
    "invalid address": "invalid",
}

# At most 19 digits: no field needs more, and int() of a huge digit string is slow.
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
# Unix seconds before the year 10000, so that every accepted value fits a datetime.
_MAX_TIMESTAMP = 253_402_300_799


@dataclasses.dataclass(frozen=True)
class DeliveryEvent:
    """One event of a SendGrid webhook post: the known fields, typed, plus the rest.

    ``extra`` contains every other top-level field: our custom args and
    fields SendGrid adds later. ``raw`` is the event as received (NUL
    characters removed, since PostgreSQL text cannot store them).
    """

    event: str
    email: str | None
    timestamp: int | None
    sg_event_id: str | None
    sg_message_id: str | None
    smtp_id: str | None
    categories: tuple[str, ...]
    asm_group_id: int | None
    bounce_type: str | None
    bounce_classification: str | None
    reason: str | None
    status: str | None
    response: str | None
    url: str | None
    delivery_attempt: int | None
    tls: int | None
    cert_err: int | None
    app_delivery_id: int | None
    app_attempt: int | None
    extra: Mapping[str, Any]
    raw: Mapping[str, Any]

    @property
    def occurred_at(self) -> dt.datetime | None:
        """The event's ``timestamp`` as an aware UTC datetime."""
        if self.timestamp is None:
            return None
        return dt.datetime.fromtimestamp(self.timestamp, tz=dt.UTC)

    @property
    def x_message_id(self) -> str | None:
        """The ``X-Message-Id`` of the Mail Send request: ``sg_message_id`` up to its first dot."""
        if not self.sg_message_id:
            return None
        return self.sg_message_id.split(".", 1)[0] or None

    @property
    def dedup_key(self) -> str:
        """The unique key of this event in ``webhook_events``.

        ``sg_event_id`` when present. Subscription events may come without
        one, so the fallback hashes (sg_message_id, event, timestamp,
        lowercased email, asm_group_id), which a re-posted copy repeats.
        """
        if self.sg_event_id:
            return "sg:" + self.sg_event_id
        timestamp = self.timestamp if self.timestamp is not None else self.raw.get("timestamp")
        email = self.email.lower() if self.email else None
        fields = [self.sg_message_id, self.event, timestamp, email, self.asm_group_id]
        digest = hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()
        return "fb:" + digest

    @property
    def is_soft_bounce(self) -> bool:
        """True for a soft bounce (status ``blocked``), which a later send may get past."""
        return self.event == "bounce" and proposed_status(self) == "blocked"


_KNOWN_FIELDS = frozenset(
    {
        "event",
        "email",
        "timestamp",
        "sg_event_id",
        "sg_message_id",
        "smtp-id",
        "category",
        "asm_group_id",
        "type",
        "bounce_classification",
        "reason",
        "status",
        "response",
        "url",
        "attempt",
        "tls",
        "cert_err",
        "app_delivery_id",
        "app_attempt",
    }
)


def parse_event(data: Mapping[str, Any]) -> DeliveryEvent:
    """Build a DeliveryEvent from one decoded event object, leniently.

    Numbers may come as JSON numbers or as strings, and ``category`` as a
    string or a list. A value of the wrong shape becomes None and stays
    visible in ``raw``.
    """
    raw = _strip_nul(dict(data))
    timestamp = _as_int(raw.get("timestamp"))
    if timestamp is not None and not 0 <= timestamp <= _MAX_TIMESTAMP:
        timestamp = None
    return DeliveryEvent(
        event=_as_str(raw.get("event")) or "",
        email=_as_str(raw.get("email")),
        timestamp=timestamp,
        sg_event_id=_as_str(raw.get("sg_event_id")),
        sg_message_id=_as_str(raw.get("sg_message_id")),
        smtp_id=_as_str(raw.get("smtp-id")),
        categories=_as_categories(raw.get("category")),
        asm_group_id=_as_int(raw.get("asm_group_id")),
        bounce_type=_as_str(raw.get("type")),
        bounce_classification=_as_str(raw.get("bounce_classification")),
        reason=_as_str(raw.get("reason")),
        status=_as_str(raw.get("status")),
        response=_as_str(raw.get("response")),
        url=_as_str(raw.get("url")),
        delivery_attempt=_as_int(raw.get("attempt")),
        tls=_as_int(raw.get("tls")),
        cert_err=_as_int(raw.get("cert_err")),
        app_delivery_id=_as_positive_int(raw.get("app_delivery_id")),
        app_attempt=_as_positive_int(raw.get("app_attempt")),
        extra={key: value for key, value in raw.items() if key not in _KNOWN_FIELDS},
        raw=raw,
    )


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_strip_nul(item) for item in value]
    if isinstance(value, dict):
        return {_strip_nul(str(key)): _strip_nul(item) for key, item in value.items()}
    return value


def _as_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _as_positive_int(value: Any) -> int | None:
    number = _as_int(value)
    return number if number is not None and number > 0 else None


def _as_categories(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def proposed_status(event: DeliveryEvent) -> str | None:
    """Return the status that ``event`` moves its attempt towards, or None for flag-only events.

    A bounce of type ``blocked`` or ``expired`` is soft (status ``blocked``,
    retried later) unless SendGrid classified it as ``Invalid Address``. Type
    ``bounce``, a missing type or any other type is a hard bounce.
    """
    if event.event != "bounce":
        return _EVENT_STATUS.get(event.event)
    soft_type = (event.bounce_type or "").lower() in ("blocked", "expired")
    invalid = (event.bounce_classification or "").lower() == "invalid address"
    return "blocked" if soft_type and not invalid else "bounced"


def next_status(current: str, proposed: str | None) -> str:
    """Return the status after an event that proposes ``proposed`` meets ``current``.

    Progress statuses (queued < sending < sent < deferred < delivered <
    opened < clicked) never move left. ``blocked`` and ``dropped`` replace any
    status before ``delivered``. A hard bounce (``bounced``) replaces every
    progress status and ``blocked``, because a bounce may follow a delivery.
    ``bounced``, ``dropped`` and ``failed`` are final.
    """
    if proposed is None or proposed == current:
        return current
    if current in ("bounced", "dropped", "failed"):
        return current
    if proposed in _RANK:
        if current in _RANK and _RANK[proposed] > _RANK[current]:
            return proposed
        return current
    if proposed == "bounced":
        return proposed
    # "blocked" or "dropped": only an attempt that has not reached the mailbox yet.
    if current in _RANK and _RANK[current] < _RANK["delivered"]:
        return proposed
    return current


def drop_suppression(event: DeliveryEvent) -> str | None:
    """Return the suppression kind that a ``dropped`` event's reason mirrors, if any."""
    if event.event != "dropped" or not event.reason:
        return None
    return DROP_REASON_SUPPRESSIONS.get(event.reason.strip().lower())


def suppression_kind(event: DeliveryEvent) -> str | None:
    """Return the suppression kind that ``event`` adds, or None.

    Kinds: bounce (hard bounces), spam, unsubscribe, group_unsubscribe, and
    for ``dropped`` the kind its reason mirrors (see DROP_REASON_SUPPRESSIONS).
    """
    if event.event == "bounce":
        return "bounce" if proposed_status(event) == "bounced" else None
    if event.event == "spamreport":
        return "spam"
    if event.event in ("unsubscribe", "group_unsubscribe"):
        return event.event
    return drop_suppression(event)
