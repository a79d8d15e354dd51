"""Job records for the data API: a tolerant reader of payloads found in Redis.

Queues and sets may contain payloads that pyqueue never wrote: from Ruby
Sidekiq 6 to 8, from other-language clients, or typed in by hand. The reader
does not raise on any string. It keeps the exact raw string (Redis removes entries by
that string), decodes what it can and lists everything odd in ``problems`` so
that a list view can show and flag the entry and an operator can delete it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

from pyqueue.errors import PayloadError
from pyqueue.payload import loads
from pyqueue.retry import decode_backtrace

# An integer timestamp is milliseconds (Sidekiq 8). Below this value it would
# mean a time before March 1973, so it was written in seconds by mistake.
MIN_MILLIS = 100_000_000_000

# A connection that decodes with surrogateescape turns each invalid byte into one of these.
_SURROGATES = re.compile("[\udc80-\udcff]")

TIME_FIELDS = ("created_at", "enqueued_at", "failed_at", "retried_at")

# Sidekiq Enterprise replaces the last argument with this text when "encrypt" is set.
ENCRYPTED_ARGUMENT = "[encrypted data]"


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One job payload as stored in a queue, a sorted set or a work entry.

    Times are epoch seconds (floats) whatever unit the payload used. A field
    that is missing or unreadable is None, and the reason is in ``problems``.
    """

    raw: str
    parsed: dict[str, Any] | None
    problems: tuple[str, ...]
    jid: str | None
    job_class: str | None
    display_class: str | None
    args: Any
    display_args: tuple[Any, ...]
    queue: str | None
    created_at: float | None
    enqueued_at: float | None
    failed_at: float | None
    retried_at: float | None
    retry_count: int | None
    error_class: str | None
    error_message: str | None
    error_backtrace: tuple[str, ...] | None
    tags: tuple[str, ...]
    bid: str | None

    @property
    def ok(self) -> bool:
        """True when the payload has nothing that Sidekiq's readers would trip on."""
        return not self.problems

    @property
    def has_error(self) -> bool:
        """True for a job that failed at least once (it carries error fields)."""
        return self.error_class is not None or self.error_message is not None

    def latency(self, now: float | None = None) -> float:
        """Return seconds since the job was enqueued (0.0 when no time is known)."""
        since = self.enqueued_at if self.enqueued_at is not None else self.created_at
        if since is None:
            return 0.0
        current = time.time() if now is None else now
        return current - since

    def get(self, field: str, default: Any = None) -> Any:
        """Return a payload field as stored, or ``default`` (also for an unreadable payload)."""
        if self.parsed is None:
            return default
        return self.parsed.get(field, default)


def read_job(raw: str, *, in_queue: bool = False) -> JobRecord:
    """Decode ``raw`` into a JobRecord; any string is accepted, and oddities go to ``problems``.

    ``in_queue`` marks a payload read from a queue or a work entry, where a
    missing ``enqueued_at`` is a problem (scheduled jobs have none by design).
    """
    problems: list[str] = []
    parsed = _parse_object(raw, problems)
    if parsed is None:
        return _unreadable(raw, problems)
    if _SURROGATES.search(raw):
        problems.append(
            "payload contains bytes that are not valid UTF-8; Ruby's JSON parser rejects it"
        )

    job_class = _read_string(parsed, "class", problems, required=True)
    args = parsed.get("args")
    times = {field: _read_time(parsed, field, problems) for field in TIME_FIELDS}
    if in_queue and "enqueued_at" not in parsed:
        problems.append("enqueued_at is missing, so the queue latency reads as 0")
    backtrace = _read_backtrace(parsed.get("error_backtrace"), problems)
    record = JobRecord(
        raw=raw,
        parsed=parsed,
        problems=(),
        jid=_read_string(parsed, "jid", problems, required=True),
        job_class=job_class,
        display_class=_display_class(parsed, job_class),
        args=args,
        display_args=_display_args(parsed, args, problems),
        queue=_read_string(parsed, "queue", problems),
        created_at=times["created_at"] if times["created_at"] is not None else times["enqueued_at"],
        enqueued_at=times["enqueued_at"],
        failed_at=times["failed_at"],
        retried_at=times["retried_at"],
        retry_count=_read_count(parsed, problems),
        error_class=_read_string(parsed, "error_class", problems),
        error_message=_read_string(parsed, "error_message", problems),
        error_backtrace=backtrace,
        tags=_read_tags(parsed, problems),
        bid=_read_string(parsed, "bid", problems),
    )
    return dataclasses.replace(record, problems=tuple(problems))


