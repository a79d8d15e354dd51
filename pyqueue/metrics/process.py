"""Per-process job metrics, fed by the processor through pyqueue.events.

``ProcessMetrics`` is a job observer: every job start and finish updates the
counters, the duration histogram and the busy gauge. In multiprocess mode the
same objects write to prometheus-client's shared files instead of memory, and
the gauges use the "livesum" mode so that a host's endpoint adds up only the
processes that are still alive.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pyqueue import events

# Buckets from 5 ms (an email render) to 10 minutes (a report). A slower job
# lands in +Inf and is still counted in _sum and _count.
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

# An execution counts as processed unless it was pushed back at shutdown,
# matching Sidekiq's stat:processed and stat:failed.
_EXECUTED = frozenset({events.DONE, events.RETRIED, events.DEAD, events.DISCARDED})
_FAILED = frozenset({events.RETRIED, events.DEAD, events.DISCARDED})

LABELS = ("queue", "class")


class ProcessMetrics:
    """The job counters, duration histogram and gauges of one worker process.

    Metrics are registered in ``registry`` (a new private one by default, so
    that several instances in one interpreter do not collide). Subscribe the
    instance with ``pyqueue.events.subscribe`` to feed it.
    """

    def __init__(self, registry: CollectorRegistry | None = None, concurrency: int = 0) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.processed = Counter(
            "pyqueue_jobs_processed",
            "Jobs executed by this process, failed ones included.",
            LABELS,
            registry=self.registry,
        )
        self.failed = Counter(
            "pyqueue_jobs_failed",
            "Job executions that raised (retried, dead or discarded).",
            LABELS,
            registry=self.registry,
        )
        self.retried = Counter(
            "pyqueue_jobs_retried",
            "Failed jobs written to the retry set.",
            LABELS,
            registry=self.registry,
        )
        self.dead = Counter(
            "pyqueue_jobs_dead",
            "Failed jobs written to the dead set (killed).",
            LABELS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "pyqueue_job_duration_seconds",
            "Run time of executed jobs in seconds.",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.busy = Gauge(
            "pyqueue_busy_workers",
            "Worker threads running a job now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.concurrency = Gauge(
            "pyqueue_concurrency",
            "Worker threads of the process.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.concurrency.set(concurrency)

    def job_started(self, queue: str, job_class: str) -> None:
        self.busy.inc()

    def job_finished(self, queue: str, job_class: str, elapsed: float, outcome: str) -> None:
        # The processor and manager send one job_finished per job_started,
        # requeued jobs included, so the busy gauge returns to 0 when idle.
        # NOTE: a job that the manager fails to push back at shutdown gets no
        # job_finished, so the gauge stays raised until the process exits.
        self.busy.dec()
        if outcome not in _EXECUTED:
            return
        self.processed.labels(queue, job_class).inc()
        self.duration.labels(queue, job_class).observe(max(elapsed, 0.0))
        if outcome not in _FAILED:
            return
        self.failed.labels(queue, job_class).inc()
        if outcome == events.RETRIED:
            self.retried.labels(queue, job_class).inc()
        elif outcome == events.DEAD:
            self.dead.labels(queue, job_class).inc()
