"""Templates and the filters they use to show times, durations, numbers and JSON.

Autoescaping is on for every template, so every value from Redis is escaped
unless a template marks it safe, and none does.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import jinja2

# Lists show at most this many characters of a job's arguments; the job page shows all.
ARGS_PREVIEW = 160


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pyqueue.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        {
            "when": format_time,
            "ago": format_ago,
            "duration": format_duration,
            "number": format_number,
            "pretty": pretty_json,
            "compact": compact_json,
            "preview": preview,
        }
    )
    return env


def format_time(moment: float | None) -> str:
    """Return epoch seconds as ``2024-05-06 10:00:00 UTC``; an empty string for None."""
    if moment is None or not math.isfinite(moment):
        return ""
    try:
        stamp = dt.datetime.fromtimestamp(moment, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{moment!r} (out of range)"
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_ago(moment: float | None, now: float) -> str:
    """Return the distance from ``now``: ``3 min ago`` or ``in 2 h``."""
    if moment is None or not math.isfinite(moment):
        return ""
    seconds = moment - now
    text = format_duration(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def format_duration(seconds: float) -> str:
    """Return a rounded duration: ``42 s``, ``5 min``, ``3 h``, ``12 d``."""
    if not math.isfinite(seconds):
        return "?"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def format_number(value: int | float) -> str:
    return f"{value:,}"


def pretty_json(value: Any) -> str:
    """Return ``value`` as indented JSON, for the job page."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def preview(text: str, limit: int = ARGS_PREVIEW) -> str:
    """Shorten ``text`` to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
