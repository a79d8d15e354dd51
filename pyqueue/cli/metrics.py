"""``pyqueue metrics serve``: a standalone Prometheus exporter of the cluster metrics."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from pyqueue import log
from pyqueue.cli.common import handle_errors, log_options, redis_url_option
from pyqueue.connection import redis_url as default_redis_url
from pyqueue.metrics.cluster import ClusterCollector, cluster_client
from pyqueue.metrics.server import MetricsServer, serving_registry

logger = logging.getLogger("pyqueue.metrics")

DEFAULT_PORT = 9292


@click.group()
def metrics() -> None:
    """Prometheus metrics."""


@metrics.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port to serve /metrics on (0 picks a free one).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 serves every interface.",
)
@redis_url_option
@log_options
@handle_errors
def serve(port: int, host: str, redis_url: str | None, log_level: str, log_format: str) -> None:
    """Serve queue, set, process and stats metrics read from Redis until SIGTERM or Ctrl-C.

    Run one exporter per Redis database: every scrape reads the whole
    cluster, so several exporters would report the same values.

        pyqueue metrics serve --port 9292 --redis-url redis://localhost:6379/0
    """
    log.setup(log_level, log_format)
    url = default_redis_url(redis_url)
    registry = serving_registry(ClusterCollector(cluster_client(url)))
    server = MetricsServer(registry, host, port)
    # SecretFilter masks a password in the URL before the line is written.
    logger.info("metrics: exporting %s on %s", url, server.url)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not stopping.wait(1.0):
        pass
    server.stop()
    logger.info("metrics: stopped")
