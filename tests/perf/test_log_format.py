"""The cached parts of a log line must equal what they replace."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading

from pyqueue import log


def reference_timestamp(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def timestamp(created: float) -> str:
    return log._utc_timestamp(created)


def test_timestamp_matches_datetime() -> None:
    rng = random.Random(7)
    times = [rng.uniform(0, 2e9) for _ in range(20_000)]
    # Fractions next to a millisecond or second boundary, where rounding matters.
    for second in (0, 1_700_000_000, 1_999_999_999):
        times += [second + fraction for fraction in (0.0, 0.0005, 0.4995, 0.9995, 0.9999995)]

    mismatches = [t for t in times if timestamp(t) != reference_timestamp(t)]

    assert mismatches == []


def test_elapsed_text_matches_rounded_float() -> None:
    rng = random.Random(11)
    values: list[float] = [rng.uniform(0, 0.05) for _ in range(20_000)]
    values += [rng.uniform(0, 5000) for _ in range(20_000)]
    # Halfway cases, whole numbers and values that round up to the next unit.
    values += [0.0, 0.0005, 0.0015, 0.0025, 0.1235, 1.0, 2, 59.9996, 0.9999, 86_400]

    mismatches = [v for v in values if log._elapsed_text(v) != str(round(float(v), 3))]

    assert mismatches == []


def test_thread_id_differs_per_thread() -> None:
    ids: list[str] = []
    thread = threading.Thread(target=lambda: ids.append(log.thread_id()))
    thread.start()
    thread.join()

    assert log.thread_id() == log.thread_id()
    assert ids[0] != log.thread_id()


def test_thread_id_changes_in_forked_child() -> None:
    parent_id = log.thread_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, log.thread_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)

    assert child_id != parent_id


def test_forked_child_logs_its_own_pid() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        line = log.TextFormatter().render(0.0, "INFO", "child", "pyqueue")
        os.write(write_end, line.encode())
        os._exit(0)
    os.close(write_end)
    line = os.read(read_end, 256).decode()
    os.close(read_end)
    os.waitpid(pid, 0)

    assert f" pid={pid} " in line
    assert log._pid == os.getpid()


def test_secret_filter_still_masks_urls() -> None:
    record = logging.LogRecord(
        "pyqueue", logging.INFO, __file__, 1, "url %s", ("redis://:hunter2@host:6379/0",), None
    )

    log.SecretFilter().filter(record)

    assert record.getMessage() == "url redis://:***@host:6379/0"
