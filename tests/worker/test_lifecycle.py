"""Stopping, quieting and signals, in-process and through a `pyqueue run` subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pyqueue import events
from pyqueue.errors import ConfigError
from pyqueue.fetch import UnitOfWork
from pyqueue.launcher import Launcher
from tests.worker import jobs
from tests.worker.conftest import LaunchFactory, make_settings, payload, wait_for

ROOT = Path(__file__).resolve().parents[2]
SLEEP = "WorkerSuite::SleepJob"
SLICE_SLEEP = "WorkerSuite::SliceSleepJob"
B01_JID = "b01000000000000000000001"


class Worker:
    """A `pyqueue run` subprocess whose output goes to a file."""

    def __init__(self, redis_url: str, log: Path, *args: str) -> None:
        self.log = log
        command = [
            str(Path(sys.executable).with_name("pyqueue")),
            "run",
            "-r",
            "tests.worker.jobs",
            "--redis-url",
            redis_url,
            "-c",
            "2",
            *args,
        ]
        # A one-second heartbeat reports the busy job quickly.
        env = {**os.environ, "PYQUEUE_HEARTBEAT_INTERVAL": "1"}
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        worker = Worker(redis_url, tmp_path / f"worker{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def busy_identity(conn: redis.Redis) -> str | None:
    """Return the identity of a registered process that runs a job."""
    for identity in conn.smembers("processes"):
        if conn.hget(identity, "busy") == "1":
            return str(identity)
    return None


def test_stop_pushes_running_job_back(r: redis.Redis, workers: Any) -> None:
    """A job longer than the timeout goes back to its queue, unchanged and uncounted."""
    raw = payload(SLEEP, [300], B01_JID)
    r.lpush("queue:default", raw)
    worker = workers("-t", "2")
    identity = wait_for(lambda: busy_identity(r), timeout=15)

    stopped_at = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - stopped_at <= 5.0

    assert r.lrange("queue:default", 0, -1) == [raw]
    job = json.loads(r.lindex("queue:default", 0) or "{}")
    assert (job["jid"], job["class"], job["args"]) == (B01_JID, SLEEP, [300])
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0
    assert r.get("stat:processed") in (None, "0")
    assert r.get("stat:failed") in (None, "0")
    assert not r.sismember("processes", identity)
    assert r.exists(f"{identity}:work", f"{identity}:workers") == 0
    assert "pushed back to queue default" in worker.output()

    # A fresh process fetches the job again.
    again = workers("-t", "30")
    wait_for(lambda: "starting as" in again.output(), timeout=15)
    second = wait_for(lambda: busy_identity(r), timeout=5)
    assert second != identity

    # TSTP quiets the process, TTIN logs the thread stacks.
    again.send(signal.SIGTSTP)
    wait_for(lambda: r.hget(second, "quiet") == "true", timeout=3)
    again.send(signal.SIGTTIN)
    wait_for(lambda: "thread pyqueue-processor-" in again.output(), timeout=3)

    # A second TERM ends the 30 s wait at once; the job still goes back.
    again.send(signal.SIGTERM)
    time.sleep(0.3)
    stopped_at = time.monotonic()
    again.send(signal.SIGTERM)
    assert again.wait(timeout=10) == 0
    assert time.monotonic() - stopped_at <= 4.0
    assert r.lrange("queue:default", 0, -1) == [raw]
    assert r.get("stat:processed") in (None, "0")


def test_graceful_stop_lets_job_finish(r: redis.Redis, launch: LaunchFactory) -> None:
    r.lpush("queue:default", payload(SLICE_SLEEP, [0.5], "d" * 24))
    launcher = launch(timeout=10)
    wait_for(lambda: launcher.busy_count() == 1)

    launcher.stop()

    assert r.llen("queue:default") == 0
    assert r.get("stat:processed") == "1"
    assert r.get("stat:failed") == "0"


class Outcomes:
    def __init__(self) -> None:
        self.finished: list[str] = []

    def job_started(self, queue: str, job_class: str) -> None:
        return None

    def job_finished(self, queue: str, job_class: str, elapsed: float, outcome: str) -> None:
        self.finished.append(outcome)


@pytest.fixture
def outcomes() -> Iterator[Outcomes]:
    observer = Outcomes()
    events.subscribe(observer)
    yield observer
    events.unsubscribe(observer)


def test_timeout_pushes_back_and_interrupts(
    r: redis.Redis, launch: LaunchFactory, outcomes: Outcomes
) -> None:
    raw = payload(SLICE_SLEEP, [30], "e" * 24)
    r.lpush("queue:default", raw)
    launcher = launch(timeout=0.5, concurrency=2)
    wait_for(lambda: launcher.busy_count() == 1)
    threads = [processor.thread for processor in launcher.manager.processors()]

    started = time.monotonic()
    launcher.stop()

    assert time.monotonic() - started < 4.5
    assert r.lrange("queue:default", 0, -1) == [raw]
    # Shutdown was raised inside the job, so its thread ended instead of sleeping on.
    wait_for(lambda: not any(thread.is_alive() for thread in threads), timeout=2)
    assert outcomes.finished == [events.REQUEUED]
    assert r.get("stat:processed") is None
    assert r.get("stat:failed") is None
    assert len(jobs.performed) == 1


class FlakyFetcher:
    """Raises an unexpected error on the first fetch, then delegates."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    def retrieve_work(self) -> UnitOfWork | None:
        if not self.failed:
            self.failed = True
            raise ValueError("a bug outside any job")
        unit: UnitOfWork | None = self.inner.retrieve_work()
        return unit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_dead_processor_is_replaced(r: redis.Redis, redis_url: str) -> None:
    launcher = Launcher(make_settings(redis_url, concurrency=3))
    launcher.manager.context.fetcher = FlakyFetcher(launcher.manager.context.fetcher)
    launcher.start()
    try:
        wait_for(lambda: launcher.manager._started == 4)
        processors = launcher.manager.processors()
        assert len(processors) == 3
        assert all(processor.thread.is_alive() for processor in processors)

        r.lpush("queue:default", payload("WorkerSuite::RecordJob", [1], "f" * 24))
        wait_for(lambda: r.llen("queue:default") == 0)
    finally:
        launcher.stop()


