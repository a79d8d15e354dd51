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
from typing import Any

import pytest

from pyqueue import log, processor
from tests.perf.conftest import make_logger, read_all

JID = "2f8d1c0e9b7a6f5e4d3c2b1a"
CONTEXT = {"class": "Mailer", "jid": JID, "queue": "mail"}


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
    logger = make_logger(handler, f"perf.direct.{formatter.__name__}", formatter())

    with log.job_context(**CONTEXT):
        assert log.write_job_line(logger, "start")
        assert log.write_job_line(logger, "done", 0.01234)
        logger.info("start")
        logger.info("done", extra={"elapsed": 0.01234})
    assert log.write_job_line(logger, "outside")
    logger.info("outside")

    lines = read_all(stream, read_end, handler).splitlines()
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


def test_record_elapsed_replaces_context_field(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = make_logger(handler, "perf.direct.elapsed")

    with log.job_context(elapsed="context", jid=JID):
        assert log.write_job_line(logger, "done", 1.5)
        logger.info("done", extra={"elapsed": 1.5})

    direct, recorded = read_all(stream, read_end, handler).splitlines()
    assert without_time(direct) == without_time(recorded)
    assert direct.endswith(f"elapsed=1.5 jid={JID} INFO: done")


def test_handler_above_info_does_not_count(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = make_logger(handler, "perf.direct.quiet")
    errors_only = logging.StreamHandler(io.StringIO())
    errors_only.setLevel(logging.ERROR)
    logger.addHandler(errors_only)

    assert log.write_job_line(logger, "start")
    assert len(read_all(stream, read_end, handler).splitlines()) == 1


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
    logger = make_logger(handler, f"perf.record.{case.replace(' ', '-')}")
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
        assert read_all(stream, read_end, handler).splitlines() == []


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

    lines = read_all(stream, read_end, handler).splitlines()
    assert records == []
    assert [line.split(" ", 3)[3] for line in lines] == [
        f"class=Mailer jid={JID} queue=mail INFO: start",
        f"class=Mailer jid={JID} queue=mail elapsed=0.25 INFO: done",
    ]
