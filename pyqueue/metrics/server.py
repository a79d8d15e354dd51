"""The /metrics HTTP endpoint of a worker process or of the standalone exporter.

``start_process_metrics`` is what the launcher calls when ``metrics_port`` is
set: it subscribes a ProcessMetrics observer to pyqueue.events and serves
it, together with the build info, the interpreter's default registry and,
with ``metrics_cluster``, the cluster collector. Under a multiprocess
supervisor the child only records, and the supervisor serves the host's
endpoint with ``start_host_metrics``.
"""

from __future__ import annotations

import glob
import logging
import os
import platform
import socket
import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pyqueue import __version__, events
from pyqueue.config import Settings
from pyqueue.errors import ConfigError
from pyqueue.metrics import multiprocess
from pyqueue.metrics.cluster import ClusterCollector, cluster_client
from pyqueue.metrics.process import ProcessMetrics

logger = logging.getLogger(__name__)


class Launcher(Protocol):
    """The launcher attribute that start_process_metrics reads."""

    @property
    def concurrency(self) -> int: ...


class BuildInfoCollector:
    """``pyqueue_build_info{version, python}``, always 1."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "pyqueue_build_info",
            "pyqueue and Python versions of this endpoint; the value is always 1.",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info


class DefaultRegistryCollector:
    """Everything in prometheus-client's default registry.

    That is the process_* and python_* metrics plus any metric the
    application defines itself, served on pyqueue's port as well.
    """

    def collect(self) -> Iterable[Metric]:
        return prometheus_client.REGISTRY.collect()


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not print a line per scrape to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running /metrics endpoint: prometheus-client's WSGI app in a daemon thread.

    Port 0 picks a free port, and ``port`` is the one in use. Raises
    ConfigError when the address cannot be bound.
    """

    # Seconds between shutdown checks of serve_forever; stop() waits at most this long.
    POLL_INTERVAL = 0.05

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        app = prometheus_client.make_wsgi_app(registry)
        try:
            self._server = make_server(host, port, app, server_class, _QuietHandler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); "
                "choose another metrics port or stop the process that uses it"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(self.POLL_INTERVAL,),
            name="pyqueue-metrics",
            daemon=True,
        )
        self._thread.start()
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket; waits for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class ProcessEndpoint:
    """The metrics of a running worker process: the observer and its server.

    ``server`` is None in a multiprocess child, whose supervisor serves.
    """

    def __init__(self, metrics: ProcessMetrics, server: MetricsServer | None) -> None:
        self.metrics = metrics
        self.server = server

    def stop(self) -> None:
        """Unsubscribe the observer and stop the server."""
        events.unsubscribe(self.metrics)
        if self.server is not None:
            self.server.stop()


def serving_registry(*collectors: Collector) -> CollectorRegistry:
    """Build the registry an endpoint serves: the collectors plus the build info."""
    registry = CollectorRegistry()
    for collector in (*collectors, BuildInfoCollector()):
        registry.register(collector)
    return registry


def cluster_collectors(settings: Settings) -> list[Collector]:
    """Return [ClusterCollector] when ``settings.metrics_cluster`` is set, else []."""
    if not settings.metrics_cluster:
        return []
    return [ClusterCollector(cluster_client(settings.redis_url))]


def start_process_metrics(settings: Settings, launcher: Launcher | None = None) -> ProcessEndpoint:
    """Start recording job metrics in this process and serve them on the metrics port.

    Reads ``metrics_host``, ``metrics_port`` and ``metrics_cluster`` from
    ``settings`` and the thread count from ``launcher.concurrency`` (else
    ``settings.concurrency``). When a supervisor has prepared a multiprocess
    directory, the values go to that directory and nothing is served here.
    Call ``stop()`` on the result when the process stops.
    """
    concurrency = launcher.concurrency if launcher is not None else settings.concurrency
    if multiprocess.directory() is not None:
        # A new private registry per child: only the mmap files matter here.
        metrics = ProcessMetrics(concurrency=concurrency)
        events.subscribe(metrics)
        logger.info("metrics: recording to %s for the host endpoint", multiprocess.directory())
        return ProcessEndpoint(metrics, None)

    metrics = ProcessMetrics(concurrency=concurrency)
    registry = serving_registry(
        metrics.registry,
        DefaultRegistryCollector(),
        *cluster_collectors(settings),
    )
    server = MetricsServer(registry, settings.metrics_host, settings.metrics_port or 0)
    events.subscribe(metrics)
    logger.info("metrics: serving %s", server.url)
    return ProcessEndpoint(metrics, server)


def start_host_metrics(settings: Settings) -> MetricsServer:
    """Serve the sum over every child process of this host on the metrics port.

    For a supervisor, after ``prepare_multiprocess_dir``. Includes the cluster
    collector when ``settings.metrics_cluster`` is set. Raises ConfigError when
    no multiprocess directory is prepared or the port cannot be bound.
    """
    folder = multiprocess.directory()
    if folder is None or not folder.is_dir():
        raise ConfigError(
            f"{multiprocess.ENV} is not set to a directory; call "
            "prepare_multiprocess_dir() before start_host_metrics()"
        )
    # The supervisor's own zero-valued gauges keep the busy and concurrency
    # series present, at 0, while no child is alive.
    ProcessMetrics(concurrency=0)
    files = CollectorRegistry()
    StartupSafeCollector(files, path=str(folder))  # type: ignore[no-untyped-call]
    registry = serving_registry(files, *cluster_collectors(settings))
    server = MetricsServer(registry, settings.metrics_host, settings.metrics_port or 0)
    logger.info("metrics: serving %s for every process of this host", server.url)
    return server


class StartupSafeCollector(MultiProcessCollector):
    """MultiProcessCollector that skips the value file of a child still starting.

    prometheus-client 0.26 creates a child's ``.db`` file empty and sizes it a
    moment later; a scrape in between raised struct.error and returned 500.
    An empty file holds no values yet, so leaving it out loses nothing.
    """

    def collect(self) -> Iterable[Metric]:
        files = [
            path for path in glob.glob(os.path.join(self._path, "*.db")) if _readable_size(path)
        ]
        metrics: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return metrics


def _readable_size(path: str) -> bool:
    # The first 8 bytes hold the used-length header; a file without them is new.
    try:
        return os.path.getsize(path) >= 8
    except FileNotFoundError:
        return False
