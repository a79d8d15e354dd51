"""Per-process metrics: the events observer, the served endpoint and its values."""

from __future__ import annotations

import platform
import socket
from collections.abc import Iterator

import pytest

import pyqueue
from pyqueue import events
from pyqueue.config import Settings
from pyqueue.errors import ConfigError
from pyqueue.metrics import ProcessEndpoint, ProcessMetrics, start_process_metrics
from tests.metrics.scrape import names, scrape, value

MAILER = {"queue": "mail", "class": "Mailer"}
REPORT = {"queue": "default", "class": "Report"}


class StubLauncher:
    concurrency = 7


@pytest.fixture
def endpoint() -> Iterator[ProcessEndpoint]:
    """Per-process metrics served on a free loopback port."""
    settings = Settings(metrics_port=None, metrics_host="127.0.0.1")
    running = start_process_metrics(settings, StubLauncher())
    try:
        yield running
    finally:
        running.stop()


def run_job(queue: str, job_class: str, elapsed: float, outcome: str) -> None:
    """Notify the observers as the processor does for one job."""
    events.job_started(queue, job_class)
    events.job_finished(queue, job_class, elapsed, outcome)


def test_endpoint_counts_outcomes(endpoint: ProcessEndpoint) -> None:
    assert endpoint.server is not None
    for _ in range(3):
        run_job("mail", "Mailer", 0.02, events.DONE)
    run_job("mail", "Mailer", 0.3, events.RETRIED)
    run_job("mail", "Mailer", 0.4, events.DEAD)
    run_job("mail", "Mailer", 0.1, events.DISCARDED)
    run_job("default", "Report", 2.0, events.DONE)
    run_job("default", "Report", 9.0, events.REQUEUED)

    samples = scrape(endpoint.server.url)

    assert value(samples, "pyqueue_jobs_processed_total", **MAILER) == 6
    assert value(samples, "pyqueue_jobs_failed_total", **MAILER) == 3
    assert value(samples, "pyqueue_jobs_retried_total", **MAILER) == 1
    assert value(samples, "pyqueue_jobs_dead_total", **MAILER) == 1
    assert value(samples, "pyqueue_jobs_processed_total", **REPORT) == 1
    assert value(samples, "pyqueue_jobs_failed_total", **REPORT) is None


def test_endpoint_duration_histogram(endpoint: ProcessEndpoint) -> None:
    assert endpoint.server is not None
    run_job("mail", "Mailer", 0.02, events.DONE)
    run_job("mail", "Mailer", 0.3, events.RETRIED)
    run_job("mail", "Mailer", 700.0, events.DONE)
    run_job("mail", "Mailer", 5.0, events.REQUEUED)

    samples = scrape(endpoint.server.url)

    assert value(samples, "pyqueue_job_duration_seconds_count", **MAILER) == 3
    assert value(samples, "pyqueue_job_duration_seconds_sum", **MAILER) == pytest.approx(700.32)
    assert value(samples, "pyqueue_job_duration_seconds_bucket", le="0.025", **MAILER) == 1
    assert value(samples, "pyqueue_job_duration_seconds_bucket", le="0.5", **MAILER) == 2
    assert value(samples, "pyqueue_job_duration_seconds_bucket", le="600.0", **MAILER) == 2
    assert value(samples, "pyqueue_job_duration_seconds_bucket", le="+Inf", **MAILER) == 3


def test_endpoint_busy_and_concurrency(endpoint: ProcessEndpoint) -> None:
    assert endpoint.server is not None
    events.job_started("mail", "Mailer")
    events.job_started("mail", "Mailer")
    events.job_started("default", "Report")

    during = scrape(endpoint.server.url)
    events.job_finished("mail", "Mailer", 0.1, events.DONE)
    events.job_finished("mail", "Mailer", 0.1, events.REQUEUED)
    events.job_finished("default", "Report", 0.1, events.RETRIED)
    after = scrape(endpoint.server.url)

    assert value(during, "pyqueue_busy_workers") == 3
    assert value(after, "pyqueue_busy_workers") == 0
    assert value(after, "pyqueue_concurrency") == 7


def test_endpoint_serves_build_and_process_info(endpoint: ProcessEndpoint) -> None:
    assert endpoint.server is not None
    samples = scrape(endpoint.server.url)

    build = value(
        samples,
        "pyqueue_build_info",
        version=pyqueue.__version__,
        python=platform.python_version(),
    )
    assert build == 1
    # prometheus-client's default registry: the process_* metrics of this interpreter.
    assert "process_resident_memory_bytes" in names(samples)
    assert "pyqueue_queue_size" not in names(samples)


def test_endpoint_stop_unsubscribes_and_closes(endpoint: ProcessEndpoint) -> None:
    assert endpoint.server is not None
    url = endpoint.server.url
    port = endpoint.server.port

    endpoint.stop()
    run_job("mail", "Mailer", 0.1, events.DONE)

    labels = {"queue": "mail", "class": "Mailer"}
    processed = endpoint.metrics.registry.get_sample_value("pyqueue_jobs_processed_total", labels)
    assert processed is None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"{url} still accepts connections"


def test_endpoint_rejects_busy_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(metrics_port=port)

        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            start_process_metrics(settings)


def test_endpoint_concurrency_from_settings() -> None:
    running = start_process_metrics(Settings(concurrency=12))
    try:
        assert running.server is not None
        samples = scrape(running.server.url)
    finally:
        running.stop()

    assert value(samples, "pyqueue_concurrency") == 12


def test_observer_ignores_unknown_outcome() -> None:
    metrics = ProcessMetrics()

    metrics.job_started("mail", "Mailer")
    metrics.job_finished("mail", "Mailer", 0.1, "vanished")

    assert metrics.registry.get_sample_value("pyqueue_busy_workers") == 0
    labels = {"queue": "mail", "class": "Mailer"}
    assert metrics.registry.get_sample_value("pyqueue_jobs_processed_total", labels) is None
