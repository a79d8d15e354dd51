"""Text tables and JSON documents for the admin commands.

Human output is plain aligned columns with long cells cut. ``--json``
output is the API's dataclasses as JSON objects, with the extra keys
documented in docs/cli.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import click

from pyqueue.api import JobRecord, SortedEntry
from pyqueue.payload import dumps

CELL_WIDTH = 60
NONE = "-"
# Lone surrogates come from bytes that are not valid UTF-8 (decoded with
# surrogateescape) or from "\ud800"-style JSON escapes; stdout cannot encode them.
_SURROGATES = re.compile("[\ud800-\udfff]")


def echo(text: str = "", err: bool = False) -> None:
    """Print ``text`` with lone surrogates shown as U+FFFD, so that any data can be printed."""
    click.echo(_SURROGATES.sub("\ufffd", text), err=err)


def render(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Return rows under headers as left-aligned columns separated by two spaces.

    Cells are cut to CELL_WIDTH characters, except in the last column: it
    contains the problems of a row, which are shown whole.
    """
    lines = [list(headers)] + [[cut(cell) for cell in row[:-1]] + [row[-1]] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def cut(text: str, width: int = CELL_WIDTH) -> str:
    """Return ``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def when(epoch: float | None) -> str:
    """Format epoch seconds as a UTC time, e.g. ``2026-05-06 09:00:00Z``."""
    if epoch is None:
        return NONE
    try:
        moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return repr(epoch)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float) -> str:
    """Format a duration compactly: ``42s``, ``3m05s``, ``4h10m``, ``2d03h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 1 or seconds == 0 else f"{seconds:.2f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def arguments(job: JobRecord) -> str:
    """Return the display arguments as comma-separated JSON values."""
    if job.parsed is None:
        return job.raw
    return ", ".join(dumps(value) for value in job.display_args)


def flags(problems: Sequence[str]) -> str:
    """Return the problem count for a table cell (empty when there is none)."""
    return count(len(problems), "problem") if problems else ""


def count(number: int, noun: str, plural: str | None = None) -> str:
    """Return ``1 entry`` / ``2 entries``: the number with the noun in the right form."""
    word = noun if number == 1 else (plural or noun + "s")
    return f"{number} {word}"


def text_or_none(value: object) -> str:
    return NONE if value is None else str(value)


def to_json(value: Any) -> str:
    """Encode API records (dataclasses, tuples, dicts) as indented JSON."""
    return json.dumps(plain(value), indent=2, ensure_ascii=False)


def plain(value: Any) -> Any:
    """Turn dataclasses into dicts recursively; a SortedEntry also gets its ``entry_id``."""
    if isinstance(value, SortedEntry):
        return {"entry_id": value.entry_id, **plain(dataclasses.asdict(value))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def job_details(job: JobRecord) -> list[tuple[str, str]]:
    """Return the label/value lines of a job's detail view."""
    lines = [
        ("jid", text_or_none(job.jid)),
        ("class", text_or_none(job.display_class)),
        ("args", arguments(job)),
        ("queue", text_or_none(job.queue)),
        ("created", when(job.created_at)),
        ("enqueued", when(job.enqueued_at)),
    ]
    if job.failed_at is not None or job.retry_count is not None:
        lines += [
            ("failed", when(job.failed_at)),
            ("retried", when(job.retried_at)),
            ("retry count", text_or_none(job.retry_count)),
        ]
    if job.has_error:
        lines.append(("error", f"{job.error_class or NONE}: {job.error_message or ''}"))
    return lines
