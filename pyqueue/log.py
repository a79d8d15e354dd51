"""Logging: a job context carried in contextvars, and text and JSON formatters.

The processor sets the context (jid, class, queue) around each job, and every
line logged inside it carries those fields; per-job messages are then just
``start``, ``done`` and ``fail``. The processor passes the run time of a job
as ``extra={"elapsed": seconds}`` on its ``done`` and ``fail`` lines, and the
formatters print it after the context. Text lines look like Sidekiq's:

    2026-12-04T19:46:47.123Z pid=4242 tid=7fa class=Mailer jid=2f... elapsed=0.012 INFO: done

``setup`` also installs ``SecretFilter`` so that Redis and PostgreSQL URL
passwords and SendGrid API keys never reach the output.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from pyqueue.errors import ConfigError
from pyqueue.flusher import DelayedFlusher

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

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


_thread_ids = threading.local()


def thread_id() -> str:
    """Return a short id for the current thread (base 36, as Sidekiq's tids are)."""
    # Every log line needs it, so each thread keeps its id. The pid check
    # gives a forked child's thread a new one.
    pid = os.getpid()
    cached: tuple[int, str] | None = getattr(_thread_ids, "value", None)
    if cached is not None and cached[0] == pid:
        return cached[1]
    number = threading.get_ident() ^ pid
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while number:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
    _thread_ids.value = (pid, text or "0")
    return text or "0"


# The formatted date and time of the last whole second that was logged,
# because strftime costs more than the rest of a log line.
_second_text: tuple[int, str] = (-1, "")


def _utc_timestamp(record: logging.LogRecord) -> str:
    global _second_text
    second = int(record.created)
    # Rounded to whole microseconds first, as datetime.fromtimestamp rounds.
    micros = round((record.created - second) * 1_000_000)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached = _second_text
    if cached[0] != second:
        moment = dt.datetime.fromtimestamp(second, tz=dt.UTC)
        cached = (second, moment.strftime("%Y-%m-%dT%H:%M:%S."))
        _second_text = cached
    return f"{cached[1]}{micros // 1000:03d}Z"


def _record_context(record: logging.LogRecord) -> dict[str, Any]:
    """Return the job context plus the ``elapsed`` seconds passed as ``extra``."""
    context = current_context()
    elapsed = getattr(record, "elapsed", None)
    if isinstance(elapsed, int | float):
        # Milliseconds are the useful precision for a job's run time, as in Sidekiq.
        context["elapsed"] = round(float(elapsed), 3)
    return context


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """Return the traceback, reusing the text that SecretFilter already masked."""
    if not record.exc_text and record.exc_info:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or ""


class TextFormatter(logging.Formatter):
    """One line per record: time, pid, tid, job context, level, message."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in _record_context(record).items())
        prefix = f"{_utc_timestamp(record)} pid={os.getpid()} tid={thread_id()}"
        if context:
            prefix += " " + context
        line = f"{prefix} {record.levelname}: {record.getMessage()}"
        if record.exc_info or record.exc_text:
            line += "\n" + _exception_text(self, record)
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
        context = _record_context(record)
        if context:
            entry["ctx"] = context
        if record.exc_info or record.exc_text:
            entry["error"] = _exception_text(self, record)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


# user:password@ in any URL (redis://, rediss://, redis+sentinel://, postgresql://).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
# redis-py also takes the password as a query parameter: redis://host/0?password=...
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&\s]+", re.IGNORECASE)
# SendGrid API keys are "SG." followed by two base64url parts separated by a dot.
_SENDGRID_KEY = re.compile(r"\bSG\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
MASK = "***"


def mask_secrets(text: str) -> str:
    """Replace URL passwords and SendGrid API keys in ``text`` with ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    text = _QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _SENDGRID_KEY.sub("SG." + MASK, text)


class SecretFilter(logging.Filter):
    """Mask secrets in a record's message and traceback before any formatter runs.

    It sits on the handler, so it also covers records that propagate from
    other libraries' loggers. It does not look into the job context fields.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Each pattern needs "://", "=" or "SG."; most lines have none of them,
        # so they skip the three regular expressions.
        if "://" in message or "=" in message or "SG." in message:
            masked = mask_secrets(message)
            if masked != message:
                record.msg = masked
                record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


# Lines below WARNING wait this long to be written together with the lines
# of other threads; see LineHandler.
WRITE_DELAY = 0.005


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes whole lines with ``os.write``, collected over a few ms.

    StreamHandler writes and flushes each record under its lock, and a worker
    with ten threads logs two lines per job, so the threads queued for that
    lock and for the GIL around every write. Here each thread formats its
    line and appends it to a queue. A writer thread writes the queued lines
    with one ``os.write`` at most ``WRITE_DELAY`` (5 ms) after the first
    line arrived. A line at WARNING or above is written at once,
    behind the lines queued before it, and so is every line when the stream
    is a terminal. ``flush()`` and ``close()``, which ``logging`` calls at
    exit, write what is queued. The stream's own buffer is flushed first, so
    what was printed before a write still comes before it. A stream without
    a file descriptor (io.StringIO) goes through StreamHandler's locked path.

    NOTE: a process killed with SIGKILL loses the lines below WARNING of its
    last 5 ms.
    """

    def __init__(self, stream: Any = None, *, delay: float = WRITE_DELAY) -> None:
        super().__init__(stream)
        self.delay = delay
        self._queue: collections.deque[str] = collections.deque()
        # Held while lines leave the queue and are written, which keeps their order.
        self._write_lock = threading.Lock()
        self._writer = DelayedFlusher(self.flush, delay, "pyqueue-log")
        _line_handlers.add(self)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock at the fork, and the queued
        # lines are the parent's to write.
        self._write_lock = threading.Lock()
        self._queue.clear()

    def handle(self, record: logging.LogRecord) -> bool:
        passed = self.filter(record)
        if isinstance(passed, logging.LogRecord):
            record = passed
        if passed:
            self._write(record)
        return bool(passed)

    def _write(self, record: logging.LogRecord) -> None:
        fd = self._descriptor()
        if fd is None:
            self.acquire()
            try:
                self.emit(record)
            finally:
                self.release()
            return
        try:
            self._queue.append(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING or self.delay <= 0 or os.isatty(fd):
                self._write_queued(fd)
            else:
                self._writer.wake()
        except Exception:
            self.handleError(record)

    def _descriptor(self) -> int | None:
        try:
            return int(self.stream.fileno())
        except (AttributeError, OSError, ValueError):
            return None

    def _write_queued(self, fd: int) -> None:
        with self._write_lock:
            lines = []
            while self._queue:
                lines.append(self._queue.popleft())
            if not lines:
                return
            encoding = getattr(self.stream, "encoding", None) or "utf-8"
            data = "".join(lines).encode(encoding, "backslashreplace")
            self.stream.flush()
            # NOTE: a write larger than the pipe buffer may be split, and a
            # line printed by other code can then land inside it.
            while data:
                data = data[os.write(fd, data) :]

    def flush(self) -> None:
        """Write the queued lines, then flush the stream."""
        fd = self._descriptor()
        try:
            if fd is not None:
                self._write_queued(fd)
            super().flush()
        except Exception:
            # Nothing names a record here; the lines are lost, as StreamHandler's are.
            self._queue.clear()


_line_handlers: weakref.WeakSet[LineHandler] = weakref.WeakSet()


def _reset_line_handlers() -> None:
    for handler in list(_line_handlers):
        handler._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_line_handlers)


def setup(level: str | None = None, fmt: str | None = None, stream: Any = None) -> logging.Handler:
    """Send pyqueue's and the application's logs to ``stream`` (stdout) in ``fmt``.

    ``level`` is one of debug, info, warning, error and ``fmt`` is text or
    json. A value not given comes from PYQUEUE_LOG_LEVEL or PYQUEUE_LOG_FORMAT,
    else it is info or text. Calling it again replaces the handler it installed
    before. Raises ConfigError on an unknown value.
    """
    level = (level or os.environ.get("PYQUEUE_LOG_LEVEL") or "info").lower()
    fmt = (fmt or os.environ.get("PYQUEUE_LOG_FORMAT") or "text").lower()
    if level not in LEVELS:
        raise ConfigError(f"log level {level!r} is invalid; choose one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"log format {fmt!r} is invalid; choose one of {', '.join(FORMATS)}")
    handler = LineHandler(stream or sys.stdout)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_pyqueue", False):
            root.removeHandler(existing)
    handler._pyqueue = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
