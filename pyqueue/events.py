"""Job lifecycle observers: how metrics and other listeners hear about jobs.

The processor calls every registered observer; an observer that raises is
logged and ignored, so a broken listener never fails a job.
"""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger(__name__)

# Outcomes passed to job_finished.
DONE = "done"  # perform returned
RETRIED = "retried"  # failed and written to the retry set
DEAD = "dead"  # failed and written to the dead set
DISCARDED = (
    "discarded"  # failed and dropped on purpose (retry false, a hook's "discard", dead false)
)
REQUEUED = (
    "requeued"  # pushed back to its queue at shutdown; counts as neither processed nor failed
)


class JobObserver(Protocol):
    def job_started(self, queue: str, job_class: str) -> None: ...

    def job_finished(self, queue: str, job_class: str, elapsed: float, outcome: str) -> None: ...


_observers: list[JobObserver] = []


def subscribe(observer: JobObserver) -> None:
    if observer not in _observers:
        _observers.append(observer)


def unsubscribe(observer: JobObserver) -> None:
    if observer in _observers:
        _observers.remove(observer)


def job_started(queue: str, job_class: str) -> None:
    for observer in _observers:
        try:
            observer.job_started(queue, job_class)
        except Exception:
            logger.exception("job observer %r failed on job_started", observer)


def job_finished(queue: str, job_class: str, elapsed: float, outcome: str) -> None:
    for observer in _observers:
        try:
            observer.job_finished(queue, job_class, elapsed, outcome)
        except Exception:
            logger.exception("job observer %r failed on job_finished", observer)
