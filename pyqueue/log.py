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
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from pyqueue.errors import ConfigError
from pyqueue.flusher import DelayedFlusher

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class _Fields(dict):  # type: ignore[type-arg]
    """The fields of a job context, with their ``key=value`` text once a line needed it."""

    __slots__ = ("text",)
    text: str


_context: contextvars.ContextVar[_Fields | None] = contextvars.ContextVar(
    "pyqueue_log_context", default=None
)


@contextlib.contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block."""
    current: dict[str, Any] = _context.get() or {}
    token = _context.set(_Fields(current, **fields))
    try:
        yield
    finally:
        _context.reset(token)


def _context_text(fields: _Fields) -> str:
    # A job logs at least a start and a done line, and its fields stay the
    # same in between, so their text is built once.
    try:
        return fields.text
    except AttributeError:
        fields.text = " ".join(f"{key}={value}" for key, value in fields.items())
        return fields.text


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


_thread_ids_cache = threading.local()

# The pid, kept here because os.getpid is a system call and every line needs
# it. A forked child sets it again (see _after_fork_in_child).
_pid = os.getpid()


def thread_id() -> str:
    """Return a short id for the current thread (base 36, as Sidekiq's tids are)."""
    return _thread_ids()[0]


def _thread_ids() -> tuple[str, str]:
    """Return this thread's tid and its ``pid=... tid=...`` text."""
    # Every log line needs them, so each thread keeps both. The pid check
    # gives a forked child's thread new ones.
    pid = _pid
    cached: tuple[int, str, str] | None = getattr(_thread_ids_cache, "value", None)
    if cached is not None and cached[0] == pid:
        return cached[1], cached[2]
    number = threading.get_ident() ^ pid
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while number:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
    text = text or "0"
    prefix = f"pid={pid} tid={text}"
    _thread_ids_cache.value = (pid, text, prefix)
    return text, prefix


# The formatted date and time of the last whole second that was logged,
# because strftime costs more than the rest of a log line, and the endings
# ".000Z" to ".999Z", because a format specification costs more than an index.
_second_text: tuple[int, str] = (-1, "")
_MILLISECOND_TEXTS = tuple(f"{millis:03d}Z" for millis in range(1000))


def _utc_timestamp(created: float) -> str:
    global _second_text
    second = int(created)
    # Rounded to whole microseconds first, as datetime.fromtimestamp rounds.
    # It rounds half to even and this half up, which can differ only between
    # an even and an odd microsecond, so never in the millisecond printed.
    micros = int((created - second) * 1_000_000 + 0.5)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached = _second_text
    if cached[0] != second:
        moment = dt.datetime.fromtimestamp(second, tz=dt.UTC)
        cached = (second, moment.strftime("%Y-%m-%dT%H:%M:%S."))
        _second_text = cached
    return cached[1] + _MILLISECOND_TEXTS[micros // 1000]


def _rounded_elapsed(seconds: float) -> float:
    # Milliseconds are the useful precision for a job's run time, as in Sidekiq.
    return round(float(seconds), 3)


def _elapsed_text(seconds: float) -> str:
    """Return ``str(_rounded_elapsed(seconds))`` at half the cost: "0.012", "1.5", "0.0"."""
    # Both round the exact binary value to three decimals, and the shortest
    # text of the rounded float is those decimals without trailing zeros.
    text = f"{seconds:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """Return the traceback, reusing the text that SecretFilter already masked."""
    if not record.exc_text and record.exc_info:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or ""


class TextFormatter(logging.Formatter):
    """One line per record: time, pid, tid, job context, level, message."""

    def format(self, record: logging.LogRecord) -> str:
        elapsed = getattr(record, "elapsed", None)
        line = self.render(record.created, record.levelname, record.getMessage(), "", elapsed)
        if record.exc_info or record.exc_text:
            line += "\n" + _exception_text(self, record)
        return line

    def render(
        self, created: float, level: str, message: str, logger_name: str, elapsed: object = None
    ) -> str:
        """Return the line of ``message``, logged at ``created`` seconds since the epoch."""
        parts = [_utc_timestamp(created), _thread_ids()[1]]
        fields = _context.get()
        suffix = ""
        if isinstance(elapsed, int | float):
            if fields and "elapsed" in fields:
                # A context field of that name gives way to the record's value.
                fields = _Fields(fields, elapsed=_rounded_elapsed(elapsed))
            else:
                suffix = "elapsed=" + _elapsed_text(elapsed)
        if fields:
            parts.append(_context_text(fields))
        if suffix:
            parts.append(suffix)
        parts.append(f"{level}: {message}")
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    """One JSON object per line with ``ts``, ``pid``, ``tid``, ``lvl``, ``msg`` and ``ctx``."""

    def format(self, record: logging.LogRecord) -> str:
        elapsed = getattr(record, "elapsed", None)
        message = record.getMessage()
        entry = _json_entry(record.created, record.levelname, message, record.name, elapsed)
        if record.exc_info or record.exc_text:
            entry["error"] = _exception_text(self, record)
        return _dumps(entry)

    def render(
        self, created: float, level: str, message: str, logger_name: str, elapsed: object = None
    ) -> str:
        """Return the line of ``message``, logged at ``created`` seconds since the epoch."""
        return _dumps(_json_entry(created, level, message, logger_name, elapsed))


def _json_entry(
    created: float, level: str, message: str, logger_name: str, elapsed: object
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": _utc_timestamp(created),
        "pid": _pid,
        "tid": thread_id(),
        "lvl": level,
        "msg": message,
        "logger": logger_name,
    }
    context = current_context()
    if isinstance(elapsed, int | float):
        context["elapsed"] = _rounded_elapsed(elapsed)
    if context:
        entry["ctx"] = context
    return entry


def _dumps(entry: dict[str, Any]) -> str:
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


def _may_hold_secret(message: str) -> bool:
    # Each pattern of mask_secrets needs "://", "=" or "SG.", and most lines have none.
    return "://" in message or "=" in message or "SG." in message


class SecretFilter(logging.Filter):
    """Mask secrets in a record's message and traceback before any formatter runs.

    It sits on the handler, so it also covers records that propagate from
    other libraries' loggers. It does not look into the job context fields.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _may_hold_secret(message):
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
        self._terminal: tuple[int | None, bool] = (None, False)
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
            self._enqueue(fd, self.format(record) + self.terminator, record.levelno)
        except Exception:
            self.handleError(record)

    def write_line(self, logger_name: str, message: str, elapsed: float | None = None) -> bool:
        """Queue an INFO line of ``logger_name`` without a LogRecord.

        Returns False, having written nothing, when the line needs a record:
        the stream has no file descriptor, or a formatter or filter other
        than pyqueue's would see it, or SecretFilter would change it. The
        line is the one ``format`` would make of the record.
        """
        fd = self._descriptor()
        # Exact types, because a subclass may format the record differently.
        render = _RENDERERS.get(type(self.formatter))
        if fd is None or render is None or _may_hold_secret(message):
            return False
        for handler_filter in self.filters:
            if type(handler_filter) is not SecretFilter:
                return False
        line = render(self.formatter, time.time(), "INFO", message, logger_name, elapsed)
        try:
            self._enqueue(fd, line + self.terminator, logging.INFO)
        except Exception:
            # The caller's record path reports the error through handleError.
            return False
        return True

    def _enqueue(self, fd: int, line: str, level: int) -> None:
        self._queue.append(line)
        if level >= logging.WARNING or self.delay <= 0 or self._is_terminal(fd):
            self._write_queued(fd)
        else:
            self._writer.wake()

    def _is_terminal(self, fd: int) -> bool:
        # isatty is a system call, and its result stays valid while the descriptor does.
        known = self._terminal
        if known[0] != fd:
            known = (fd, os.isatty(fd))
            self._terminal = known
        return known[1]

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


_RENDERERS: dict[type[Any], Callable[..., str]] = {
    TextFormatter: TextFormatter.render,
    JSONFormatter: JSONFormatter.render,
}

# Tools such as Sentry's logging integration replace these methods of
# logging.Logger to see every record.
_LOGGER_METHODS = ("handle", "callHandlers", "makeRecord")


def write_job_line(logger: logging.Logger, message: str, elapsed: float | None = None) -> bool:
    """Write an INFO line of ``logger`` without a LogRecord, if nothing else would see the record.

    The processor logs ``start`` and ``done`` for every job, and creating and
    passing on their records cost about half of a no-op job's CPU in the
    drain benchmark. When the record would reach pyqueue's LineHandler and
    nothing else (no other handler at INFO, no filter on the loggers, the
    standard record factory and Logger methods), the handler renders the
    same line from the values. Returns False, having written nothing, when
    the caller must log a record. The caller has checked that ``logger`` is
    enabled for INFO.
    """
    handler = _sole_line_handler(logger)
    return handler is not None and handler.write_line(logger.name, message, elapsed)


def _sole_line_handler(logger: logging.Logger) -> LineHandler | None:
    """Return the LineHandler that alone would handle an INFO record of ``logger``."""
    if type(logger) is not logging.Logger or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    for name in _LOGGER_METHODS:
        if getattr(logging.Logger, name).__module__ != "logging":
            return None
    found: LineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if handler.level > logging.INFO:
                continue
            if found is not None or type(handler) is not LineHandler:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


_line_handlers: weakref.WeakSet[LineHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    for handler in list(_line_handlers):
        handler._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
