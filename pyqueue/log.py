"""Logging: a job context carried in contextvars, and text and JSON formatters.

The processor sets the context (jid, class, queue) around each job, and every
line logged inside it carries those fields; per-job messages are then just
``start``, ``done`` and ``fail``. Text lines look like Sidekiq's:

    2026-12-04T19:46:47.123Z pid=4242 tid=7fa class=Mailer jid=2f... INFO: done elapsed=0.012
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pyqueue_log_context", default=None
)


@contextlib.contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block."""
    current = _context.get() or {}
    token = _context.set({**current, **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def thread_id() -> str:
    """Return a short id for the current thread (base 36, as Sidekiq's tids are)."""
    number = threading.get_ident() ^ os.getpid()
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while number:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
    return text or "0"


def _utc_timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """One line per record: time, pid, tid, job context, level, message."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in current_context().items())
        prefix = f"{_utc_timestamp(record)} pid={os.getpid()} tid={thread_id()}"
        if context:
            prefix += " " + context
        line = f"{prefix} {record.levelname}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line with ``ts``, ``pid``, ``tid``, ``lvl``, ``msg`` and ``ctx``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_timestamp(record),
            "pid": os.getpid(),
            "tid": thread_id(),
            "lvl": record.levelname,
            "msg": record.getMessage(),
            "logger": record.name,
        }
        context = current_context()
        if context:
            entry["ctx"] = context
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Send pyqueue's and the application's logs to ``stream`` (stdout) in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_pyqueue", False):
            root.removeHandler(existing)
    handler._pyqueue = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
