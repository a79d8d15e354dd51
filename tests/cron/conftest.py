"""Fixtures of the cron tests."""

from __future__ import annotations

import pytest

from tests.cron.helpers import FakeClock, utc


@pytest.fixture
def clock() -> FakeClock:
    """A clock stopped at 2024-05-06T12:00:00Z until the test moves it."""
    return FakeClock(utc("2024-05-06T12:00:00Z"))
