"""One worker thread: fetch a job, run it, record the outcome, repeat.

For each job the processor
1. fetches a unit of work and hands it straight back if the process is quieting;
2. decodes the payload (a payload that is not a JSON object goes to the dead set);
3. registers the job in the busy work state the heartbeat publishes;
4. sets the log context (jid, class, queue) and logs ``start``;
5. looks up the class and runs ``perform(*args)`` inside the server middleware;
6. counts the execution, logs ``done`` or ``fail`` with the elapsed time,
   passes a failure to the retry handler, notifies ``pyqueue.events`` and
   acknowledges the unit of work.

A job that the manager pushed back at shutdown is neither counted nor
acknowledged: it runs again in the next process, so it is counted there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pyqueue import events
from pyqueue.errors import PayloadError, PyQueueError, Shutdown
from pyqueue.fetch import ERROR_PAUSE, Fetcher, UnitOfWork
from pyqueue.job import Job, lookup
from pyqueue.log import job_context, thread_id, write_job_line
from pyqueue.middleware import ServerChain
from pyqueue.payload import Payload, decode
from pyqueue.stats import Counters, WorkState

if TYPE_CHECKING:
    from pyqueue.retry import RetryHandler

logger = logging.getLogger(__name__)

server_middleware = ServerChain()
"""The process-wide server middleware chain; a job module adds to it at import time."""


class ProcessorOwner(Protocol):
    """Interface of the manager, as a processor uses it."""

    @property
    def quieting(self) -> bool:
        """True once quiet or stop began: fetch nothing more."""
        ...

    def processor_stopped(self, processor: Processor) -> None: ...

    def processor_died(self, processor: Processor, exc: BaseException) -> None: ...


@dataclass
class ProcessorContext:
    """The parts shared by every processor thread of a process."""

    fetcher: Fetcher
    retry: RetryHandler
    counters: Counters
    work: WorkState
    middleware: ServerChain
    sleep: Callable[[float], None] = time.sleep


@dataclass
class _Execution:
    job_class: type[Job] | None
    error: BaseException | None
    started: float


class Processor:
    """A worker thread that runs jobs until its owner starts quieting."""

    def __init__(self, owner: ProcessorOwner, context: ProcessorContext, name: str) -> None:
        self.owner = owner
        self.context = context
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.tid = ""
        # Guards ``current`` against the manager's shutdown requeue, so a job is
        # either finished by this thread or pushed back by the manager, never both.
        self._state_lock = threading.Lock()
        self.current: UnitOfWork | None = None

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        self.tid = thread_id()
        try:
            self._loop()
        except Shutdown:
            # The manager raises Shutdown once, after it pushed this thread's
            # job back. It may land anywhere, even inside the first call of
            # processor_stopped, which is idempotent.
            self.owner.processor_stopped(self)

    def _loop(self) -> None:
        try:
            while not self.owner.quieting:
                self.process_one()
        except Shutdown:
            pass
        except BaseException as exc:
            self.owner.processor_died(self, exc)
            return
        self.owner.processor_stopped(self)

    def process_one(self) -> None:
        """Fetch one job and run it; return after at most the fetch timeout when idle."""
        unit = self.context.fetcher.retrieve_work()
        if unit is None:
            return
        if not self._claim(unit):
            # Quiet or stop began while BRPOP was waiting: hand the job back at once.
            unit.requeue()
            return
        self.process(unit)

    def take_for_requeue(self) -> UnitOfWork | None:
        """Return the running job for the manager to push back, or None if there is none.

        Called by the manager at the end of the shutdown timeout. After this
        returns a unit, this thread neither counts nor acknowledges it.
        """
        with self._state_lock:
            unit = self.current
            self.current = None
            return unit

    def _claim(self, unit: UnitOfWork) -> bool:
        with self._state_lock:
            if self.owner.quieting:
                return False
            self.current = unit
            return True

    def _release(self, unit: UnitOfWork) -> bool:
        """Finish the claim on ``unit``; return False when the manager took it first."""
        with self._state_lock:
            if self.current is not unit:
                return False
            self.current = None
            return True

    def process(self, unit: UnitOfWork) -> None:
        """Run one claimed unit of work to its outcome."""
        try:
            payload = decode(unit.raw)
        except PayloadError as exc:
            self._release(unit)
            self._bury_invalid(unit, exc)
            return
        self.context.work.register(self.tid, unit.queue, unit.raw)
        try:
            with job_context(jid=payload.get("jid"), queue=unit.queue, **_class_field(payload)):
                execution = self._execute(payload, unit.queue)
                self._finish(unit, payload, execution)
        finally:
            self.context.work.unregister(self.tid)

    def _execute(self, payload: Payload, queue: str) -> _Execution:
        events.job_started(queue, display_class(payload))
        _log_job_line("start")
        started = time.monotonic()
        job_class: type[Job] | None = None
        try:
            job_class = lookup(payload.get("class"))
            job_args(payload)
            job = job_class(jid=str(payload.get("jid") or ""), payload=payload)
            # As in Sidekiq, perform gets the args as the middleware left them.
            self.context.middleware.invoke(
                job, payload, queue, lambda: job.perform(*job_args(payload))
            )
        except BaseException as exc:
            return _Execution(job_class, exc, started)
        return _Execution(job_class, None, started)

    def _finish(self, unit: UnitOfWork, payload: Payload, execution: _Execution) -> None:
        elapsed = time.monotonic() - execution.started
        error = execution.error
        if not self._release(unit):
            # The manager pushed the job back at the shutdown timeout and logged it.
            logger.debug("finished after it was pushed back to its queue")
            return
        if error is not None and _is_shutdown(error):
            self._requeue_shutdown(unit, payload, elapsed)
            return
        if error is None:
            self.context.counters.record(failed=False)
            _log_job_line("done", elapsed)
            events.job_finished(unit.queue, display_class(payload), elapsed, events.DONE)
            unit.acknowledge()
            return
        self.context.counters.record(failed=True)
        outcome = self._handle_failure(unit, payload, execution.job_class, error)
        _log_failure(error, outcome, elapsed)
        events.job_finished(unit.queue, display_class(payload), elapsed, outcome)
        if outcome != events.REQUEUED:
            unit.acknowledge()

    def _requeue_shutdown(self, unit: UnitOfWork, payload: Payload, elapsed: float) -> None:
        # Shutdown came from the job itself, since the manager raises it only after
        # taking the job: push it back here, as the manager would have.
        unit.requeue()
        logger.info("pushed back to its queue at shutdown", extra={"elapsed": elapsed})
        events.job_finished(unit.queue, display_class(payload), elapsed, events.REQUEUED)

    def _handle_failure(
        self,
        unit: UnitOfWork,
        payload: Payload,
        job_class: type[Job] | None,
        error: BaseException,
    ) -> str:
        try:
            return self.context.retry.handle_failure(
                unit.raw, payload, unit.queue, error, job_class
            )
        except Exception:
            # Redis failed, or the retry handler has a bug. The failure was not
            # recorded, so push the job back rather than lose it, and pause so
            # that a persistent error cannot turn into a hot loop.
            logger.exception("could not record the job's failure; pushing it back to its queue")
            self._requeue_after_error(unit)
            return events.REQUEUED

    def _bury_invalid(self, unit: UnitOfWork, exc: PayloadError) -> None:
        with job_context(queue=unit.queue):
            try:
                self.context.retry.send_to_dead_raw(unit.raw, str(exc))
            except Exception:
                logger.exception("could not move an invalid payload to the dead set")
                self._requeue_after_error(unit)
                return
        unit.acknowledge()

    def _requeue_after_error(self, unit: UnitOfWork) -> None:
        try:
            unit.requeue()
        except Exception:
            logger.exception("could not push the job back either; the job is lost")
        self.context.sleep(ERROR_PAUSE)


def job_args(payload: Payload) -> list[Any]:
    """Return the payload's args; raise PayloadError unless they are a list."""
    args = payload.get("args")
    if not isinstance(args, list):
        raise PayloadError(
            f"job args must be a list, got {type(args).__name__}; "
            "the producer must push args as a JSON array"
        )
    return args


