"""Log formats, the job context, secret masking and the outage helper."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest

from pyqueue import log
from pyqueue.errors import ConfigError
from pyqueue.outage import OutageLog

JID = "2f8d1c0e9b7a6f5e4d3c2b1a"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Install pyqueue's handler on a buffer and remove it after the test."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield stream
    for handler in list(root.handlers):
        if getattr(handler, "_pyqueue", False):
            root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_text_line_carries_job_context(output: io.StringIO) -> None:
    log.setup("info", "text", output)
    logger = logging.getLogger("pyqueue.processor")

    with log.job_context(**{"class": "Mailer", "jid": JID, "queue": "mail"}):
        logger.info("start")
        logger.info("done", extra={"elapsed": 0.01234})
    logger.info("outside")

    start, done, outside = lines(output)
    pattern = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z pid=\d+ tid=[0-9a-z]+ "
    assert re.match(pattern, start)
    assert start.endswith(f"class=Mailer jid={JID} queue=mail INFO: start")
    assert done.endswith(f"class=Mailer jid={JID} queue=mail elapsed=0.012 INFO: done")
    assert "jid=" not in outside
    assert outside.endswith("INFO: outside")


def test_json_line_carries_job_context(output: io.StringIO) -> None:
    log.setup("info", "json", output)
    logger = logging.getLogger("pyqueue.processor")

    with log.job_context(**{"class": "Mailer", "jid": JID, "queue": "mail"}):
        logger.warning("fail", extra={"elapsed": 1.5})

    (line,) = lines(output)
    entry = json.loads(line)
    assert entry["msg"] == "fail"
    assert entry["lvl"] == "WARNING"
    assert entry["logger"] == "pyqueue.processor"
    assert entry["ctx"] == {"class": "Mailer", "jid": JID, "queue": "mail", "elapsed": 1.5}
    assert isinstance(entry["pid"], int)
    assert entry["ts"].endswith("Z")


def test_json_line_includes_traceback(output: io.StringIO) -> None:
    log.setup("info", "json", output)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("pyqueue").exception("fail")

    entry = json.loads(lines(output)[0])
    assert "RuntimeError: boom" in entry["error"]
    assert "Traceback" in entry["error"]


def test_level_filters_lower_levels(output: io.StringIO) -> None:
    log.setup("warning", "text", output)
    logger = logging.getLogger("pyqueue")

    logger.info("hidden")
    logger.warning("shown")

    assert len(lines(output)) == 1
    assert lines(output)[0].endswith("WARNING: shown")


def test_format_and_level_from_environment(
    output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYQUEUE_LOG_FORMAT", "json")
    monkeypatch.setenv("PYQUEUE_LOG_LEVEL", "debug")
    log.setup(stream=output)

    logging.getLogger("pyqueue").debug("detail")

    assert json.loads(lines(output)[0])["lvl"] == "DEBUG"


def test_setup_replaces_its_own_handler(output: io.StringIO) -> None:
    log.setup("info", "text", io.StringIO())
    log.setup("info", "text", output)

    installed = [h for h in logging.getLogger().handlers if getattr(h, "_pyqueue", False)]
    assert len(installed) == 1


@pytest.mark.parametrize(
    ("level", "fmt", "wrong"),
    [("loud", "text", "log level 'loud'"), ("info", "xml", "log format 'xml'")],
)
def test_setup_rejects_unknown_values(level: str, fmt: str, wrong: str) -> None:
    with pytest.raises(ConfigError, match=wrong):
        log.setup(level, fmt, io.StringIO())


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://:s3cret@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("rediss://app:s3cret@host:6380", "rediss://app:***@host:6380"),
        (
            "redis+sentinel://:pw@10.0.0.1:26379/mymaster",
            "redis+sentinel://:***@10.0.0.1:26379/mymaster",
        ),
        ("postgresql://app:pa%40ss@db/app", "postgresql://app:***@db/app"),
        ("redis://host:6379/0?password=s3cret&db=1", "redis://host:6379/0?password=***&db=1"),
        ("key SG.abcDEF123_-x.yz987-_ABC used", "key SG.*** used"),
        ("redis://redis.internal:6379/0", "redis://redis.internal:6379/0"),
        ("job took 1.5 s", "job took 1.5 s"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    assert log.mask_secrets(text) == masked


def test_handler_masks_message_arguments(output: io.StringIO) -> None:
    log.setup("info", "text", output)

    logging.getLogger("app").info("connecting to %s", "redis://:hunter2@cache:6379/0")
    logging.getLogger("app").info("api key %s", "SG.aaaaaaaa.bbbbbbbb")

    text = output.getvalue()
    assert "hunter2" not in text
    assert "redis://:***@cache:6379/0" in text
    assert "SG.aaaaaaaa" not in text
    assert "api key SG.***" in text


def test_handler_masks_traceback(output: io.StringIO) -> None:
    log.setup("info", "json", output)
    try:
        raise ValueError("cannot parse redis://user:hunter2@cache:6379")
    except ValueError:
        logging.getLogger("app").exception("startup failed")

    entry = json.loads(lines(output)[0])
    assert "hunter2" not in entry["error"]
    assert "redis://user:***@cache:6379" in entry["error"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outage_logged_at_start_and_end(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outage = OutageLog(logging.getLogger("pyqueue.fetch"), "Redis", clock=clock)
    caplog.set_level(logging.DEBUG)

    assert outage.recovered() is None
    assert outage.failed(ConnectionError("Connection refused")) is True
    for _ in range(50):
        clock.now += 0.5
        assert outage.failed(ConnectionError("Connection refused")) is False
    assert outage.down
    clock.now += 2.0
    downtime = outage.recovered()
    assert outage.recovered() is None

    assert downtime == pytest.approx(27.0)
    assert not outage.down
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Redis is unavailable (ConnectionError: Connection refused)",
        "Redis is available again after 27.0 s (failed attempts: 51)",
    ]
    assert [record.levelname for record in caplog.records] == ["ERROR", "INFO"]


def test_outage_second_outage_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outage = OutageLog(logging.getLogger("app.db"), "PostgreSQL", clock=clock)
    caplog.set_level(logging.DEBUG)

    outage.failed(OSError("down"))
    clock.now += 1.0
    outage.recovered()
    outage.failed(OSError("down again"))
    clock.now += 3.0
    outage.recovered()

    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "PostgreSQL is unavailable (OSError: down)",
        "PostgreSQL is available again after 1.0 s (failed attempts: 1)",
        "PostgreSQL is unavailable (OSError: down again)",
        "PostgreSQL is available again after 3.0 s (failed attempts: 1)",
    ]


def test_outage_threads_log_one_start(caplog: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(logging.getLogger("pyqueue.processor"), "Redis")
    caplog.set_level(logging.DEBUG)
    barrier = threading.Barrier(8)

    def fail_many() -> None:
        barrier.wait()
        for _ in range(100):
            outage.failed(ConnectionError("reset"))

    threads = [threading.Thread(target=fail_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outage.recovered()

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0] == "Redis is unavailable (ConnectionError: reset)"
    assert messages[1].endswith("(failed attempts: 800)")