def json_type(value: Any) -> str:
    """Return the JSON name of a decoded value's type (``string``, ``array`` ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_json(raw: str | bytes) -> tuple[Any, str | None]:
    """Decode JSON; return ``(value, None)``, or ``(None, reason)`` when it is invalid.

    Nesting too deep for Python's parser counts as invalid, so that no
    payload can make a list view raise.
    """
    try:
        return loads(raw), None
    except (ValueError, RecursionError) as exc:
        return None, str(exc) or type(exc).__name__


def _parse_object(raw: str, problems: list[str]) -> dict[str, Any] | None:
    value, error = parse_json(raw)
    if error is not None:
        problems.append(f"payload is not valid JSON ({error})")
        return None
    if not isinstance(value, dict):
        problems.append(f"payload is a JSON {json_type(value)}, not an object")
        return None
    return value


def _unreadable(raw: str, problems: list[str]) -> JobRecord:
    # Sidekiq's Web UI shows the raw string as the arguments of such an entry.
    return JobRecord(
        raw=raw,
        parsed=None,
        problems=tuple(problems),
        jid=None,
        job_class=None,
        display_class=None,
        args=None,
        display_args=(raw,),
        queue=None,
        created_at=None,
        enqueued_at=None,
        failed_at=None,
        retried_at=None,
        retry_count=None,
        error_class=None,
        error_message=None,
        error_backtrace=None,
        tags=(),
        bid=None,
    )


def _read_string(
    parsed: dict[str, Any], field: str, problems: list[str], required: bool = False
) -> str | None:
    if field not in parsed:
        if required:
            problems.append(f"{field} is missing")
        return None
    value = parsed[field]
    if isinstance(value, str) and (value or not required):
        return value
    if value is None and not required:
        return None
    shown = '""' if value == "" else json_type(value)
    problems.append(f"{field} is {shown}, not a non-empty string")
    return None


def _read_time(parsed: dict[str, Any], field: str, problems: list[str]) -> float | None:
    value = parsed.get(field)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= MIN_MILLIS:
            return _millis(value, field, problems)
        problems.append(
            f"{field} is the integer {value}, read as epoch seconds; "
            "Sidekiq 8 reads integers as milliseconds, so write a float"
        )
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            problems.append(f"{field} is a string, read as epoch seconds; write a float")
            return number
    problems.append(f"{field} is {json_type(value)} {value!r}, not a time")
    return None


def _millis(value: int, field: str, problems: list[str]) -> float | None:
    try:
        return value / 1000.0
    except OverflowError:
        problems.append(f"{field} is the integer {value}, too large for a time")
        return None


def _read_count(parsed: dict[str, Any], problems: list[str]) -> int | None:
    value = parsed.get("retry_count")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    problems.append(f"retry_count is {json_type(value)}, not an integer")
    return None


def _read_tags(parsed: dict[str, Any], problems: list[str]) -> tuple[str, ...]:
    value = parsed.get("tags")
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return tuple(value)
    problems.append(f"tags is {json_type(value)}, not an array of strings")
    return ()


def _read_backtrace(value: Any, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"error_backtrace is {json_type(value)}, not a base64 string")
        return None
    try:
        return tuple(decode_backtrace(value))
    except PayloadError as exc:
        problems.append(str(exc))
        return None


def _display_class(parsed: dict[str, Any], job_class: str | None) -> str | None:
    for field in ("display_class", "wrapped"):
        value = parsed.get(field)
        if isinstance(value, str) and value:
            return value
    return job_class


def _display_args(parsed: dict[str, Any], args: Any, problems: list[str]) -> tuple[Any, ...]:
    if "args" not in parsed:
        problems.append("args is missing")
        return ()
    if not isinstance(args, list):
        problems.append(f"args is {json_type(args)}, not an array")
        return (args,)
    values = list(args)
    # An ActiveJob payload keeps the real arguments in args[0]["arguments"].
    if isinstance(parsed.get("wrapped"), str) and values and isinstance(values[0], dict):
        inner = values[0].get("arguments")
        if isinstance(inner, list):
            values = list(inner)
    if parsed.get("encrypt") and values:
        values[-1] = ENCRYPTED_ARGUMENT
    return tuple(values)
