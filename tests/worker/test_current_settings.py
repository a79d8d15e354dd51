"""``pyqueue.launcher.current_settings()``: the running worker's settings, seen from job code."""

from __future__ import annotations

import queue

from pyqueue import Job
from pyqueue.config import Settings
from pyqueue.launcher import current_settings
from tests.worker.conftest import LaunchFactory

# What CurrentSettingsJob saw: the worker's settings, or None.
seen: queue.SimpleQueue[Settings | None] = queue.SimpleQueue()


class CurrentSettingsJob(Job, name="WorkerSuite::CurrentSettingsJob"):
    def perform(self) -> None:
        seen.put(current_settings())


def test_none_outside_worker() -> None:
    assert current_settings() is None


def test_job_sees_worker_settings(launch: LaunchFactory) -> None:
    launcher = launch(concurrency=7)

    CurrentSettingsJob.set(client=launcher.client).perform_async()
    settings = seen.get(timeout=5)

    assert current_settings() is launcher.settings
    assert settings is launcher.settings
    assert settings is not None
    assert settings.concurrency == 7
    launcher.stop()
    assert current_settings() is None


def test_latest_running_launcher_wins(launch: LaunchFactory) -> None:
    """Several launchers in one process: the newest one still running is current."""
    first = launch(concurrency=2)
    second = launch(concurrency=3)
    assert current_settings() is second.settings

    first.stop()
    assert current_settings() is second.settings

    third = launch(concurrency=4)
    assert current_settings() is third.settings

    third.stop()
    assert current_settings() is second.settings

    second.stop()
    assert current_settings() is None
