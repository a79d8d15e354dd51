"""Queue order, the blocking fetch, push back, and fetching end to end."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyqueue.fetch import BasicFetch, UnitOfWork, expand_queues, queue_order
from pyqueue.job import Job
from pyqueue.launcher import Launcher
from pyqueue.middleware import ServerChain
from pyqueue.payload import Payload
from tests.fixtures.redis_server import free_port
from tests.worker.conftest import LaunchFactory, payload, wait_for

NOOP = "WorkerSuite::NoopJob"


def test_expand_queues_repeats_by_weight() -> None:
    assert expand_queues([("a", 3), ("b", 0), ("c", 1)]) == ["a", "a", "a", "b", "c"]


def test_strict_order_is_fixed_and_deduplicated() -> None:
    queues = [("critical", 0), ("default", 0), ("critical", 0), ("low", 0)]
    rng = random.Random(1)
    orders = {tuple(queue_order(queues, rng)) for _ in range(50)}
    assert orders == {("critical", "default", "low")}


def test_weighted_order_matches_weights() -> None:
    queues = [("a", 5), ("b", 3), ("c", 1), ("d", 1)]
    rng = random.Random(20261204)
    firsts: Counter[str] = Counter()
    for _ in range(10_000):
        order = queue_order(queues, rng)
        assert sorted(order) == ["a", "b", "c", "d"]
        firsts[order[0]] += 1

    expected = {"a": 0.5, "b": 0.3, "c": 0.1, "d": 0.1}
    for name, share in expected.items():
        assert abs(firsts[name] / 10_000 - share) < 0.02, (name, firsts)


def test_equal_weights_are_random() -> None:
    queues = [("a", 1), ("b", 1)]
    rng = random.Random(7)
    firsts = Counter(queue_order(queues, rng)[0] for _ in range(2_000))
    assert 900 < firsts["a"] < 1_100


def test_fetch_takes_oldest_job_from_first_queue(r: redis.Redis) -> None:
    fetcher = BasicFetch(r, [("critical", 0), ("default", 0)])
    r.lpush("queue:default", "d1")
    r.lpush("queue:critical", "c1", "c2")

    units = [fetcher.retrieve_work() for _ in range(3)]

    assert [(u.queue, u.raw) for u in units if u] == [
        ("critical", "c1"),
        ("critical", "c2"),
        ("default", "d1"),
    ]


def test_fetch_returns_none_after_timeout(r: redis.Redis) -> None:
    fetcher = BasicFetch(r, [("default", 0)])
    started = time.monotonic()
    assert fetcher.retrieve_work() is None
    assert 1.5 < time.monotonic() - started < 5


def test_fetch_error_logs_once_and_pauses(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = redis.Redis(port=free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0))
    sleeps: list[float] = []
    fetcher = BasicFetch(unreachable, [("default", 0)], sleep=sleeps.append)

    with caplog.at_level(logging.INFO, logger="pyqueue.fetch"):
        results = [fetcher.retrieve_work() for _ in range(3)]

    assert results == [None, None, None]
    assert sleeps == [1.0, 1.0, 1.0]
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "Redis is unavailable" in errors[0].getMessage()


def test_fetch_recovery_is_logged(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    fetcher = BasicFetch(r, [("default", 0)], sleep=lambda _: None)
    fetcher.outage.failed(redis.ConnectionError("gone"))
    r.lpush("queue:default", "job")

    with caplog.at_level(logging.INFO, logger="pyqueue.fetch"):
        unit = fetcher.retrieve_work()

    assert unit is not None
    assert any("available again" in rec.getMessage() for rec in caplog.records)


def test_bulk_requeue_pushes_raw_to_tail(r: redis.Redis) -> None:
    fetcher = BasicFetch(r, [("a", 0), ("b", 0)])
    r.lpush("queue:a", "waiting")
    units = [
        UnitOfWork("a", '{"jid":"1", "spacing":"kept as is"}', fetcher),
        UnitOfWork("b", '{"jid":"2"}', fetcher),
        UnitOfWork("a", '{"jid":"3"}', fetcher),
    ]

    fetcher.bulk_requeue(units)

    assert all(unit.requeued for unit in units)
    assert r.lrange("queue:a", 0, -1) == [
        "waiting",
        '{"jid":"1", "spacing":"kept as is"}',
        '{"jid":"3"}',
    ]
    assert r.lrange("queue:b", 0, -1) == ['{"jid":"2"}']
    # The pushed-back jobs are fetched before the job that was waiting.
    assert r.rpop("queue:a") == '{"jid":"3"}'


def _recording_chain(order: list[str]) -> ServerChain:
    def record(job: Job, item: Payload, queue: str, call_next: Any) -> None:
        order.append(queue)
        call_next()

    return ServerChain([record])


def _fill(conn: redis.Redis, queue: str, count: int) -> None:
    raws = [payload(NOOP, [i], f"{i:024x}", queue=queue) for i in range(count)]
    conn.lpush(f"queue:{queue}", *raws)


def test_weighted_queues_share_first_jobs(r: redis.Redis, launch: LaunchFactory) -> None:
    """With weights 3:1 and one thread, about a quarter of the first 200 jobs are low ones."""
    _fill(r, "critical", 400)
    _fill(r, "low", 400)
    order: list[str] = []

    def seed(launcher: Launcher) -> None:
        # A fixed seed keeps the count inside the bounds on every run; the
        # bounds hold for about 999 of 1,000 seeds (binomial estimate, n=200, p=0.25).
        launcher.manager.context.fetcher._rng = random.Random(20261204)  # type: ignore[attr-defined]

    launch(
        middleware=_recording_chain(order),
        prepare=seed,
        concurrency=1,
        queues=[["critical", 3], ["low", 1]],
    )
    wait_for(lambda: len(order) >= 200, timeout=30)

    low = order[:200].count("low")
    assert 30 <= low <= 70, low


def test_strict_queues_drain_in_order(r: redis.Redis, launch: LaunchFactory) -> None:
    """Without weights no low job runs while critical has jobs."""
    _fill(r, "critical", 400)
    _fill(r, "low", 400)
    order: list[str] = []

    launch(middleware=_recording_chain(order), concurrency=1, queues=["critical", "low"])
    wait_for(lambda: len(order) >= 800, timeout=30)

    assert order[:400] == ["critical"] * 400
    assert order[400:] == ["low"] * 400


def test_idle_workers_do_not_spin(fresh_redis: redis.Redis, launch: LaunchFactory) -> None:
    """Five idle threads send about one BRPOP each per 2 s and no other pops."""
    launcher = launch(
        fetch="basic",
        concurrency=5,
        queues=[["a", 5], ["b", 3], ["c", 1], ["d", 1]],
        heartbeat_interval=10,
    )
    time.sleep(6)
    launcher.stop()

    stats = fresh_redis.info("commandstats")
    brpop = stats.get("cmdstat_brpop", {}).get("calls", 0)
    assert 0 < brpop <= 5 * 6 / 2 * 1.2 + 5
    assert "cmdstat_lpop" not in stats
    assert "cmdstat_lmove" not in stats
    # The heartbeat pops at most one remote signal per beat.
    assert stats.get("cmdstat_rpop", {}).get("calls", 0) <= 2
