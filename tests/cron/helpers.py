"""Helpers for the cron tests: an injected clock, UTC parsing, pollers and a poll loop."""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
from collections.abc import Callable
from typing import Any

import redis

from pyqueue.client import Client
from pyqueue.config import Settings
from pyqueue.cron import CronPoller, CronStore
from pyqueue.payload import loads


def utc(text: str) -> float:
    """Return epoch seconds of an ISO 8601 UTC time such as ``2024-05-06T15:00:40Z``."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeClock:
    """Injectable clock returning ``now`` (epoch seconds) until a test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FixedRand:
    """Stand-in for ``random.random`` that always returns ``value``."""

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def make_settings(**overrides: Any) -> Settings:
    return dataclasses.replace(Settings(), **overrides)


def make_poller(
    r: redis.Redis,
    clock: FakeClock,
    settings: Settings | None = None,
    rand: Callable[[], float] | None = None,
) -> CronPoller:
    return CronPoller(
        r,
        settings or make_settings(),
        Client(redis=r),
        clock=clock,
        rand=rand or FixedRand(),
    )


def make_store(r: redis.Redis, clock: FakeClock, settings: Settings | None = None) -> CronStore:
    return CronStore(r, settings or make_settings(), clock=clock)


def run_pollers(
    pollers: list[CronPoller], clock: FakeClock, start: float, end: float
) -> list[tuple[float, int]]:
    """Drive pollers on simulated time from ``start`` to ``end``, as their threads would.

    Each poller first waits its initial wait, then its next wait after every
    cycle. Returns (time, jobs enqueued) for every cycle that enqueued.
    """
    wakeups = [(start + poller.initial_wait(start), index) for index, poller in enumerate(pollers)]
    heapq.heapify(wakeups)
    enqueues: list[tuple[float, int]] = []
    while wakeups and wakeups[0][0] <= end:
        moment, index = heapq.heappop(wakeups)
        clock.now = moment
        count = pollers[index].poll_once(moment)
        if count:
            enqueues.append((moment, count))
        heapq.heappush(wakeups, (moment + pollers[index].next_wait(moment), index))
    return enqueues


def queued(r: redis.Redis, queue: str = "default") -> list[dict[str, Any]]:
    """Return the payloads waiting in ``queue``, oldest first."""
    raws = r.lrange(f"queue:{queue}", 0, -1)
    assert isinstance(raws, list)
    return [loads(raw) for raw in reversed(raws)]
