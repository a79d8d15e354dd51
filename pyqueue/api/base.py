"""Shared parts of the data API: the default connection and the key type checks.

Sidekiq's Web UI fails on every page when a key such as ``retry`` has the
wrong Redis type. The API instead reports such a key as a problem in list
views and raises KeyTypeError from actions, so one bad key hides nothing else.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from pyqueue.client import default_client
from pyqueue.errors import PyQueueError

# Redis TYPE names of the keys that the API reads.
LIST = "list"
SET = "set"
ZSET = "zset"
HASH = "hash"
STRING = "string"


class KeyTypeError(PyQueueError):
    """Raised when a Sidekiq key has another Redis type than the layout defines."""


class NotFound(PyQueueError):
    """Raised when a job, entry or process named by the caller is not in Redis."""


class AmbiguousReference(PyQueueError):
    """Raised when a jid names several entries and the action needs exactly one."""


def connection(conn: redis.Redis | None) -> redis.Redis:
    """Return ``conn``, else the default client's connection (from REDIS_URL).

    The API expects ``decode_responses=True``, as ``pyqueue.connection.create_redis`` sets it.
    """
    return conn if conn is not None else default_client().redis


def is_wrong_type(error: BaseException) -> bool:
    """True for the WRONGTYPE reply of a command sent to a key of another type."""
    return isinstance(error, ResponseError) and str(error).startswith("WRONGTYPE")


def wrong_type_message(conn: redis.Redis, key: str, expected: str) -> str:
    """Describe a key of the wrong type: what it is, what it must be and what to do."""
    try:
        found = str(conn.type(key))
    except ResponseError:
        found = "another type"
    return (
        f"key {key!r} is a {found}, but Sidekiq's layout needs a {expected}; "
        f"inspect it with redis-cli TYPE / DUMP, then rename or delete it"
    )


def key_type_error(conn: redis.Redis, key: str, expected: str) -> KeyTypeError:
    return KeyTypeError(wrong_type_message(conn, key, expected))


NOT_UTF8 = (
    "a reply contains bytes that are not valid UTF-8 and cannot be decoded; "
    "connect with encoding_errors='surrogateescape' (as the pyqueue commands do) "
    "to list and delete such entries"
)


def execute_reads(pipe: Pipeline) -> list[Any] | None:
    """Run a pipeline of reads; return None when a reply is not valid UTF-8.

    Errors of single commands (WRONGTYPE) come back in their slots. redis-py
    drops a connection whose reply failed to decode, so the pool stays usable.
    """
    try:
        return pipe.execute(raise_on_error=False)
    except UnicodeDecodeError:
        return None


def tolerate_invalid_utf8(conn: redis.Redis) -> redis.Redis:
    """Make ``conn`` decode invalid UTF-8 with surrogateescape; call it before first use.

    Such a string encodes back to the original bytes, so ZREM and LREM of a
    raw member still match. It changes every connection of ``conn``'s pool,
    so use it only on a pool that the caller owns.
    """
    conn.connection_pool.connection_kwargs["encoding_errors"] = "surrogateescape"
    return conn


def text(value: Any) -> str | None:
    """Return a reply as str (None stays None); bytes come from a non-decoding client."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def read_int(value: Any, name: str, problems: list[str]) -> int:
    """Read a counter the way Ruby's ``to_i`` does (leading digits, else 0) and flag junk."""
    raw = text(value)
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        pass
    digits = ""
    for index, char in enumerate(raw.strip()):
        if char.isdigit() or (index == 0 and char in "+-"):
            digits += char
        else:
            break
    number = int(digits) if digits.lstrip("+-") else 0
    problems.append(f"{name} is {raw!r}, not an integer; read as {number}")
    return number
