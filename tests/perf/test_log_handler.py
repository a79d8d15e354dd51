"""LineHandler: whole lines from many threads without a lock, and StreamHandler's fallback."""

from __future__ import annotations

import io
import logging
import os
import re
import select
import threading

from pyqueue import log
from tests.perf.conftest import make_logger, read_all

LINE = re.compile(r"^\S+Z pid=\d+ tid=\w+ INFO: record \d+ of thread \d+$")


def test_threads_write_whole_lines(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = make_logger(handler, "perf.lines")

    def write_lines(number: int) -> None:
        for index in range(50):
            logger.info("record %d of thread %d", index, number)

    # 8 threads x 50 lines of about 70 bytes fill less than half of the pipe's 64 KiB,
    # so no reader is needed meanwhile.
    threads = [threading.Thread(target=write_lines, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = read_all(stream, read_end, handler).splitlines()

    assert len(lines) == 400
    assert all(LINE.match(line) for line in lines)


def test_printed_text_comes_first(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = make_logger(handler, "perf.order")

    stream.write("printed before\n")
    logger.info("record 1 of thread 0")

    lines = read_all(stream, read_end, handler).splitlines()
    assert lines[0] == "printed before"
    assert LINE.match(lines[1])


def test_secrets_masked_on_descriptor_path(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream)
    logger = make_logger(handler, "perf.secret")

    logger.info("connecting to %s", "redis://:hunter2@127.0.0.1:6379/0")

    text = read_all(stream, read_end, handler)
    assert "hunter2" not in text
    assert "redis://:***@127.0.0.1:6379/0" in text


def read_available(read_end: int, timeout: float) -> str:
    """Return what arrives on the pipe within ``timeout`` seconds."""
    ready, _, _ = select.select([read_end], [], [], timeout)
    return os.read(read_end, 65536).decode("utf-8") if ready else ""


def test_queued_lines_are_written_within_the_delay(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream, delay=0.05)
    logger = make_logger(handler, "perf.delay")

    logger.info("record 1 of thread 0")
    logger.info("record 2 of thread 0")

    # One write carries both lines once the delay has passed.
    text = read_available(read_end, timeout=5)
    assert [line.split(": ", 1)[1] for line in text.splitlines()] == [
        "record 1 of thread 0",
        "record 2 of thread 0",
    ]


def test_warning_is_written_at_once_behind_queued_lines(
    pipe: tuple[io.TextIOWrapper, int],
) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream, delay=60)
    logger = make_logger(handler, "perf.warning")

    logger.info("queued first")
    assert read_available(read_end, timeout=0.1) == ""
    logger.warning("written at once")

    lines = read_available(read_end, timeout=5).splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["queued first", "written at once"]


def test_forked_child_does_not_repeat_the_parents_lines(
    pipe: tuple[io.TextIOWrapper, int],
) -> None:
    stream, read_end = pipe
    handler = log.LineHandler(stream, delay=60)
    logger = make_logger(handler, "perf.fork")
    logger.info("parent line")

    pid = os.fork()
    if pid == 0:
        logger.error("child line")
        os._exit(0)
    os.waitpid(pid, 0)

    lines = read_all(stream, read_end, handler).splitlines()
    assert sorted(line.split(": ", 1)[1] for line in lines) == ["child line", "parent line"]


def test_stream_without_descriptor_falls_back() -> None:
    stream = io.StringIO()
    logger = make_logger(log.LineHandler(stream), "perf.stringio")

    logger.info("record 1 of thread 0")

    assert LINE.match(stream.getvalue().rstrip("\n"))


def test_closed_stream_reports_error(pipe: tuple[io.TextIOWrapper, int]) -> None:
    stream, _ = pipe
    handler = log.LineHandler(stream)
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    logger = make_logger(handler, "perf.closed")
    stream.close()

    logger.info("record 1 of thread 0")

    assert len(errors) == 1


def test_setup_installs_line_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        handler = log.setup("info", "text", stream=io.StringIO())
        assert isinstance(handler, log.LineHandler)
    finally:
        root.handlers = before
        root.setLevel(level)
