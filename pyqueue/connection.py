"""Redis connections: URL parsing, pool sizing and the server version check.

URLs: ``redis://``, ``rediss://`` (TLS), ``unix:///path/to.sock`` and
``redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]``.
The pool blocks when every connection is in use instead of raising
"Too many connections", so worker threads wait for a free connection.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel
from redis.typing import EncodableT

from pyqueue.errors import ConfigError, RedisVersionError

DEFAULT_URL = "redis://localhost:6379/0"
MIN_VERSION = (6, 2)

# BRPOP blocks for 2 s, so a read must be allowed to wait longer than that;
# 5 s more notices a dead connection quickly without ever timing out an idle fetch.
FETCH_TIMEOUT = 2
SOCKET_TIMEOUT = FETCH_TIMEOUT + 5.0


def redis_url(url: str | None = None) -> str:
    """Return ``url``, else ``REDIS_URL``, else the local default."""
    return url or os.environ.get("REDIS_URL") or DEFAULT_URL


def create_redis(
    url: str | None = None,
    *,
    pool_size: int = 10,
    socket_timeout: float = SOCKET_TIMEOUT,
    encoding_errors: str = "surrogateescape",
) -> redis.Redis:
    """Build a client with a blocking pool of at most ``pool_size`` connections.

    Replies are decoded as UTF-8 with ``encoding_errors``, by default
    surrogateescape, so a job that a foreign producer wrote with invalid UTF-8
    is still read. Such a string encodes back to its original bytes, so LREM
    and ZREM of the raw string find it and a retry keeps its bytes.
    """
    url = redis_url(url)
    options: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": encoding_errors,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), 2),
    }
    scheme = urlparse(url).scheme
    if scheme == "redis+sentinel":
        return _sentinel_client(url, pool_size, options)
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"redis_url {url!r} has the unsupported scheme {scheme!r}; "
            "use redis://, rediss://, unix:// or redis+sentinel://"
        )
    if scheme == "unix":
        # Unix sockets have no TCP keepalive; redis-py rejects the option there.
        options.pop("socket_keepalive")
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=20, **options
    )
    return redis.Redis(connection_pool=pool)


def _sentinel_client(url: str, pool_size: int, options: dict[str, Any]) -> redis.Redis:
    parsed = urlparse(url)
    hosts = []
    for part in parsed.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parsed.path.split("/") if p]
    if not path:
        raise ConfigError(
            f"redis_url {url!r} names no Sentinel service; "
            "write redis+sentinel://host:26379/service_name[/db]"
        )
    service = path[0]
    db = int(path[1]) if len(path) > 1 else 0
    password = unquote(parsed.password) if parsed.password else None
    sentinel = Sentinel(hosts, socket_timeout=options["socket_connect_timeout"])
    master: redis.Redis = sentinel.master_for(
        service, db=db, password=password, max_connections=pool_size, **options
    )
    return master


def server_version(client: redis.Redis) -> tuple[int, ...]:
    """Return the server's version as a tuple of ints, e.g. ``(7, 0, 15)``."""
    info: dict[str, Any] = client.info("server")
    text = str(info.get("redis_version", "0"))
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def check_server_version(client: redis.Redis) -> tuple[int, ...]:
    """Raise RedisVersionError when the server is older than Redis 6.2."""
    version = server_version(client)
    if version < MIN_VERSION:
        found = ".".join(str(part) for part in version)
        raise RedisVersionError(
            f"Redis {found} is too old: pyqueue needs Redis 6.2 or newer "
            "(for ZRANGE ... BYSCORE and LMOVE); upgrade the server or point REDIS_URL elsewhere"
        )
    return version


def send_commands(client: redis.Redis, commands: Sequence[Sequence[EncodableT]]) -> list[Any]:
    """Send ``commands`` in one round trip and return their replies, as a plain pipeline would.

    redis-py's ``Pipeline`` spends about as much CPU per call as the round
    trip itself takes, which halves a one-at-a-time enqueue. This writes the
    packed commands on one pooled connection and reads one reply per command,
    with the connection's retry policy, as ``Pipeline.execute`` does. A reply
    that is an error raises ``ResponseError`` and closes the connection, so
    no unread reply is left for the next user.
    """
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        replies: list[Any] = connection.retry.call_with_retry(
            lambda: _round_trip(connection, commands),
            lambda _error: connection.disconnect(),
        )
    finally:
        pool.release(connection)
    return replies


def _round_trip(connection: Any, commands: Sequence[Sequence[EncodableT]]) -> list[Any]:
    connection.send_packed_command(connection.pack_commands(commands))
    try:
        return [connection.read_response() for _ in commands]
    except redis.ResponseError:
        connection.disconnect()
        raise


class DirectScript:
    """A Lua script whose calls go through ``send_commands`` instead of redis-py's Script.

    The batch fetches call their script once per batch of up to ten jobs,
    and redis-py's command layer spent about half again the CPU of the
    bare round trip (72 against 47 us per call on the benchmark machine).
    Called like redis-py's Script, with ``keys`` and ``args``. When Redis no
    longer has the script (a restart or SCRIPT FLUSH), it is loaded and the
    call is sent again.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.script = client.register_script(source)

    def __call__(self, keys: Sequence[EncodableT], args: Sequence[EncodableT]) -> Any:
        try:
            return self._evalsha(keys, args)
        except redis.exceptions.NoScriptError:
            self.script.sha = self.client.script_load(self.script.script)
            return self._evalsha(keys, args)

    def _evalsha(self, keys: Sequence[EncodableT], args: Sequence[EncodableT]) -> Any:
        command = ["EVALSHA", self.script.sha, len(keys), *keys, *args]
        return send_commands(self.client, [command])[0]
