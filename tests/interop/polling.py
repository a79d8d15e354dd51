"""Polling helper for interop tests, where work happens in other processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], timeout: float = 20.0, description: str = "") -> Any:
    """Call ``check`` until it returns a true value and return that value.

    Raises AssertionError naming ``description`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {description or check}")
