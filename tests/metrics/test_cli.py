"""``pyqueue metrics serve`` as a user runs it: a separate process on a loopback port."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner

from pyqueue.cli import main
from tests.fixtures.redis_server import free_port
from tests.metrics.scrape import scrape, value

START = "from pyqueue.cli import main; main()"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Remove the handler that the in-process command installs on the root logger."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_pyqueue", False):
            root.removeHandler(handler)
    root.setLevel(level)


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exporter exited early: {process.communicate()}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"exporter did not listen on port {port} within {timeout} s")


def test_serve_exports_until_sigterm(r: redis.Redis, redis_url: str) -> None:
    r.sadd("queues", "default")
    r.lpush("queue:default", '{"class":"EchoJob","args":[],"jid":"a"}')
    r.set("stat:processed", 42)
    port = free_port()
    command = [sys.executable, "-c", START, "metrics", "serve"]
    command += ["--port", str(port), "--redis-url", redis_url, "--log-format", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)

    assert value(samples, "pyqueue_queue_size", queue="default") == 1
    assert value(samples, "pyqueue_processed_jobs_total") == 42
    assert value(samples, "pyqueue_redis_up") == 1
    assert process.returncode == 0, stderr
    messages = [json.loads(line)["msg"] for line in stdout.splitlines()]
    assert messages == [
        f"metrics: exporting {redis_url} on http://127.0.0.1:{port}/metrics",
        "metrics: stopped",
    ]


def test_serve_rejects_busy_port(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(
            main, ["metrics", "serve", "--port", str(port), "--redis-url", redis_url]
        )

    assert result.exit_code == 5
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.output


def test_serve_rejects_bad_redis_url() -> None:
    result = CliRunner().invoke(
        main, ["metrics", "serve", "--port", "0", "--redis-url", "http://127.0.0.1:1/"]
    )

    assert result.exit_code == 5
    assert "unsupported scheme 'http'" in result.output