def display_class(payload: Payload) -> str:
    """Return the class name to show: ``wrapped`` for ActiveJob payloads, else ``class``."""
    name = payload.get("wrapped") or payload.get("class")
    return name if isinstance(name, str) else repr(name)


def _class_field(payload: Payload) -> dict[str, Any]:
    # "class" is a keyword, so the context field is passed through a dict.
    return {"class": display_class(payload)}


def _is_shutdown(error: BaseException) -> bool:
    from pyqueue.retry import caused_by_shutdown

    return caused_by_shutdown(error)


def _log_job_line(message: str, elapsed: float | None = None) -> None:
    """Log a job's ``start`` or ``done`` line at INFO, as ``logger.info`` would.

    These two lines come from the processor for every job. Where pyqueue's
    handler alone would see them, it writes them without a record. Otherwise
    the record skips the stack walk of ``logger.info`` (about 10 us per line).
    """
    if not logger.isEnabledFor(logging.INFO) or write_job_line(logger, message, elapsed):
        return
    extra = None if elapsed is None else {"elapsed": elapsed}
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 0, message, (), None, "process", extra
    )
    logger.handle(record)


def _log_failure(error: BaseException, outcome: str, elapsed: float) -> None:
    # A job that will not run again is an error; one that waits in the retry set is a warning.
    level = logging.WARNING if outcome == events.RETRIED else logging.ERROR
    # pyqueue's own errors (unknown class, args not a list) explain themselves in
    # the message, and a traceback would only point into the processor.
    details = None if isinstance(error, PyQueueError) else error
    logger.log(
        level,
        "fail (%s): %s: %s",
        outcome,
        type(error).__name__,
        error,
        exc_info=details,
        extra={"elapsed": elapsed},
    )
