"""``pyqueue web``: serve the operators' dashboard alone, through waitress."""

from __future__ import annotations

import ipaddress
import logging
import signal
from types import FrameType

import click
import waitress

from pyqueue import config, log
from pyqueue.api.base import tolerate_invalid_utf8
from pyqueue.cli.common import handle_errors, log_options, redis_url_option
from pyqueue.connection import create_redis
from pyqueue.errors import ConfigError
from pyqueue.web import create_app

logger = logging.getLogger("pyqueue.web")

DEFAULT_PORT = 9393


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port to listen on (0 picks a free one).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 serves every interface.",
)
@redis_url_option
@click.option(
    "-C",
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help="YAML config file (PYQUEUE_CONFIG); sets the dead-set limits and the cron layout.",
)
@click.option(
    "--prefix",
    default="",
    metavar="PATH",
    help="URL path to serve under, e.g. /admin/jobs behind a proxy that keeps the path.",
)
@click.option(
    "--username",
    envvar="PYQUEUE_WEB_USERNAME",
    default=None,
    help="Require HTTP basic auth with this username (PYQUEUE_WEB_USERNAME).",
)
@click.option(
    "--password",
    envvar="PYQUEUE_WEB_PASSWORD",
    default=None,
    help="Basic-auth password; prefer PYQUEUE_WEB_PASSWORD, which `ps` does not show.",
)
@click.option(
    "--secret",
    envvar="PYQUEUE_WEB_SECRET",
    default=None,
    help="Key that signs CSRF tokens (PYQUEUE_WEB_SECRET); default: random per start.",
)
@click.option("--read-only", is_flag=True, help="Hide every action button and reject POSTs.")
@click.option("--hide-args", is_flag=True, help="Show [hidden] instead of job arguments.")
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="waitress worker threads, each holding at most one Redis connection.",
)
@log_options
@handle_errors
def web(
    port: int,
    host: str,
    redis_url: str | None,
    config_file: str | None,
    prefix: str,
    username: str | None,
    password: str | None,
    secret: str | None,
    read_only: bool,
    hide_args: bool,
    threads: int,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the web dashboard until SIGTERM or Ctrl-C.

    PYQUEUE_WEB_PASSWORD=... pyqueue web --username ops --port 9393
    """
    if (username is None) != (password is None):
        raise click.UsageError("basic auth needs both --username and --password, or neither")
    log.setup(log_level, log_format)
    settings = config.load(config_file, {"redis_url": redis_url})
    connection = tolerate_invalid_utf8(create_redis(settings.redis_url, pool_size=threads + 2))
    connection.ping()
    try:
        app = create_app(
            redis=connection,
            settings=settings,
            prefix=prefix,
            username=username,
            password=password,
            read_only=read_only,
            hide_args=hide_args,
            secret=secret,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if app.access.open and not is_loopback(host):
        logger.warning(
            "web: no --username/--password on %s; anyone who reaches it can act on jobs", host
        )
    try:
        serve(app, host, port, threads, app.prefix)
    finally:
        connection.connection_pool.disconnect()


def serve(app: object, host: str, port: int, threads: int, prefix: str = "") -> None:
    """Run waitress until SIGTERM or SIGINT, then close the listening socket."""
    try:
        server = waitress.create_server(app, host=host, port=port, threads=threads, ident="pyqueue")
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc}); choose another --port or --host"
        ) from None

    def request_stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    logger.info(
        "web: serving the dashboard on http://%s:%s%s/", host, server.effective_port, prefix
    )
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.close()
        logger.info("web: stopped")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