def test_failing_jobs_keep_thread_count(r: redis.Redis, launch: LaunchFactory) -> None:
    """Five hundred failing jobs neither kill nor add processor threads."""
    raws = [payload("WorkerSuite::FailJob", [i], f"{i:024x}", retry=False) for i in range(500)]
    launcher = launch(concurrency=5)
    wait_for(lambda: len(launcher.manager.processors()) == 5)
    processors = set(launcher.manager.processors())
    thread_count = threading.active_count()

    r.lpush("queue:default", *raws)
    samples = []
    while len(jobs.performed) < 500:
        samples.append(threading.active_count())
        time.sleep(0.01)
        assert len(samples) < 3000, "jobs did not finish within 30 s"
    wait_for(lambda: r.get("stat:failed") == "500", timeout=5)

    assert set(launcher.manager.processors()) == processors
    assert launcher.manager._started == 5
    assert min(samples) >= thread_count - 1
    assert max(samples) <= thread_count + 1
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0


def test_remote_quiet_stops_fetching(r: redis.Redis, launch: LaunchFactory) -> None:
    launcher = launch(concurrency=2)
    wait_for(lambda: r.hget(launcher.identity, "quiet") == "false")

    r.lpush(f"{launcher.identity}-signals", "TSTP")

    # One beat pops the signal; quiet=true follows without waiting a full interval.
    wait_for(lambda: r.hget(launcher.identity, "quiet") == "true", timeout=1.0)
    assert launcher.manager.quieting
    wait_for(lambda: not launcher.manager.processors(), timeout=4)
    r.lpush("queue:default", payload("WorkerSuite::RecordJob", [1], "1" * 24))
    time.sleep(0.3)
    assert r.llen("queue:default") == 1
    assert r.sismember("processes", launcher.identity)


