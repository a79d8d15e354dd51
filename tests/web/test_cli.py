"""``pyqueue web``: the dashboard served alone by waitress in its own process."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from click.testing import CliRunner

from pyqueue.cli import main
from tests.fixtures.redis_server import free_port
from tests.web import demo

PYQUEUE = [sys.executable, "-c", "from pyqueue.cli import main; main()"]


@contextmanager
def web_process(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``pyqueue web`` on a free loopback port; yield its URL once it responds."""
    port = free_port()
    command = [*PYQUEUE, "web", "--host", "127.0.0.1", "--port", str(port), *args]
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
        assert process.returncode == 0, output
        assert "web: stopped" in output


def wait_until_up(url: str, process: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"pyqueue web exited early: {process.stdout and process.stdout.read()}"
            )
        try:
            urllib.request.urlopen(url + "/static/app.css", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it responds, if only with 401
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"pyqueue web did not answer on {url} within {timeout} s")


def fetch(url: str, authorization: str | None = None, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serves_with_basic_auth(redis_url: str, r: redis.Redis) -> None:
    demo.seed(r)
    env = {"PYQUEUE_WEB_PASSWORD": "pw-from-env"}
    with web_process(
        "--redis-url", redis_url, "--username", "ops", "--prefix", "/jobs", env=env
    ) as url:
        assert fetch(url + "/jobs/")[0] == 401
        token = "Basic " + base64.b64encode(b"ops:pw-from-env").decode()
        status, body = fetch(url + "/jobs/queues", token)
        assert status == 200
        assert 'href="/jobs/queues/mail"' in body


def test_plain_post_without_token_rejected(redis_url: str, r: redis.Redis) -> None:
    """A POST from outside a dashboard page (no cookie, no token) changes nothing."""
    demo.seed(r)
    with web_process("--redis-url", redis_url) as url:
        status, body = fetch(url + "/dead", data=b"action=delete&scope=all")
        assert status == 403
        assert "CSRF token" in body
        assert r.zcard("dead") == 3


def test_read_only_and_hidden_args(redis_url: str, r: redis.Redis) -> None:
    demo.seed(r)
    with web_process("--redis-url", redis_url, "--read-only", "--hide-args") as url:
        status, body = fetch(url + "/retries")
        assert status == 200
        assert demo.SECRET_ARGUMENT not in body
        assert 'method="post"' not in body


def test_username_without_password() -> None:
    result = CliRunner().invoke(
        main, ["web", "--username", "ops"], env={"PYQUEUE_WEB_PASSWORD": ""}
    )
    assert result.exit_code == 2
    assert "both --username and --password" in result.output


def test_unreachable_redis_exits_3() -> None:
    # In a process of its own, because the command sets up logging for the whole process.
    url = f"redis://127.0.0.1:{free_port()}/0"
    command = [*PYQUEUE, "web", "--redis-url", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "cannot reach Redis" in result.stderr


def test_port_in_use_exits_5(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # In a process of its own, because waitress leaves the failed socket open.
        command = [*PYQUEUE, "web", "--redis-url", redis_url, "--port", str(port)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 5
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_help() -> None:
    result = CliRunner().invoke(main, ["web", "--help"])
    assert result.exit_code == 0
    assert "--read-only" in result.output
    assert "--hide-args" in result.output
