"""Job lines written without a LogRecord: the same bytes, else the record path.

``write_job_line`` may skip the record only where pyqueue's LineHandler is
the one thing that would see it. Each record-path test adds one thing that
could see or change the record, and checks that the record path runs.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from pyqueue import log, processor

JID = "2f8d1c0e9b7a6f5e4d3c2b1a"
CONTEXT = {"class": "Mailer", "jid": JID, "queue": "mail"}


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A text stream over the write end of a pipe, and the read end."""
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115
    try:
        yield stream, read_end
    finally:
        if not stream.closed:
            stream.close()
        os.close(read_end)


def isolated_logger(
    name: str, handler: logging.Handler, formatter: logging.Formatter | None = None
) -> logging.Logger:
    handler.setFormatter(formatter or log.TextFormatter())
    handler.addFilter(log.SecretFilter())
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.filters = []
    logger.setLevel(logging.INFO)
    return logger


def read_lines(stream: io.TextIOWrapper, read_end: int, handler: logging.Handler) -> list[str]:
    handler.flush()
    stream.close()
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8").splitlines()


def without_time(line: str) -> Any:
    if line.startswith("{"):
        entry = json.loads(line)
        del entry["ts"]
        return entry
    return line.split(" ", 1)[1]


@pytest.mark.parametrize("formatter", [log.TextFormatter, log.JSONFormatter])
def test_direct_line_equals_record_line(
    pipe: tuple[io.TextIOWrapper, int], formatter: type[logging.Formatter]
) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = isolated_logger(f"perf.direct.{formatter.__name__}", handler, formatter())

    with log.job_context(**CONTEXT):
        assert log.write_job_line(logger, "start")
        assert log.write_job_line(logger, "done", 0.01234)
        logger.info("start")
        logger.info("done", extra={"elapsed": 0.01234})
    assert log.write_job_line(logger, "outside")
    logger.info("outside")

    lines = read_lines(stream, read_end, handler)
    assert len(lines) == 6
    direct, recorded = lines[0:2] + lines[4:5], lines[2:4] + lines[5:6]
    assert [without_time(line) for line in direct] == [without_time(line) for line in recorded]
    assert without_time(lines[1]) in (
        f"pid={os.getpid()} tid={log.thread_id()} class=Mailer jid={JID} queue=mail "
        "elapsed=0.012 INFO: done",
        {
            "pid": os.getpid(),
            "tid": log.thread_id(),
            "lvl": "INFO",
            "msg": "done",
            "logger": logger.name,
            "ctx": {**CONTEXT, "elapsed": 0.012},
        },
    )


def test_context_elapsed_gives_way_on_both_paths(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = isolated_logger("perf.direct.elapsed", handler)

    with log.job_context(elapsed="context", jid=JID):
        assert log.write_job_line(logger, "done", 1.5)
        logger.info("done", extra={"elapsed": 1.5})

    direct, recorded = read_lines(stream, read_end, handler)
    assert without_time(direct) == without_time(recorded)
    assert direct.endswith(f"elapsed=1.5 jid={JID} INFO: done")


def test_handler_above_info_does_not_count(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = isolated_logger("perf.direct.quiet", handler)
    errors_only = logging.StreamHandler(io.StringIO())
    errors_only.setLevel(logging.ERROR)
    logger.addHandler(errors_only)

    assert log.write_job_line(logger, "start")
    assert len(read_lines(stream, read_end, handler)) == 1


RECORD_PATH_CASES = [
    "second handler",
    "logger filter",
    "handler filter",
    "record factory",
    "patched logger",
    "formatter subclass",
    "message with a secret",
    "stream without descriptor",
]


class SubclassFormatter(log.TextFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return "custom " + super().format(record)


def patched_call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    original_call_handlers(self, record)


original_call_handlers = logging.Logger.callHandlers


def wrapping_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    return logging.LogRecord(*args, **kwargs)


@pytest.mark.parametrize("case", RECORD_PATH_CASES)
def test_record_path_when_others_could_see(
    pipe: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = isolated_logger(f"perf.record.{case.replace(' ', '-')}", handler)
    message = "start"
    if case == "second handler":
        logger.addHandler(logging.StreamHandler(io.StringIO()))
    elif case == "logger filter":
        logger.addFilter(lambda record: True)
    elif case == "handler filter":
        handler.addFilter(lambda record: True)
    elif case == "record factory":
        monkeypatch.setattr(
            logging, "_logRecordFactory", lambda *a, **k: logging.LogRecord(*a, **k)
        )
    elif case == "patched logger":
        monkeypatch.setattr(logging.Logger, "callHandlers", patched_call_handlers)
    elif case == "formatter subclass":
        handler.setFormatter(SubclassFormatter())
    elif case == "message with a secret":
        message = "using redis://:hunter2@127.0.0.1:6379/0"
    elif case == "stream without descriptor":
        handler.setStream(io.StringIO())  # type: ignore[arg-type]

    assert not log.write_job_line(logger, message)
    if case != "stream without descriptor":
        assert read_lines(stream, read_end, handler) == []


def test_processor_lines_skip_the_record(
    pipe: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, read_end = pipe
    root = logging.getLogger()
    # pytest's own capture handlers sit on the root logger during a test.
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    handler = log.setup("info", "text", stream)
    records: list[logging.LogRecord] = []
    monkeypatch.setattr(processor.logger, "handle", records.append)

    with log.job_context(**CONTEXT):
        processor._log_job_line("start")
        processor._log_job_line("done", 0.25)

    lines = read_lines(stream, read_end, handler)
    assert records == []
    assert [line.split(" ", 3)[3] for line in lines] == [
        f"class=Mailer jid={JID} queue=mail INFO: start",
        f"class=Mailer jid={JID} queue=mail elapsed=0.25 INFO: done",
    ]
