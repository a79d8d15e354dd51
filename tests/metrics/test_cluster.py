"""Cluster metrics read from Redis: values, odd data, round trips and outages."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from pyqueue.metrics import ClusterCollector, MetricsServer, cluster_client, serving_registry
from tests.fixtures.redis_server import RedisServer, free_port
from tests.metrics.scrape import Samples, fetch, names, scrape, value

NOW = 1_800_000_000.0


def job(jid: str, **fields: Any) -> str:
    return json.dumps({"class": "EchoJob", "args": [], "jid": jid, **fields})


def add_process(r: redis.Redis, identity: str, busy: int, concurrency: int | None) -> None:
    info = {"hostname": "web1", "pid": 1, "identity": identity, "concurrency": 10}
    r.sadd("processes", identity)
    fields: dict[str, Any] = {"info": json.dumps(info), "busy": busy, "beat": NOW}
    if concurrency is not None:
        fields["concurrency"] = concurrency
    r.hset(identity, mapping=fields)


@pytest.fixture
def serve(redis_url: str) -> Iterator[MetricsServer]:
    """The cluster collector on a free loopback port, with the clock at NOW."""
    collector = ClusterCollector(cluster_client(redis_url), clock=lambda: NOW)
    server = MetricsServer(serving_registry(collector), "127.0.0.1", 0)
    try:
        yield server
    finally:
        server.stop()
        collector.client.close()


def test_cluster_reports_queues(r: redis.Redis, serve: MetricsServer) -> None:
    r.sadd("queues", "default", "mail", "empty")
    r.lpush("queue:default", job("a" * 24, enqueued_at=NOW - 30.5))
    r.lpush("queue:default", job("b" * 24, enqueued_at=NOW - 1.0))
    # Sidekiq 8 writes integer milliseconds.
    r.lpush("queue:mail", job("c" * 24, enqueued_at=int((NOW - 4.0) * 1000)))

    samples = scrape(serve.url)

    assert value(samples, "pyqueue_queue_size", queue="default") == 2
    assert value(samples, "pyqueue_queue_size", queue="mail") == 1
    assert value(samples, "pyqueue_queue_size", queue="empty") == 0
    assert value(samples, "pyqueue_queue_latency_seconds", queue="default") == 30.5
    assert value(samples, "pyqueue_queue_latency_seconds", queue="mail") == 4.0
    assert value(samples, "pyqueue_queue_latency_seconds", queue="empty") == 0


def test_cluster_reports_sets_and_stats(r: redis.Redis, serve: MetricsServer) -> None:
    r.zadd("schedule", {job("s1" * 12): NOW + 60, job("s2" * 12): NOW + 90})
    r.zadd("retry", {job("r1" * 12): NOW + 10})
    r.zadd("dead", {job(f"d{i:023d}"): NOW - i for i in range(4)})
    r.set("stat:processed", 1234)
    r.set("stat:failed", 56)

    samples = scrape(serve.url)

    assert value(samples, "pyqueue_scheduled_jobs") == 2
    assert value(samples, "pyqueue_retry_jobs") == 1
    assert value(samples, "pyqueue_dead_jobs") == 4
    assert value(samples, "pyqueue_processed_jobs_total") == 1234
    assert value(samples, "pyqueue_failed_jobs_total") == 56
    assert value(samples, "pyqueue_redis_up") == 1


def test_cluster_reports_live_processes(r: redis.Redis, serve: MetricsServer) -> None:
    add_process(r, "web1:1:aaaaaaaaaaaa", busy=3, concurrency=5)
    # Sidekiq 7 keeps the thread count only in the info JSON (10 here).
    add_process(r, "web1:2:bbbbbbbbbbbb", busy=2, concurrency=None)
    # Its hash has expired, so the process is gone although still in the set.
    r.sadd("processes", "web2:3:cccccccccccc")

    samples = scrape(serve.url)

    assert value(samples, "pyqueue_processes") == 2
    assert value(samples, "pyqueue_cluster_busy_workers") == 5
    assert value(samples, "pyqueue_cluster_concurrency") == 15


def test_cluster_empty_database(serve: MetricsServer) -> None:
    samples = scrape(serve.url)

    assert value(samples, "pyqueue_processes") == 0
    assert value(samples, "pyqueue_processed_jobs_total") == 0
    assert value(samples, "pyqueue_dead_jobs") == 0
    assert value(samples, "pyqueue_redis_up") == 1


def test_cluster_tolerates_bad_entries(r: redis.Redis, serve: MetricsServer) -> None:
    """Payloads a foreign producer wrote by hand: the endpoint still returns 200."""
    r.sadd("queues", "default", "text", "bytes", "array", "wrongtype", "future")
    r.lpush("queue:default", job("q" * 24, args='{"id":null,"type":"tag"}', enqueued_at=NOW - 5))
    r.lpush("queue:text", "{not json")
    r.lpush("queue:bytes", b"\xff\xfe not utf-8")
    r.lpush("queue:array", "[1, 2]")
    r.set("queue:wrongtype", "a string, not a list")
    r.lpush("queue:future", job("f" * 24, enqueued_at=NOW + 100))
    r.zadd("retry", {job("r" * 24, args='{"id":null}', retry_count=0): 1714986000})
    r.zadd("retry", {'{"class":null,"args":[],"jid":null}': 1714986002})
    r.zadd("dead", {job("d" * 24, args={"id": 1}): 1714986000, "{not json": 1714986001})
    r.set("stat:processed", "not a number")
    r.sadd("processes", "odd:1:dddddddddddd")
    r.hset("odd:1:dddddddddddd", mapping={"info": "{broken", "busy": "many"})

    status, _ = fetch(serve.url)
    samples = scrape(serve.url)

    assert status == 200
    # The oldest job's args are a string, but its enqueued_at still gives the latency.
    assert value(samples, "pyqueue_queue_latency_seconds", queue="default") == 5
    for queue in ("text", "bytes", "array", "wrongtype", "future"):
        assert value(samples, "pyqueue_queue_latency_seconds", queue=queue) == 0, queue
    assert value(samples, "pyqueue_queue_size", queue="text") == 1
    assert value(samples, "pyqueue_queue_size", queue="wrongtype") == 0
    assert value(samples, "pyqueue_retry_jobs") == 2
    assert value(samples, "pyqueue_dead_jobs") == 2
    assert value(samples, "pyqueue_processed_jobs_total") == 0
    assert value(samples, "pyqueue_processes") == 1
    assert value(samples, "pyqueue_cluster_busy_workers") == 0
    assert value(samples, "pyqueue_redis_up") == 1


class PipelineSpy:
    """A client stand-in that counts round trips and allows only pipelines."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.round_trips = 0

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> list[Any]:
            self.round_trips += 1
            return cast(list[Any], execute(raise_on_error=raise_on_error))

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def test_cluster_reads_in_two_round_trips(r: redis.Redis, redis_url: str) -> None:
    for index in range(20):
        r.sadd("queues", f"q{index}")
        r.lpush(f"queue:q{index}", job(f"{index:024d}", enqueued_at=NOW - index))
        add_process(r, f"web1:{index}:{index:012d}", busy=1, concurrency=5)
    spy = PipelineSpy(cluster_client(redis_url))
    collector = ClusterCollector(cast(redis.Redis, spy), clock=lambda: NOW)

    snapshot = collector.read()

    assert spy.round_trips == 2
    assert len(snapshot.queue_sizes) == 20
    assert snapshot.queue_latencies["q19"] == 19
    assert snapshot.processes == 20
    assert snapshot.busy == 20
    spy.client.close()


