"""Per-job time limits: a watchdog thread interrupts a job that runs past its ``timeout``.

The job controls middleware (pyqueue.controls) calls ``run_with_time_limit``
around a job whose payload or class sets ``timeout``. One watchdog thread per
process keeps the deadlines in a heap. At a deadline it raises JobTimeout in
the job's thread with ``PyThreadState_SetAsyncExc``. The processor then
records the failure, and the retry rules decide what happens next.

CPython delivers such an exception only when the thread runs Python bytecode
at a check point: a loop iteration or the start of a Python function. A
thread blocked in one C call (``time.sleep``, ``Lock.acquire``, a socket read,
a database driver call) finishes that call first, so ``time.sleep(60)``
under a 5 s limit raises JobTimeout after 60 s at the earliest. A job that
returns right after such a call may even end normally, because the pending
exception is cleared when the job returns. docs/job-controls.md lists what
to do instead.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pyqueue.log import job_context

logger = logging.getLogger(__name__)

# A job still running this long after its JobTimeout was raised is logged once,
# because it is probably blocked in C code that the exception cannot reach.
STUCK_REPORT_AFTER = 10.0
# Cancelled watches stay in the heap until their deadline. Past this many the
# heap is rebuilt without them, so long limits on many short jobs use little memory.
_COMPACT_AFTER = 1000

_PENDING = "pending"
_FIRED = "fired"
_DONE = "done"


class JobTimeout(BaseException):  # noqa: N818 - named like the option it enforces
    """Raised in a job's thread when the job runs past its ``timeout`` (seconds).

    A BaseException, as Shutdown is, so that a job's ``except Exception``
    does not swallow it. The processor records it as a failure and the job
    is retried by the normal retry rules.
    """


RaiseInThread = Callable[[int, type[BaseException] | None], None]


def raise_in_thread(ident: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``ident`` at its next check point; None clears a pending one."""
    target = ctypes.c_ulong(ident)
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        target, ctypes.py_object(exc_type) if exc_type is not None else None
    )
    if changed > 1:
        # The C API documents this undo for an id that matched several threads.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)


class Watch:
    """One running job's deadline: ``limit`` seconds for the thread ``ident``."""

    __slots__ = ("ident", "limit", "fields", "state", "queued")

    def __init__(self, ident: int, limit: float, fields: dict[str, Any]) -> None:
        self.ident = ident
        self.limit = limit
        self.fields = fields
        self.state = _PENDING
        # True while the watch has an entry in the watchdog's heap.
        self.queued = False


