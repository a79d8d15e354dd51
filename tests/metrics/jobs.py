"""Jobs for the metrics tests, registered under names that no other test module uses."""

from __future__ import annotations

import threading
from typing import Any

from pyqueue import Job

# BlockJob waits on this event, so a test can scrape while the job is running.
release = threading.Event()


class NoopJob(Job, name="MetricsSuite::NoopJob"):
    def perform(self, *args: Any) -> None:
        return None


class FailJob(Job, name="MetricsSuite::FailJob"):
    """Always raises; the payload's retry option decides between retry, dead and discard."""

    def perform(self, *args: Any) -> None:
        raise RuntimeError("FailJob always fails")


class BlockJob(Job, name="MetricsSuite::BlockJob"):
    def perform(self, *args: Any) -> None:
        release.wait(10)
