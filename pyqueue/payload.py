"""The job hash: encoding, decoding and the strict argument check.

Every payload pyqueue writes is JSON spelled as Ruby's ``JSON.generate`` spells
it. Ruby finds and removes jobs by their exact string (LREM, ZREM), and the Web
UI re-encodes a parsed job before ZINCRBY, so a different spelling would leave
a second copy behind.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from pyqueue.errors import ArgumentError, PayloadError

Payload = dict[str, Any]
"""A decoded job hash. Unknown fields are kept as they are."""

# Sidekiq 8 readers take a JSON integer timestamp as milliseconds, so pyqueue
# writes float seconds by default and reads both.
TIMESTAMP_FIELDS = ("created_at", "enqueued_at", "failed_at", "retried_at")

_json_kwargs: dict[str, Any] = {
    "ensure_ascii": False,
    "separators": (",", ":"),
    "allow_nan": False,
}
_fast_dumps: Callable[[Any], str] = json.JSONEncoder(**_json_kwargs).encode


def new_jid() -> str:
    """Return a new job id: 24 lowercase hex characters (12 random bytes)."""
    # What secrets.token_hex(12) returns, without its two extra calls per job.
    return os.urandom(12).hex()


def ruby_float(value: float) -> str:
    """Spell a finite float as Ruby's ``Float#to_s`` does (``1.0e+20``, not ``1e+20``).

    Both print the shortest round-tripping digits and use exponent form below
    1e-4 and from 1e16, where Ruby always writes a fractional part in the
    mantissa. Between 1e15 and 1e16 Ruby 3.1 also uses exponent form for a
    whole number (``1.0e+15``), while Python's ``repr`` does not.
    """
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{exponent}"
    if abs(value) < 1e15:
        return text
    sign = "-" if text.startswith("-") else ""
    integer, _, fraction = text.lstrip("-").partition(".")
    if fraction.rstrip("0"):
        return text
    digits = integer.rstrip("0")
    return f"{sign}{digits[0]}.{digits[1:] or '0'}e+{len(integer) - 1:02d}"


class _RubyJSONEncoder(json.JSONEncoder):
    """The slow encoder, used only when a float needs Ruby's exponent spelling."""

    def iterencode(self, o: Any, _one_shot: bool = False) -> Iterator[str]:
        make_iterencode = json.encoder._make_iterencode  # type: ignore[attr-defined]
        iterencode: Callable[[Any, int], Iterator[str]] = make_iterencode(
            {},
            self.default,
            json.encoder.py_encode_basestring,
            None,
            _float_to_json,
            ":",
            ",",
            False,
            False,
            _one_shot,
        )
        return iterencode(o, 0)


def _float_to_json(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"out of range float value {value!r} cannot be stored as JSON")
    return ruby_float(value)


_slow_dumps = _RubyJSONEncoder(**_json_kwargs).encode


def _ruby_spelling_differs(text: str) -> bool:
    """Return True if ``text`` has "e+", "e-", or 16 decimal digits before ".0".

    Substring searches instead of one regular expression, which took as long
    as the encoding itself.
    """
    if "e+" in text or "e-" in text:
        return True
    index = text.find(".0")
    while index != -1:
        if index >= 16 and text[index - 16 : index].isdecimal():
            return True
        index = text.find(".0", index + 2)
    return False


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON with raw UTF-8 and Ruby's float spelling."""
    text = _fast_dumps(value)
    # Only a float that Python spells differently ("1e+20", or a whole number
    # from 1e15 to 1e16) needs the slower encoder. A string that merely looks
    # like one also lands there, which is harmless.
    if _ruby_spelling_differs(text):
        return _slow_dumps(value)
    return text


def loads(text: str | bytes) -> Any:
    """Decode JSON; integers of any size stay exact Python ints."""
    return json.loads(text)


def decode(raw: str | bytes) -> Payload:
    """Decode a payload read from Redis; raise PayloadError unless it is a JSON object."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(value).__name__}")
    return value


def epoch_seconds(value: Any) -> float | None:
    """Read a timestamp field written by any Sidekiq version, in epoch seconds.

    A JSON float is seconds (Sidekiq 6 and 7); a JSON integer is milliseconds
    (Sidekiq 8). Numeric strings are read as seconds. Anything else gives None.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value / 1000.0
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def timestamp(mode: str = "float_seconds", now: float | None = None) -> float | int:
    """Return the current time as a payload timestamp in ``mode``.

    ``float_seconds`` is what Sidekiq 6 and 7 write and every version reads;
    ``int_millis`` is Sidekiq 8's form, for clusters that run only Sidekiq 8.
    """
    current = time.time() if now is None else now
    if mode == "int_millis":
        return int(current * 1000)
    return current


def check_args(args: Any) -> None:
    """Raise ArgumentError unless ``args`` is a list of native JSON values.

    Accepted: str, int, float (finite), bool, None, list, and dict with string
    keys. Everything else would change on a JSON round trip or cannot be
    stored, so the error names the argument's position and what to pass.
    """
    if not isinstance(args, list):
        raise ArgumentError(
            f"job args must be a list, got {type(args).__name__}; "
            "pass the arguments as a list, e.g. [1, 'two']"
        )
    for index, value in enumerate(args):
        _check_value(value, f"args[{index}]")


_SCALARS = (str, int, bool, type(None))

_HINTS: dict[type, str] = {
    bytes: "decode it to str or encode it with base64 first",
    bytearray: "decode it to str or encode it with base64 first",
    tuple: "pass a list instead",
    set: "pass a sorted list instead",
    frozenset: "pass a sorted list instead",
}


def _check_value(value: Any, path: str) -> None:
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentError(
                f"job argument {path} is {value!r}, which JSON cannot store; "
                "pass None or a string instead"
            )
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArgumentError(
                    f"job argument {path} has a key {key!r} of type {type(key).__name__}; "
                    "JSON object keys must be strings, so convert the key with str()"
                )
            _check_value(item, f"{path}[{key!r}]")
        return
    hint = _HINTS.get(type(value), "convert it to str, int, float, bool, None, list or dict")
    raise ArgumentError(
        f"job argument {path} is of type {type(value).__name__}, which is not a JSON type; {hint}"
    )