class Watchdog:
    """A daemon thread that raises JobTimeout in threads whose watch is past its deadline.

    ``clock`` returns monotonic seconds; ``raise_exc`` is replaceable in tests.
    A job still running ``stuck_after`` seconds after its JobTimeout was raised
    is logged once. The thread starts on the first ``watch`` call and runs
    until the process exits.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        raise_exc: RaiseInThread = raise_in_thread,
        stuck_after: float = STUCK_REPORT_AFTER,
    ) -> None:
        self._clock = clock
        self._raise = raise_exc
        self.stuck_after = stuck_after
        # The job thread takes only the plain lock, whose enter and exit are C code.
        # A JobTimeout landing inside Condition's Python-level __exit__ would
        # leave the lock held forever.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def watch(self, limit: float, ident: int | None = None, **fields: Any) -> Watch:
        """Start the clock for thread ``ident`` (default: the calling thread).

        ``fields`` (jid, class, queue) go into the log lines about this job.
        """
        target = threading.get_ident() if ident is None else ident
        entry = Watch(target, limit, fields)
        with self._lock:
            self._start_thread()
            self._push(entry, self._clock() + limit)
            self._changed.notify()
        return entry

    def cancel(self, entry: Watch) -> bool:
        """Stop watching; return True if JobTimeout was already raised for this watch.

        After this returns, no JobTimeout from this watch is pending in the
        thread: one raised but not yet delivered is cleared, so it cannot
        land in code that runs after the job. The pending JobTimeout may also
        be delivered inside this call, which then raises it. The watch is
        already done by then, so calling cancel again is safe.
        """
        with self._lock:
            state = entry.state
            if state == _DONE:
                return False
            # Marked done before the clearing call, the one place where the
            # pending exception can still be delivered.
            entry.state = _DONE
            if entry.queued:
                self._cancelled += 1
            if state == _FIRED:
                self._raise(entry.ident, None)
            return state == _FIRED

    def pending(self) -> int:
        """Return the number of watches not yet cancelled (for tests and debugging)."""
        with self._lock:
            return sum(1 for _, _, entry in self._heap if entry.state != _DONE)

    def heap_size(self) -> int:
        """Return the number of heap entries, cancelled ones included (for tests)."""
        with self._lock:
            return len(self._heap)

    def _push(self, entry: Watch, deadline: float) -> None:
        # The caller holds the lock.
        entry.queued = True
        heapq.heappush(self._heap, (deadline, next(self._order), entry))

    def _start_thread(self) -> None:
        # The caller holds the lock.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="pyqueue-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            due = self._next_due()
            if due is not None:
                self._report(*due)

    def _next_due(self) -> tuple[Watch, bool] | None:
        """Wait for the earliest deadline and act on it under the lock.

        Returns the watch and whether it is stuck, for a log line written
        outside the lock, or None when there is nothing to log.
        """
        with self._changed:
            self._compact()
            if not self._heap:
                self._changed.wait()
                return None
            deadline, _, entry = self._heap[0]
            wait = deadline - self._clock()
            if wait > 0:
                self._changed.wait(wait)
                return None
            heapq.heappop(self._heap)
            entry.queued = False
            if entry.state == _DONE:
                self._cancelled -= 1
                return None
            if entry.state == _FIRED:
                # Still running well after the exception was raised. The watch
                # stays FIRED, so that cancel() still clears an undelivered one.
                return entry, True
            # Raised under the lock, so cancel() either runs before this (and
            # nothing is raised) or after it (and clears it if still pending).
            entry.state = _FIRED
            self._raise(entry.ident, JobTimeout)
            self._push(entry, self._clock() + self.stuck_after)
            return entry, False

    def _compact(self) -> None:
        # The caller holds the lock.
        if self._cancelled > _COMPACT_AFTER and self._cancelled * 2 > len(self._heap):
            kept = [item for item in self._heap if item[2].state != _DONE]
            for _, _, entry in self._heap:
                entry.queued = entry.state != _DONE
            self._heap = kept
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _report(self, entry: Watch, stuck: bool) -> None:
        with job_context(**entry.fields):
            if stuck:
                logger.warning(
                    "job still running %g s after its time limit of %g s: it is probably "
                    "blocked in C code (a sleep, a lock, a socket read without a timeout), "
                    "which JobTimeout cannot interrupt",
                    self.stuck_after,
                    entry.limit,
                )
            else:
                logger.warning("time limit of %g s reached, raising JobTimeout", entry.limit)


_default_watchdog = Watchdog()


def run_with_time_limit(
    limit: float,
    call: Callable[[], None],
    *,
    watchdog: Watchdog | None = None,
    **fields: Any,
) -> None:
    """Run ``call()`` in this thread; raise JobTimeout if it runs longer than ``limit`` seconds.

    The JobTimeout carries a message with the limit. A ``call`` that catches
    BaseException can swallow the interruption, and then it simply returns.
    """
    dog = watchdog or _default_watchdog
    entry = dog.watch(limit, **fields)
    try:
        try:
            call()
        finally:
            dog.cancel(entry)
    except JobTimeout as exc:
        # The JobTimeout may have landed in the finally clause before cancel ran.
        dog.cancel(entry)
        if exc.args:
            raise
        # The watchdog can only raise the bare class, so the message is added here.
        error = JobTimeout(
            f"job ran longer than its timeout of {limit:g} s and was interrupted; "
            "raise the job's timeout option or make the job faster"
        )
        raise error.with_traceback(exc.__traceback__) from None
