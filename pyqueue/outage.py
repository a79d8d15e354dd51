"""Log a dependency outage twice: once when it starts and once when it ends.

A worker thread that loses Redis retries every second or so, and a log line
per attempt would bury everything else. The worker, the pollers, cron, the
metrics exporter and the app share this helper so that an outage of Redis or
PostgreSQL reads the same everywhere:

    ERROR: Redis is unavailable (ConnectionError: Error 111 connecting to ...)
    INFO: Redis is available again after 12.3 s (failed attempts: 8)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class OutageLog:
    """Track one dependency's outage and log its start and its end.

    ``what`` names the dependency in the messages ("Redis", "PostgreSQL").
    Call ``failed(exc)`` after every failed attempt and ``recovered()`` after
    every successful one. Both are cheap when the state does not change, and
    both are safe to call from several threads. ``clock`` returns seconds and
    is only used to measure the downtime.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """True between the first failure and the next recovery."""
        return self._down_since is not None

    def failed(self, exc: BaseException) -> bool:
        """Record a failed attempt; log only the first one of an outage.

        Returns True when this call started the outage.
        """
        with self._lock:
            self._failures += 1
            if self._down_since is not None:
                return False
            self._down_since = self._clock()
        self.logger.error("%s is unavailable (%s: %s)", self.what, type(exc).__name__, exc)
        return True

    def recovered(self) -> float | None:
        """Record a successful attempt; log the end of an outage with its downtime.

        Returns the downtime in seconds when this call ended an outage, else None.
        """
        if self._down_since is None:
            return None
        with self._lock:
            if self._down_since is None:
                return None
            downtime = self._clock() - self._down_since
            failures = self._failures
            self._down_since = None
            self._failures = 0
        self.logger.info(
            "%s is available again after %.1f s (failed attempts: %d)",
            self.what,
            downtime,
            failures,
        )
        return downtime
