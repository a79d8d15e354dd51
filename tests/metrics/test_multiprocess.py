"""Host metrics over several worker processes: gauges of an exited child are dropped.

The test plays the supervisor. It prepares the shared directory, forks two
children that record jobs through pyqueue.events and serves the host
endpoint. Then it ends one child and checks that the child's busy threads
leave the gauges while its processed jobs stay in the counters.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from prometheus_client import values

from pyqueue import events
from pyqueue.config import Settings
from pyqueue.errors import ConfigError
from pyqueue.metrics import (
    MetricsServer,
    child_exited,
    multiprocess,
    prepare_multiprocess_dir,
    start_host_metrics,
    start_process_metrics,
)
from tests.metrics.scrape import scrape, value

NOOP = {"queue": "default", "class": "NoopJob"}


@pytest.fixture
def shared_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Prepare the multiprocess directory; the environment and value class are restored after."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv(multiprocess.ENV, str(tmp_path / "unused"))
    return prepare_multiprocess_dir(tmp_path / "metrics")


def record_jobs(done: int, running: int, control: Connection) -> None:
    """Child process: finish ``done`` jobs, keep ``running`` jobs busy until released."""
    endpoint = start_process_metrics(Settings(concurrency=5))
    assert endpoint.server is None
    for _ in range(done):
        events.job_started("default", "NoopJob")
        events.job_finished("default", "NoopJob", 0.002, events.DONE)
    for _ in range(running):
        events.job_started("default", "SleepJob")
    control.send("ready")
    control.poll(60)
    for _ in range(running):
        events.job_finished("default", "SleepJob", 1.0, events.DONE)
    endpoint.stop()


class Children:
    """Two forked children: A finished 100 jobs and runs 5, B finished 10 and runs 2.

    Each child has its own pipe, because a multiprocessing.Event whose waiter
    was killed blocks the next set() forever.
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.controls: list[Connection] = []
        for done, running in ((100, 5), (10, 2)):
            control, child_end = context.Pipe()
            process = context.Process(target=record_jobs, args=(done, running, child_end))
            process.start()
            assert control.poll(20), "child did not record its jobs within 20 s"
            assert control.recv() == "ready"
            self.processes.append(process)
            self.controls.append(control)

    def stop(self) -> None:
        for control, process in zip(self.controls, self.processes, strict=True):
            if process.is_alive():
                control.send("release")
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
            control.close()


@pytest.fixture
def host(shared_dir: Path) -> Iterator[tuple[Children, MetricsServer]]:
    children = Children()
    server = start_host_metrics(Settings(metrics_port=None))
    try:
        yield children, server
    finally:
        server.stop()
        children.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_host_drops_exited_child_gauges(
    host: tuple[Children, MetricsServer], shared_dir: Path, signum: int
) -> None:
    children, server = host
    first = children.processes[0]
    before = scrape(server.url)

    os.kill(first.pid or 0, signum)
    first.join(10)
    # Until the supervisor reaps the child, its gauge file is still summed.
    stale = scrape(server.url)
    child_exited(first.pid or 0)
    after = scrape(server.url)

    assert value(before, "pyqueue_busy_workers") == 7
    assert value(before, "pyqueue_concurrency") == 10
    assert value(before, "pyqueue_jobs_processed_total", **NOOP) == 110
    assert value(stale, "pyqueue_busy_workers") == 7
    assert value(after, "pyqueue_busy_workers") == 2
    assert value(after, "pyqueue_concurrency") == 5
    assert value(after, "pyqueue_jobs_processed_total", **NOOP) == 110
    assert value(after, "pyqueue_job_duration_seconds_count", **NOOP) == 110
    pids = {dict(labels).get("pid") for _, labels in after}
    assert str(first.pid) not in pids
    assert not list(shared_dir.glob(f"gauge_*_{first.pid}.db"))
    assert list(shared_dir.glob(f"counter_{first.pid}.db"))


def test_host_counts_finished_children(host: tuple[Children, MetricsServer]) -> None:
    children, server = host

    children.stop()
    for process in children.processes:
        child_exited(process.pid or 0)
    samples = scrape(server.url)

    assert value(samples, "pyqueue_busy_workers") == 0
    assert value(samples, "pyqueue_concurrency") == 0
    assert value(samples, "pyqueue_jobs_processed_total", **NOOP) == 110
    assert (
        value(samples, "pyqueue_jobs_processed_total", queue="default", **{"class": "SleepJob"})
        == 7
    )


def test_prepare_removes_only_value_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv(multiprocess.ENV, "unused")
    folder = tmp_path / "metrics"
    folder.mkdir()
    for name in ("counter_12.db", "gauge_livesum_12.db", "histogram_9.db", "notes.txt"):
        (folder / name).write_text("x")

    prepare_multiprocess_dir(folder)

    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]
    assert os.environ[multiprocess.ENV] == str(folder)


def test_host_metrics_need_prepared_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(multiprocess.ENV, raising=False)

    with pytest.raises(ConfigError, match="call prepare_multiprocess_dir"):
        start_host_metrics(Settings(metrics_port=None))


def test_host_scrape_skips_empty_value_file(tmp_path: Path) -> None:
    """A child that has created its value file but not sized it yet must not fail a scrape."""
    import struct

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from pyqueue.metrics.server import StartupSafeCollector

    (tmp_path / "counter_424242.db").write_bytes(b"")
    plain = CollectorRegistry()
    MultiProcessCollector(plain, path=str(tmp_path))  # type: ignore[no-untyped-call]
    safe = CollectorRegistry()
    StartupSafeCollector(safe, path=str(tmp_path))

    with pytest.raises(struct.error):
        generate_latest(plain)
    assert generate_latest(safe) == b""