def families_by_name(collector: ClusterCollector) -> Samples:
    samples: Samples = {}
    for family in collector.collect():
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def test_cluster_outage_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Redis stops for three scrapes: one line when it starts, one when it ends."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    collector = ClusterCollector(cluster_client(server.url))
    caplog.set_level(logging.DEBUG, logger="pyqueue.metrics")
    try:
        assert value(families_by_name(collector), "pyqueue_redis_up") == 1
        server.stop()
        down = [families_by_name(collector) for _ in range(3)]
        server.start()
        up = families_by_name(collector)
    finally:
        server.stop()
        collector.client.close()

    for samples in down:
        assert value(samples, "pyqueue_redis_up") == 0
        assert value(samples, "pyqueue_queue_size") is None
    assert value(up, "pyqueue_redis_up") == 1
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("Redis is unavailable (ConnectionError:")
    assert messages[1].startswith("Redis is available again after ")
    assert messages[1].endswith("(failed attempts: 3)")


def test_cluster_endpoint_answers_without_redis() -> None:
    collector = ClusterCollector(cluster_client(f"redis://127.0.0.1:{free_port()}/0"))
    server = MetricsServer(serving_registry(collector), "127.0.0.1", 0)
    try:
        samples = scrape(server.url)
    finally:
        server.stop()
        collector.client.close()

    assert value(samples, "pyqueue_redis_up") == 0
    assert value(samples, "pyqueue_queue_size") is None
    assert "pyqueue_build_info" in names(samples)
