"""Measure when a JobTimeout reaches a thread that is busy in various calls.

    .venv/bin/python -m tests.controls.measure_interrupts

Prints, for each kind of call, whether the limited call raised JobTimeout
and how long after the limit it ended (median and max of five runs).
docs/job-controls.md quotes a run of this script.
"""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable

from pyqueue.timeout import JobTimeout, run_with_time_limit

LIMIT = 0.2
RUNS = 5


def busy_loop() -> None:
    while True:
        pass


def short_sleeps() -> None:
    while True:
        time.sleep(0.05)


def socket_read() -> None:
    left, right = socket.socketpair()
    left.settimeout(1.0)
    try:
        left.recv(1)
    except TimeoutError:
        pass
    finally:
        left.close()
        right.close()


CASES: list[tuple[str, Callable[[], None], float]] = [
    ("a Python loop", busy_loop, LIMIT),
    # Not a multiple of the slice, so the limit falls inside a sleep.
    ("a loop of time.sleep(0.05)", short_sleeps, LIMIT + 0.025),
    ("time.sleep(1)", lambda: time.sleep(1), LIMIT),
    ("Event().wait(1)", lambda: threading.Event().wait(1), LIMIT),
    ("sock.recv() with a 1 s timeout", socket_read, LIMIT),
]


def measure(call: Callable[[], None], limit: float) -> tuple[str, list[float]]:
    outcome = "returned"
    late: list[float] = []
    for _ in range(RUNS):
        started = time.monotonic()
        try:
            run_with_time_limit(limit, call)
            outcome = "returned"
        except JobTimeout:
            outcome = "JobTimeout"
        late.append(time.monotonic() - started - limit)
    return outcome, late


def main() -> None:
    logging.disable(logging.WARNING)
    for name, call, limit in CASES:
        outcome, late = measure(call, limit)
        print(
            f"{name:32} {outcome:10} ended {statistics.median(late) * 1000:6.1f} ms "
            f"after the limit (max {max(late) * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    main()
