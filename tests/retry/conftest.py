"""Fixtures shared by the retry, dead set and poller tests: a settable clock and fixed rand."""

from __future__ import annotations

import time

import pytest


class FakeClock:
    """Injectable clock that returns ``now`` (epoch seconds) until a test moves it.

    It starts at the real time, so that its readings compare sensibly with the
    timestamps the Client writes.
    """

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FixedRand:
    """Stand-in for ``random.random`` that returns ``value`` until a test changes it."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rand() -> FixedRand:
    return FixedRand()
