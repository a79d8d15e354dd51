"""Fixtures of the performance tests.

A ``pyqueue run --processes N`` subprocess on the private Redis, stopped
after the test, and a pipe with a logger on it for the log handler tests.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pyqueue import log

ROOT = Path(__file__).resolve().parents[2]
PYQUEUE = str(Path(sys.executable).parent / "pyqueue")

# Quick heartbeats and a short stop timeout, so the tests wait little; no cron poller.
FAST_ENV = {
    "PYQUEUE_HEARTBEAT_INTERVAL": "0.2",
    "PYQUEUE_TIMEOUT": "1",
    "PYQUEUE_CRON_POLL_INTERVAL": "0",
    "PYQUEUE_POLL_INTERVAL_AVERAGE": "60",
}


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it returns a true value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate.__name__}")
        time.sleep(0.05)


def child_pids(pid: int) -> list[int]:
    """Return the pids of the direct children of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(each) for each in text.split()]


def process_state(pid: int) -> str:
    """Return the state letter from /proc (R, S, T for stopped, Z for zombie), or "" if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Return True while ``pid`` exists and is not a zombie."""
    return process_state(pid) not in ("", "Z")


class SupervisorProcess:
    """A running supervisor: its pid, its children and their registered identities."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log
        self.seen_children: set[int] = set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        pids = child_pids(self.pid)
        self.seen_children.update(pids)
        return pids

    def wait_for_children(self, conn: redis.Redis, count: int) -> list[int]:
        """Wait until ``count`` children run and each has registered its identity."""

        def registered() -> list[int] | None:
            pids = self.children()
            if len(pids) == count and set(pids) <= set(registered_pids(conn)):
                return pids
            return None

        pids: list[int] = wait_for(registered, timeout=15)
        return pids

    def wait_for_new_child(self, known: set[int]) -> int:
        """Wait until a child runs whose pid is not in ``known``; return its pid."""

        def new_child() -> int:
            fresh = set(self.children()) - known
            return fresh.pop() if fresh else 0

        pid: int = wait_for(new_child)
        return pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # A child that outlived a killed supervisor is one this test started.
        for pid in self.seen_children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def registered_pids(conn: redis.Redis) -> list[int]:
    """Return the pids in the info of every process hash in ``processes``."""
    pids = []
    for identity in conn.smembers("processes"):
        info = conn.hget(identity, "info")
        if info:
            pids.append(int(json.loads(info)["pid"]))
    return pids


SupervisorFactory = Callable[..., SupervisorProcess]


@pytest.fixture
def supervisor(redis_url: str, tmp_path: Path) -> Iterator[SupervisorFactory]:
    """Start ``pyqueue run --processes N`` with the given flags; stop it after the test."""
    started: list[SupervisorProcess] = []

    def factory(*flags: str, processes: int = 2) -> SupervisorProcess:
        log = tmp_path / f"supervisor-{len(started)}.log"
        command = [PYQUEUE, "run", "-r", "tests.perf.jobs", "--processes", str(processes), *flags]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **FAST_ENV, "REDIS_URL": redis_url},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        handle = SupervisorProcess(process, log)
        started.append(handle)
        return handle

    try:
        yield factory
    finally:
        for handle in started:
            handle.stop()


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A text stream over the write end of a pipe, and the read end."""
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115
    try:
        yield stream, read_end
    finally:
        stream.close()
        os.close(read_end)


def make_logger(
    handler: logging.Handler, name: str, formatter: logging.Formatter | None = None
) -> logging.Logger:
    """Return logger ``name`` with ``handler`` as its only handler, as ``log.setup`` sets it up."""
    handler.setFormatter(formatter or log.TextFormatter())
    handler.addFilter(log.SecretFilter())
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.filters = []
    logger.setLevel(logging.INFO)
    return logger


def read_all(stream: io.TextIOWrapper, read_end: int, handler: logging.Handler) -> str:
    """Flush ``handler``, close the write end and return all that the pipe received."""
    handler.flush()
    stream.close()
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")
