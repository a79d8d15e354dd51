"""Cluster metrics read from Redis: queue sizes and latency, sets, processes, stats.

``ClusterCollector`` is a prometheus-client custom collector. Each scrape
reads Redis in two pipelined round trips: the first fetches the queue and
process names, the second everything else. A scrape never fails on odd data
(a payload that is not JSON, a key of the wrong type, bytes that are not
UTF-8): the affected value reads as 0. When Redis is unreachable, the scrape
still answers with ``pyqueue_redis_up 0``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from pyqueue import keys
from pyqueue.connection import create_redis
from pyqueue.outage import OutageLog
from pyqueue.payload import epoch_seconds

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ClusterSnapshot:
    """The values of one scrape."""

    queue_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    queue_latencies: dict[str, float] = dataclasses.field(default_factory=dict)
    scheduled: int = 0
    retries: int = 0
    dead: int = 0
    processed: int = 0
    failed: int = 0
    processes: int = 0
    busy: int = 0
    concurrency: int = 0


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _number(value: Any) -> int:
    """Read a Redis integer reply or numeric string; anything else is 0."""
    if isinstance(value, bool | Exception):
        return 0
    if isinstance(value, int):
        return value
    text = _text(value)
    if text is None:
        return 0
    try:
        return int(float(text))
    except ValueError:
        return 0


def _names(reply: Any) -> list[str]:
    """Sort the members of a SMEMBERS reply; an error reply gives no names."""
    if not isinstance(reply, set | list):
        return []
    return sorted(name for name in (_text(member) for member in reply) if name)


def job_latency(raw: Any, now: float) -> float:
    """Return the seconds since the oldest job of a queue was enqueued.

    Reads ``enqueued_at``, else ``created_at`` (as Sidekiq 8 does), in any
    Sidekiq timestamp form. An empty queue or a payload that is not a JSON
    object with a timestamp gives 0. A timestamp in the future also gives 0.
    """
    text = _text(raw)
    if text is None:
        return 0.0
    try:
        job = json.loads(text)
    except ValueError:
        return 0.0
    if not isinstance(job, dict):
        return 0.0
    enqueued = epoch_seconds(job.get("enqueued_at"))
    if enqueued is None:
        enqueued = epoch_seconds(job.get("created_at"))
    if enqueued is None:
        return 0.0
    return max(now - enqueued, 0.0)


def _process_values(reply: Any) -> tuple[int, int] | None:
    """Return (busy, concurrency) from ``HMGET <identity> info busy concurrency``.

    None means the process hash has expired, so the process is gone even if
    its identity is still in the ``processes`` set.
    """
    if not isinstance(reply, list) or len(reply) != 3 or reply[0] is None:
        return None
    info_text, busy, concurrency = reply
    if concurrency is None:
        # Sidekiq before 8.1.2 keeps the thread count only inside the info JSON.
        try:
            info = json.loads(_text(info_text) or "")
        except ValueError:
            info = None
        concurrency = info.get("concurrency") if isinstance(info, dict) else None
    return _number(busy), _number(concurrency)


class ClusterCollector:
    """A prometheus-client collector that reads cluster-wide values from Redis.

    ``client`` should be built by ``cluster_client`` so that payload bytes that
    are not UTF-8 are replaced instead of failing the whole pipeline.
    ``clock`` returns epoch seconds for the latency.
    """

    def __init__(
        self,
        client: redis.Redis,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.clock = clock
        self.outage = OutageLog(logger, "Redis")

    def read(self) -> ClusterSnapshot:
        """Read one snapshot in two round trips. Raises redis.RedisError."""
        first = self.client.pipeline(transaction=False)
        first.smembers(keys.QUEUES)
        first.smembers(keys.PROCESSES)
        queues_reply, processes_reply = first.execute(raise_on_error=False)
        queues = _names(queues_reply)
        identities = _names(processes_reply)

        second = self.client.pipeline(transaction=False)
        for queue in queues:
            second.llen(keys.queue(queue))
            second.lindex(keys.queue(queue), -1)
        for key in (keys.SCHEDULE, keys.RETRY, keys.DEAD):
            second.zcard(key)
        second.get(keys.STAT_PROCESSED)
        second.get(keys.STAT_FAILED)
        for identity in identities:
            second.hmget(identity, "info", "busy", "concurrency")
        replies = second.execute(raise_on_error=False)
        return self._snapshot(queues, len(identities), replies)

    def _snapshot(
        self, queues: list[str], process_count: int, replies: list[Any]
    ) -> ClusterSnapshot:
        snapshot = ClusterSnapshot()
        now = self.clock()
        for index, queue in enumerate(queues):
            snapshot.queue_sizes[queue] = _number(replies[2 * index])
            snapshot.queue_latencies[queue] = job_latency(replies[2 * index + 1], now)
        rest = replies[2 * len(queues) :]
        snapshot.scheduled, snapshot.retries, snapshot.dead = (_number(v) for v in rest[:3])
        snapshot.processed, snapshot.failed = (_number(v) for v in rest[3:5])
        for reply in rest[5 : 5 + process_count]:
            values = _process_values(reply)
            if values is None:
                continue
            snapshot.processes += 1
            snapshot.busy += values[0]
            snapshot.concurrency += values[1]
        return snapshot

    def describe(self) -> Iterator[Metric]:
        # Listing the names keeps registry.register from calling collect(),
        # which would read Redis at registration time.
        return iter(families(ClusterSnapshot(), up=False, seconds=0.0))

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            snapshot = self.read()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            yield from _health(up=False, seconds=time.perf_counter() - started)
            return
        self.outage.recovered()
        yield from families(snapshot, up=True, seconds=time.perf_counter() - started)


def families(snapshot: ClusterSnapshot, up: bool, seconds: float) -> list[Metric]:
    """Turn a snapshot into metric families (see docs/monitoring.md)."""
    size = GaugeMetricFamily("pyqueue_queue_size", "Jobs waiting in the queue.", labels=["queue"])
    latency = GaugeMetricFamily(
        "pyqueue_queue_latency_seconds",
        "Seconds since the oldest waiting job of the queue was enqueued.",
        labels=["queue"],
    )
    for queue, count in snapshot.queue_sizes.items():
        size.add_metric([queue], count)
        latency.add_metric([queue], snapshot.queue_latencies[queue])
    gauges = [
        ("pyqueue_scheduled_jobs", "Jobs in the schedule set.", snapshot.scheduled),
        ("pyqueue_retry_jobs", "Jobs in the retry set.", snapshot.retries),
        ("pyqueue_dead_jobs", "Jobs in the dead set.", snapshot.dead),
        ("pyqueue_processes", "Live worker processes (Ruby ones included).", snapshot.processes),
        ("pyqueue_cluster_busy_workers", "Threads running a job, all processes.", snapshot.busy),
        ("pyqueue_cluster_concurrency", "Worker threads, all processes.", snapshot.concurrency),
    ]
    result: list[Metric] = [size, latency]
    result += [GaugeMetricFamily(name, text, value=value) for name, text, value in gauges]
    result += [
        CounterMetricFamily(
            "pyqueue_processed_jobs",
            "Jobs executed by every process (Redis stat:processed).",
            value=snapshot.processed,
        ),
        CounterMetricFamily(
            "pyqueue_failed_jobs",
            "Job executions that raised, every process (Redis stat:failed).",
            value=snapshot.failed,
        ),
    ]
    return result + _health(up, seconds)


def _health(up: bool, seconds: float) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "pyqueue_redis_up", "1 if the last scrape read Redis, else 0.", value=1 if up else 0
        ),
        GaugeMetricFamily(
            "pyqueue_cluster_scrape_duration_seconds",
            "Seconds the last scrape spent reading Redis.",
            value=seconds,
        ),
    ]


def cluster_client(url: str | None = None) -> redis.Redis:
    """Build a small Redis client for the collector (two connections).

    Payloads are decoded with replacement characters, because redis-py would
    otherwise raise on the first byte that is not UTF-8 and lose the scrape.
    """
    client = create_redis(url, pool_size=2)
    client.connection_pool.connection_kwargs["encoding_errors"] = "replace"
    return client
