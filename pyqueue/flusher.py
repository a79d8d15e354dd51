"""A background thread that runs a flush shortly after work arrives.

Reliable fetch sends the acknowledgements that no fetch carried, and the
log handler writes the lines its threads queued. Both collect items in
memory, need them sent within a short delay, and should not wake a thread
while nothing waits.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable


class DelayedFlusher:
    """A daemon thread that calls ``flush`` ``delay`` seconds after the first ``wake()``.

    Wakes that arrive before the flush are served by the same flush. The
    thread starts on the first wake, and a forked child starts its own,
    because threads do not survive a fork.
    """

    def __init__(self, flush: Callable[[], None], delay: float, name: str) -> None:
        self.delay = delay
        self.name = name
        self._flush = flush
        self._lock = threading.Lock()
        self._waiting = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        _flushers.add(self)

    def wake(self) -> None:
        """Request a flush within ``delay`` seconds, unless ``stop()`` was called."""
        if self._thread is None:
            self._start()
        # Event.set takes a lock and notifies, and under load the flag is already set.
        if not self._waiting.is_set():
            self._waiting.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread without a last flush, so the caller flushes what is left."""
        self._stopped.set()
        self._waiting.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._waiting.wait()
            if self._stopped.wait(self.delay):
                return
            # Cleared before the flush, so a wake during the flush is served
            # by the next round.
            self._waiting.clear()
            self._flush()

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock or an event's lock at the fork.
        self._lock = threading.Lock()
        self._waiting = threading.Event()
        self._thread = None


_flushers: weakref.WeakSet[DelayedFlusher] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for flusher in list(_flushers):
        flusher._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)
