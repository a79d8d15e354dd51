"""Redis URLs of every supported scheme, against real servers started here."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pyqueue.config import build
from pyqueue.connection import (
    DirectScript,
    check_server_version,
    create_redis,
    send_commands,
)
from pyqueue.errors import ConfigError, RedisVersionError
from tests.fixtures.redis_server import free_port, redis_server_binary


def start_server(args: list[str], directory: Path) -> subprocess.Popen[bytes]:
    command = [redis_server_binary(), *args, "--save", "", "--dir", str(directory)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server did not answer within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=10)


def round_trip(conn: redis.Redis) -> None:
    conn.set("pyqueue:test", "café")
    assert conn.get("pyqueue:test") == "café"


def test_unix_socket_url(tmp_path: Path, servers: list[subprocess.Popen[bytes]]) -> None:
    socket_path = tmp_path / "redis.sock"
    servers.append(start_server(["--port", "0", "--unixsocket", str(socket_path)], tmp_path))
    wait_until(socket_path.exists)

    conn = create_redis(f"unix://{socket_path}?db=0")

    wait_until(conn.ping)
    round_trip(conn)
    conn.close()


def make_certificates(directory: Path) -> Path:
    """Write a throwaway CA and a server certificate for 127.0.0.1; return the CA path."""
    steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt"
        " -days 2 -extfile ext.cnf",
    ]
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for step in steps:
        subprocess.run(["openssl", *step.split()], cwd=directory, check=True, capture_output=True)
    return directory / "ca.crt"


def test_tls_url(tmp_path: Path, servers: list[subprocess.Popen[bytes]]) -> None:
    ca = make_certificates(tmp_path)
    port = free_port()
    servers.append(
        start_server(
            ["--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
             "--tls-cert-file", str(tmp_path / "server.crt"),
             "--tls-key-file", str(tmp_path / "server.key"),
             "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"],
            tmp_path,
        )
    )  # fmt: skip

    conn = create_redis(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")

    wait_until(conn.ping)
    round_trip(conn)
    conn.close()


def test_sentinel_url(tmp_path: Path, servers: list[subprocess.Popen[bytes]]) -> None:
    master_port = free_port()
    servers.append(start_server(["--port", str(master_port), "--bind", "127.0.0.1"], tmp_path))
    sentinel_port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor pyqueue-main 127.0.0.1 {master_port} 1\n"
    )
    command = [redis_server_binary(), str(config), "--sentinel"]
    servers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=tmp_path))
    wait_until(redis.Redis(port=sentinel_port).ping)

    conn = create_redis(f"redis+sentinel://127.0.0.1:{sentinel_port}/pyqueue-main/0")

    wait_until(conn.ping)
    round_trip(conn)
    assert redis.Redis(port=master_port, decode_responses=True).get("pyqueue:test") == "café"
    conn.close()


def test_sentinel_url_needs_service_name() -> None:
    with pytest.raises(ConfigError, match="names no Sentinel service"):
        create_redis("redis+sentinel://127.0.0.1:26379")


def test_unknown_scheme_rejected() -> None:
    with pytest.raises(ConfigError, match="unsupported scheme 'http'"):
        create_redis("http://127.0.0.1:6379")


class FakeInfo:
    def __init__(self, version: str) -> None:
        self.version = version

    def info(self, section: str) -> dict[str, str]:
        return {"redis_version": self.version}


def test_old_server_rejected_with_its_version() -> None:
    with pytest.raises(RedisVersionError, match=r"Redis 6\.0\.9 is too old"):
        check_server_version(FakeInfo("6.0.9"))  # type: ignore[arg-type]


def test_supported_server_version(redis_url: str) -> None:
    conn = create_redis(redis_url)
    assert check_server_version(conn) >= (6, 2)
    assert check_server_version(FakeInfo("6.2.0")) == (6, 2, 0)  # type: ignore[arg-type]
    conn.close()


def test_pool_follows_concurrency(redis_url: str) -> None:
    settings = build({"redis_url": redis_url, "concurrency": 12})
    conn = create_redis(redis_url, pool_size=settings.pool_size)

    assert settings.pool_size == 17
    assert conn.connection_pool.max_connections == 17
    conn.close()


def test_hiredis_parser_in_use(redis_url: str) -> None:
    conn = create_redis(redis_url)
    conn.ping()
    connection = conn.connection_pool.get_connection()
    try:
        assert type(connection._parser).__name__ == "_HiredisParser"
    finally:
        conn.connection_pool.release(connection)
        conn.close()


def test_send_commands_returns_each_reply(r: redis.Redis) -> None:
    replies = send_commands(r, [["SADD", "queues", "a", "b"], ["LPUSH", "queue:a", "x", "y"]])

    assert replies == [2, 2]
    assert r.lrange("queue:a", 0, -1) == ["y", "x"]


def test_send_commands_error_reply_leaves_connection_clean(redis_url: str) -> None:
    """An error reply raises, and the next command on the pool gets its own reply."""
    client = create_redis(redis_url, pool_size=1)
    client.set("text", "not a list")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        send_commands(client, [["LPUSH", "text", "x"], ["PING"]])

    assert client.get("text") == "not a list"
    assert client.echo("next") == "next"
    client.connection_pool.disconnect()


def test_send_commands_retries_on_a_killed_connection(redis_url: str) -> None:
    client = create_redis(redis_url, pool_size=1)
    client_id = client.client_id()
    other = create_redis(redis_url, pool_size=1)
    other.client_kill_filter(_id=client_id)

    assert send_commands(client, [["SADD", "queues", "c"]]) == [1]
    assert client.client_id() != client_id
    client.connection_pool.disconnect()
    other.connection_pool.disconnect()


def test_direct_script_loads_itself_again_after_a_flush(r: redis.Redis) -> None:
    script = DirectScript(
        r, "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])"
    )

    assert script(keys=["queue:a"], args=["x"]) == 1
    r.script_flush()
    assert script(keys=["queue:a"], args=["y"]) == 2

    assert r.lrange("queue:a", 0, -1) == ["x", "y"]
    assert r.script_exists(script.script.sha) == [True]


def test_direct_script_error_reply_raises(r: redis.Redis) -> None:
    r.set("text", "not a list")
    script = DirectScript(r, "return redis.call('LPUSH', KEYS[1], ARGV[1])")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        script(keys=["text"], args=["x"])

    assert r.echo("next") == "next"
