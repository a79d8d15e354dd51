"""Helpers for the worker tests: settings, in-process launchers and waiting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from pyqueue import config
from pyqueue.launcher import Launcher
from pyqueue.middleware import ServerChain
from tests.worker import jobs

# Settings that keep in-process workers quick: a fast heartbeat, a short
# shutdown timeout, no cron poller and a scheduled poller that stays idle.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "timeout": 2,
    "cron_poll_interval": 0,
    "poll_interval_average": 60,
}


def make_settings(redis_url: str, **overrides: Any) -> config.Settings:
    return config.build({"redis_url": redis_url, **FAST, **overrides})


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a true value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def payload(job_class: str, args: Any, jid: str, queue: str = "default", **extra: Any) -> str:
    """Return a job string as a foreign producer would push it."""
    item = {"class": job_class, "args": args, "queue": queue, "retry": True, "jid": jid}
    item.update(extra)
    return json.dumps(item, separators=(",", ":"))


LaunchFactory = Callable[..., Launcher]


@pytest.fixture
def launch(redis_url: str) -> Iterator[LaunchFactory]:
    """Start in-process launchers; every one still running is stopped after the test."""
    started: list[Launcher] = []

    def factory(
        middleware: ServerChain | None = None,
        prepare: Callable[[Launcher], None] | None = None,
        **overrides: Any,
    ) -> Launcher:
        launcher = Launcher(make_settings(redis_url, **overrides), middleware=middleware)
        if prepare is not None:
            prepare(launcher)
        launcher.start()
        started.append(launcher)
        return launcher

    jobs.reset()
    try:
        yield factory
    finally:
        for launcher in started:
            launcher.stop()
        jobs.reset()


@pytest.fixture
def fresh_redis(r: redis.Redis) -> redis.Redis:
    """The flushed private server with its command statistics reset."""
    r.config_resetstat()
    return r
