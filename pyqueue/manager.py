"""The processor threads of a process: start, quiet, stop with a deadline.

The manager keeps ``concurrency`` processor threads running and replaces one
that dies from an unexpected error (a failing job never kills its thread).

Stopping: ``quiet()`` makes every thread finish its current job and fetch
nothing more. ``stop(deadline)`` then waits until the threads are done or the
deadline passes. Jobs still running at the deadline are pushed back to the
tail of their queues with their original payload strings, so they are the
next jobs fetched, and they count as neither processed nor failed.

Python cannot kill a thread. After the push back, the manager raises
``Shutdown`` asynchronously in each thread that still runs a job. That ends
a job only when it next executes Python bytecode. A job blocked in C code
(``time.sleep``, a socket read) keeps running until the process exits, and
the processor threads are daemon threads so that the exit does not wait for
them. Such a job may have had side effects before the exit, and it runs
again from the start: jobs must be idempotent, as in Sidekiq
("at least once").
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable

import redis

from pyqueue import events
from pyqueue.connection import FETCH_TIMEOUT
from pyqueue.errors import PayloadError, Shutdown
from pyqueue.fetch import UnitOfWork
from pyqueue.payload import decode
from pyqueue.processor import Processor, ProcessorContext, display_class

logger = logging.getLogger(__name__)

# How often stop() re-checks a deadline that stop_now() may have moved.
_WAIT_SLICE = 0.1
# Once no job runs, stop() gives the threads this long to come back from a
# fetch: a BRPOP or BLMOVE returns within FETCH_TIMEOUT, so a job it takes in
# that time is handed back by its own thread before the process exits.
IDLE_GRACE = FETCH_TIMEOUT + 1.0


class Manager:
    """Runs ``concurrency`` processor threads that share one ``ProcessorContext``."""

    def __init__(self, context: ProcessorContext, concurrency: int) -> None:
        self.context = context
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._processors: set[Processor] = set()
        self._quiet = False
        self._started = 0
        self._deadline = 0.0

    @property
    def quieting(self) -> bool:
        return self._quiet

    def start(self) -> None:
        with self._lock:
            for _ in range(self.concurrency):
                self._spawn()

    def processors(self) -> list[Processor]:
        with self._lock:
            return list(self._processors)

    def busy_count(self) -> int:
        """Return the number of jobs running now."""
        return len(self.context.work)

    def quiet(self) -> None:
        """Stop fetching; running jobs go on. Idempotent."""
        if self._quiet:
            return
        self._quiet = True
        logger.info("quiet: finishing running jobs, fetching no new ones")

    def stop(self, deadline: float) -> None:
        """Quiet, wait until ``deadline`` (``time.monotonic()`` seconds), then push back.

        Returns when every thread has finished, ``IDLE_GRACE`` seconds after
        the last job finished even if a thread is still stuck in a fetch, or
        right after the jobs still running at the deadline were pushed back.
        """
        self.quiet()
        self._deadline = deadline
        idle_since: list[float] = []

        def give_up() -> bool:
            now = time.monotonic()
            if now >= self._deadline:
                return True
            if self._running():
                idle_since.clear()
                return False
            if not idle_since:
                idle_since.append(now)
            return now - idle_since[0] >= IDLE_GRACE

        if self._wait_until(give_up):
            return
        with self._lock:
            running, left = self._running(), len(self._processors)
        if running:
            self._hard_shutdown()
            return
        logger.info("no job is running; not waiting for %d threads still in a fetch", left)

    def stop_now(self) -> None:
        """Move the stop deadline to now: a second TERM or INT. Safe in a signal handler."""
        self._deadline = 0.0

    def processor_stopped(self, processor: Processor) -> None:
        with self._lock:
            self._processors.discard(processor)
            self._changed.notify_all()

    def processor_died(self, processor: Processor, exc: BaseException) -> None:
        logger.error(
            "processor thread %s died (%s: %s); starting a new one",
            processor.thread.name,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        unit = processor.take_for_requeue()
        if unit is not None:
            self._push_back([unit])
        with self._lock:
            self._processors.discard(processor)
            if not self._quiet:
                self._spawn()
            self._changed.notify_all()

    def _spawn(self) -> None:
        # The caller holds self._lock.
        self._started += 1
        processor = Processor(self, self.context, f"pyqueue-processor-{self._started}")
        self._processors.add(processor)
        processor.start()

    def _wait_until(self, give_up: Callable[[], bool]) -> bool:
        """Wait for every processor to stop; return True if they did before ``give_up()``."""
        with self._lock:
            while self._processors:
                if give_up():
                    return False
                self._changed.wait(_WAIT_SLICE)
        return True

    def _hard_shutdown(self) -> None:
        running: list[tuple[Processor, UnitOfWork]] = []
        for processor in self.processors():
            unit = processor.take_for_requeue()
            if unit is not None:
                running.append((processor, unit))
        if running:
            logger.warning(
                "shutdown timeout reached: pushing %d running jobs back to their queues",
                len(running),
            )
        self._push_back([unit for _, unit in running])
        for processor, _ in running:
            self.context.work.unregister(processor.tid)
            interrupt(processor.thread)
        # An idle thread may be inside BRPOP: wait for it to come back, so that
        # a job it pops now is pushed back by that thread instead of lost.
        idle_deadline = time.monotonic() + FETCH_TIMEOUT + 1.0
        busy = {processor for processor, _ in running}
        self._wait_until(lambda: time.monotonic() >= idle_deadline or self._only_busy_left(busy))

    def _running(self) -> bool:
        """Return True while a thread runs or acknowledges a job. The caller holds self._lock."""
        # The work state covers a job from its decoding until after its
        # acknowledgement, while ``current`` covers it from the fetch until its outcome.
        if len(self.context.work) > 0:
            return True
        return any(processor.current is not None for processor in self._processors)

    def _only_busy_left(self, busy: set[Processor]) -> bool:
        # The caller holds self._lock.
        return self._processors <= busy

    def _push_back(self, units: list[UnitOfWork]) -> None:
        if not units:
            return
        try:
            self.context.fetcher.bulk_requeue(units)
        except redis.RedisError as exc:
            for unit in units:
                logger.error(
                    "could not push a job back to queue %s, it is lost: %s jid=%s",
                    unit.queue,
                    exc,
                    _jid(unit),
                )
            return
        for unit in units:
            if not unit.requeued:
                # The fetcher kept the job and logged why (reliable fetch keeps it for recovery).
                continue
            logger.info("pushed back to queue %s jid=%s", unit.queue, _jid(unit))
            payload = _decoded(unit)
            events.job_finished(unit.queue, display_class(payload), 0.0, events.REQUEUED)


def _decoded(unit: UnitOfWork) -> dict[str, object]:
    try:
        return decode(unit.raw)
    except PayloadError:
        return {}


def _jid(unit: UnitOfWork) -> str:
    return str(_decoded(unit).get("jid"))


def interrupt(thread: threading.Thread) -> None:
    """Raise Shutdown in ``thread`` when it next runs Python bytecode (best effort)."""
    ident = thread.ident
    if ident is None or not thread.is_alive():
        return
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(Shutdown)
    )
    if changed > 1:
        # The C API documents this undo for an id that matched several threads.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