def test_remote_stop_ends_run(r: redis.Redis, redis_url: str) -> None:
    raw = payload(SLICE_SLEEP, [30], "2" * 24)
    r.lpush("queue:default", raw)
    launcher = Launcher(make_settings(redis_url, timeout=30))
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(launcher.run(install_signals=False)))
    runner.start()
    try:
        wait_for(lambda: r.hget(launcher.identity, "busy") == "1")

        r.lpush(f"{launcher.identity}-signals", "TERM")
        wait_for(lambda: launcher.stop_requested, timeout=2)
        assert runner.is_alive()
        # A second TERM ends the wait for the running job at once.
        r.lpush(f"{launcher.identity}-signals", "TERM")
        runner.join(timeout=6)
    finally:
        launcher.request_stop()
        launcher.request_stop()
        runner.join(timeout=10)

    assert result == [0]
    assert r.lrange("queue:default", 0, -1) == [raw]
    assert not r.sismember("processes", launcher.identity)
    assert os.getpid() == int(launcher.identity.split(":")[1])


def thread_names() -> set[str]:
    return {thread.name for thread in threading.enumerate()}


def test_start_loads_schedule_and_runs_pollers(
    r: redis.Redis, launch: LaunchFactory, tmp_path: Path
) -> None:
    schedule = tmp_path / "schedule.yml"
    schedule.write_text(
        "nightly_report:\n  cron: '0 3 * * *'\n  class: WorkerSuite::RecordJob\n",
        encoding="utf-8",
    )
    launcher = launch(schedule_file=str(schedule), cron_poll_interval=30)

    assert r.smembers("cron_jobs") == {"cron_job:nightly_report"}
    assert {"pyqueue-poller", "pyqueue-cron", "pyqueue-heartbeat"} <= thread_names()

    launcher.quiet()

    wait_for(lambda: not {"pyqueue-poller", "pyqueue-cron"} & thread_names(), timeout=6)
    assert "pyqueue-heartbeat" in thread_names()
    wait_for(lambda: r.hget(launcher.identity, "quiet") == "true", timeout=1)


def test_missing_metrics_module_fails_start(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyqueue.metrics", None)
    launcher = Launcher(make_settings(redis_url, metrics_port=9))
    try:
        with pytest.raises(ConfigError, match="metrics_port"):
            launcher.start()
        assert "pyqueue-heartbeat" not in thread_names()
    finally:
        launcher.stop()


def test_unknown_classes_retried_once(r: redis.Redis, launch: LaunchFactory) -> None:
    """Jobs naming missing classes reach the retry set once each; nothing loops."""
    raws = [
        payload("RemovedJob", [1], "b20a00000000000000000001"),
        payload("app.jobs.missing_module.EchoJob", [1], "b20c00000000000000000001"),
        payload(
            "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
            [{"job_class": "NightlyJob", "arguments": []}],
            "b20b00000000000000000001",
            wrapped="NightlyJob",
        ),
    ]
    r.lpush("queue:default", *raws)
    launcher = launch(concurrency=3)

    wait_for(lambda: r.get("stat:processed") == "3", timeout=10)
    time.sleep(0.5)

    assert r.get("stat:processed") == "3"
    assert r.get("stat:failed") == "3"
    assert r.llen("queue:default") == 0
    entries = [json.loads(member) for member in r.zrange("retry", 0, -1)]
    assert sorted(entry["jid"] for entry in entries) == sorted(
        json.loads(raw)["jid"] for raw in raws
    )
    assert {entry["error_class"] for entry in entries} == {"UnknownJobClass"}
    assert {entry["retry_count"] for entry in entries} == {0}
    assert len(launcher.manager.processors()) == 3
