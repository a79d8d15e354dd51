"""pytest plugin with pyqueue's test modes, registered through the ``pytest11`` entry point.

    def test_signup_sends_welcome(pyqueue_fake):
        signup("ann@example.com")
        assert len(pyqueue_fake.jobs(WelcomeEmail)) == 1

``pyqueue_fake`` and ``pyqueue_inline`` switch ``pyqueue.testing`` to that
mode for one test and yield the module. Afterwards the mode goes back to
"disabled", the collected jobs are dropped and the testing server middleware
is emptied, so one test's jobs never leak into the next.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from types import ModuleType

import pytest

from pyqueue import testing


def _use_mode(mode: str) -> Generator[ModuleType, None, None]:
    testing.clear()
    testing.set_mode(mode)
    try:
        yield testing
    finally:
        testing.disable()
        testing.clear()
        testing.server_middleware.clear()


@pytest.fixture
def pyqueue_fake() -> Iterator[ModuleType]:
    """Collect pushed jobs in memory for this test; yield ``pyqueue.testing``."""
    yield from _use_mode("fake")


@pytest.fixture
def pyqueue_inline() -> Iterator[ModuleType]:
    """Run pushed jobs at once for this test; yield ``pyqueue.testing``."""
    yield from _use_mode("inline")
