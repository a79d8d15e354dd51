"""ReliableFetch on the private Redis: order, the working list, acknowledge, requeue, idle cost."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter

import pytest
import redis

from pyqueue import config
from pyqueue.fetch import BasicFetch, blocking_limit, build_fetcher
from pyqueue.reliable_fetch import ReliableFetch
from tests.reliability.support import MARK, jid_of, job
from tests.worker.conftest import LaunchFactory, wait_for

IDENTITY = "test-host:1:aaaaaaaaaaaa"
WORKING = f"pyqueue:working:{IDENTITY}"


def fill(conn: redis.Redis, queue: str, count: int, start: int = 0) -> list[str]:
    raws = [job(MARK, [], jid_of(start + i), queue=queue) for i in range(count)]
    if raws:
        conn.lpush(f"queue:{queue}", *raws)
    return raws


def test_strict_order_while_work_waits(r: redis.Redis) -> None:
    fetcher = ReliableFetch(r, [("critical", 0), ("default", 0), ("low", 0)], IDENTITY)
    low = fill(r, "low", 1, start=100)
    default = fill(r, "default", 2, start=200)
    critical = fill(r, "critical", 2, start=300)

    units = [fetcher.retrieve_work() for _ in range(5)]

    assert [(u.queue, u.raw) for u in units if u] == [
        ("critical", critical[0]),
        ("critical", critical[1]),
        ("default", default[0]),
        ("default", default[1]),
        ("low", low[0]),
    ]
    assert r.llen(WORKING) == 5
    assert r.smembers("pyqueue:working_index") == {IDENTITY}
    assert r.exists("queue:critical", "queue:default", "queue:low") == 0


def test_weighted_order_matches_weights(r: redis.Redis) -> None:
    """With weights 3:1, about a quarter of the first 400 fetches take a low job."""
    fill(r, "critical", 600)
    fill(r, "low", 600, start=1000)
    # A fixed seed keeps the count inside the bounds; the bounds hold for about
    # 999 of 1,000 seeds (binomial estimate, n=400, p=0.25).
    fetcher = ReliableFetch(r, [("critical", 3), ("low", 1)], IDENTITY, rng=random.Random(7))

    queues = Counter(unit.queue for unit in (fetcher.retrieve_work() for _ in range(400)) if unit)

    assert sum(queues.values()) == 400
    assert 70 <= queues["low"] <= 130, queues


def test_acknowledgement_rides_on_next_fetch(r: redis.Redis) -> None:
    """A finished job leaves the working list with the next script call, not with its own."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, ack_delay=60)
    first, second, third = fill(r, "default", 3)
    unit = fetcher.retrieve_work()
    other = fetcher.retrieve_work()
    assert unit is not None
    assert other is not None
    assert (unit.raw, other.raw) == (first, second)

    unit.acknowledge()
    assert r.lrange(WORKING, 0, -1) == [second, first]
    last = fetcher.retrieve_work()

    assert last is not None
    assert last.raw == third
    assert r.lrange(WORKING, 0, -1) == [third, second]
    fetcher.drain()


def test_flusher_sends_waiting_acknowledgement(r: redis.Redis) -> None:
    """With no fetch to carry it, an acknowledgement goes out alone after ack_delay."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, ack_delay=0.05)
    fill(r, "default", 1)
    unit = fetcher.retrieve_work()
    assert unit is not None

    unit.acknowledge()

    wait_for(lambda: r.exists(WORKING) == 0, timeout=5)
    assert fetcher._unacknowledged == Counter()
    fetcher.drain()


def test_batch_moves_several_jobs_per_call(r: redis.Redis) -> None:
    """One script call moves batch_size jobs; the threads take the rest from the buffer."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, batch_size=4, ack_delay=60)
    raws = fill(r, "default", 10)

    units = [fetcher.retrieve_work() for _ in range(4)]

    assert [u.raw for u in units if u] == raws[:4]
    assert r.llen("queue:default") == 6
    assert r.lrange(WORKING, 0, -1) == raws[3::-1]
    assert fetcher.buffered() == 0
    fifth = fetcher.retrieve_work()
    assert fifth is not None
    assert fifth.raw == raws[4]
    assert r.llen("queue:default") == 2
    assert fetcher.buffered() == 3
    fetcher.drain()


def test_buffered_jobs_are_not_orphans(r: redis.Redis) -> None:
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, batch_size=5, ack_delay=60)
    fill(r, "default", 5)
    assert fetcher.retrieve_work() is not None

    assert fetcher.reclaim_orphans() == 0
    assert fetcher.reclaim_orphans() == 0

    assert r.llen(WORKING) == 5
    assert fetcher.buffered() == 4
    fetcher.drain()


def test_drain_returns_buffered_jobs_in_order(r: redis.Redis) -> None:
    """The stop pushes buffered jobs back so that they are fetched again oldest first."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, batch_size=4, ack_delay=60)
    raws = fill(r, "default", 4)
    unit = fetcher.retrieve_work()
    assert unit is not None
    unit.acknowledge()

    fetcher.drain()

    assert fetcher.buffered() == 0
    assert r.exists(WORKING) == 0
    # The tail (the right end) is fetched first.
    assert r.lrange("queue:default", 0, -1)[::-1] == raws[1:]


def test_batch_after_drain_goes_back(r: redis.Redis) -> None:
    """A batch that arrives once the stop has drained the buffer returns to its queue."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, batch_size=3, ack_delay=60)
    fetcher.drain()
    raws = fill(r, "default", 3)

    unit = fetcher.retrieve_work()

    assert unit is not None
    assert unit.raw == raws[0]
    assert fetcher.buffered() == 0
    assert r.lrange(WORKING, 0, -1) == [raws[0]]
    assert r.lrange("queue:default", 0, -1)[::-1] == raws[1:]


def test_requeue_returns_job_to_tail(r: redis.Redis) -> None:
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY)
    first, second = fill(r, "default", 2)
    unit = fetcher.retrieve_work()
    assert unit is not None

    unit.requeue()

    assert unit.requeued
    assert r.exists(WORKING) == 0
    # The job went back to the tail, so it is fetched before the one that waited.
    again = fetcher.retrieve_work()
    assert again is not None
    assert again.raw == first
    assert r.lrange("queue:default", 0, -1) == [second]


def test_requeue_skips_job_already_recovered(r: redis.Redis) -> None:
    """A job that recovery took from the working list is not pushed a second time."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY)
    (raw,) = fill(r, "default", 1)
    unit = fetcher.retrieve_work()
    assert unit is not None
    r.delete(WORKING)
    r.rpush("queue:default", raw)

    unit.requeue()

    assert r.lrange("queue:default", 0, -1) == [raw]


def test_fetch_blocks_when_idle(r: redis.Redis) -> None:
    fetcher = ReliableFetch(r, [("a", 0), ("b", 0)], IDENTITY)
    started = time.monotonic()
    assert fetcher.retrieve_work() is None
    assert 1.5 < time.monotonic() - started < 5

    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(fetcher.retrieve_work()))
    waiter.start()
    wait_for(lambda: sum(fetcher._blocked.values()) == 1)
    (queue,) = [name for name, count in fetcher._blocked.items() if count]
    (raw,) = fill(r, queue, 1)
    waiter.join(timeout=5)

    unit = results[0]
    assert unit is not None
    assert (unit.queue, unit.raw) == (queue, raw)  # type: ignore[attr-defined]
    assert r.lrange(WORKING, 0, -1) == [raw]


def test_idle_threads_spread_over_queues(r: redis.Redis) -> None:
    """Four idle threads block on four different queues, so each queue has a waiting thread."""
    queues = [("a", 0), ("b", 0), ("c", 0), ("d", 0)]
    fetcher = ReliableFetch(r, queues, IDENTITY)
    threads = [threading.Thread(target=fetcher.retrieve_work) for _ in range(4)]
    for thread in threads:
        thread.start()

    wait_for(lambda: sum(fetcher._blocked.values()) == 4)
    assert dict(fetcher._blocked) == {"a": 1, "b": 1, "c": 1, "d": 1}
    for thread in threads:
        thread.join(timeout=5)


def test_idle_worker_does_not_spin(fresh_redis: redis.Redis, launch: LaunchFactory) -> None:
    """Five idle threads send about one script call and one BLMOVE each per 2 s."""
    launcher = launch(
        concurrency=5,
        queues=[["a", 5], ["b", 3], ["c", 1], ["d", 1]],
        heartbeat_interval=10,
    )
    time.sleep(6)
    launcher.stop()

    stats = fresh_redis.info("commandstats")
    rounds_bound = 5 * 6 / 2 * 1.2 + 5
    blmove = stats.get("cmdstat_blmove", {}).get("calls", 0)
    scripts = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    assert 0 < blmove <= rounds_bound
    assert 0 < scripts <= rounds_bound + 5
    # Each script call tries the four queues once.
    assert stats.get("cmdstat_lmove", {}).get("calls", 0) <= 4 * scripts
    assert "cmdstat_brpop" not in stats
    assert "cmdstat_rpop" not in stats or stats["cmdstat_rpop"]["calls"] <= 2


def test_acknowledge_retried_after_outage(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """An acknowledgement whose fetch failed goes with the next one; the job never runs again."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, sleep=lambda _: None, ack_delay=60)
    fill(r, "default", 1)
    unit = fetcher.retrieve_work()
    assert unit is not None

    def fail(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("connection lost")

    unit.acknowledge()
    with monkeypatch.context() as patch:
        patch.setattr(fetcher, "_fetch_script", fail)
        assert fetcher.retrieve_work() is None
    assert r.llen(WORKING) == 1
    # An acknowledgement not yet sent is not an orphan.
    assert fetcher.reclaim_orphans() == 0
    assert fetcher.reclaim_orphans() == 0

    assert fetcher.retrieve_work() is None

    assert r.exists(WORKING) == 0
    assert r.llen("queue:default") == 0
    fetcher.drain()


def test_failed_flush_keeps_acknowledgement(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY, ack_delay=60)
    fill(r, "default", 1)
    unit = fetcher.retrieve_work()
    assert unit is not None
    unit.acknowledge()

    def broken_pipeline(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("connection lost")

    with monkeypatch.context() as patch:
        patch.setattr(fetcher.redis, "pipeline", broken_pipeline)
        with pytest.raises(redis.ConnectionError):
            fetcher.flush_acknowledgements()
    assert fetcher._unacknowledged == Counter({unit.raw: 1})

    fetcher.flush_acknowledgements()

    assert r.exists(WORKING) == 0
    fetcher.drain()


def test_orphan_pushed_back_on_second_check(r: redis.Redis) -> None:
    """A copy that no thread runs (its fetch reply was lost) returns to its queue."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY)
    orphan = job(MARK, [], jid_of(1))
    running = job(MARK, [], jid_of(2))
    r.lpush("queue:default", running)
    unit = fetcher.retrieve_work()
    assert unit is not None
    r.lpush(WORKING, orphan)

    assert fetcher.reclaim_orphans() == 0
    assert fetcher.reclaim_orphans() == 1

    assert r.lrange("queue:default", 0, -1) == [orphan]
    assert r.lrange(WORKING, 0, -1) == [running]


def test_drain_empties_working_list(r: redis.Redis) -> None:
    fetcher = ReliableFetch(r, [("default", 0), ("low", 0)], IDENTITY)
    fill(r, "default", 2)
    fill(r, "low", 1, start=10)
    units = [fetcher.retrieve_work() for _ in range(3)]
    assert all(units)

    fetcher.drain()

    assert r.exists(WORKING) == 0
    assert r.smembers("pyqueue:working_index") == set()
    # Oldest at the tail, so the drained jobs run again in their first order.
    assert [str(raw) for raw in r.lrange("queue:default", 0, -1)] == [units[1].raw, units[0].raw]  # type: ignore[union-attr]
    assert r.llen("queue:low") == 1


def test_build_fetcher_follows_setting(r: redis.Redis) -> None:
    reliable = build_fetcher(config.build({}), r, IDENTITY)
    basic = build_fetcher(config.build({"fetch": "basic"}), r, IDENTITY)

    assert isinstance(reliable, ReliableFetch)
    assert isinstance(basic, BasicFetch)
    # One job per thread per script call, at most ten.
    assert reliable.batch_size == 5
    many = build_fetcher(config.build({"concurrency": 25}), r, IDENTITY)
    assert isinstance(many, ReliableFetch)
    assert many.batch_size == 10


def test_fewer_threads_than_queues_warns(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    settings = config.build({"concurrency": 2, "queues": ["a", "b", "c"]})

    with caplog.at_level(logging.WARNING, logger="pyqueue.fetch"):
        build_fetcher(settings, r, IDENTITY)

    assert "2 threads for 3 queues" in caplog.text


def test_blocking_limit_leaves_connections_free() -> None:
    assert blocking_limit(config.build({"concurrency": 5})) is None
    assert blocking_limit(config.build({"concurrency": 20, "redis_pool_size": 8})) == 4
    assert blocking_limit(config.build({"concurrency": 20, "redis_pool_size": 3})) == 1


def test_idle_threads_leave_heartbeat_a_connection(r: redis.Redis, launch: LaunchFactory) -> None:
    """Ten idle threads on a pool of six connections: the heartbeat keeps beating."""
    launcher = launch(concurrency=10, redis_pool_size=6, heartbeat_interval=0.2, timeout=20)
    time.sleep(1)
    beats = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        beats.add(r.hget(launcher.identity, "beat"))
        time.sleep(0.05)

    assert len(beats) >= 8
    # No job runs, so the stop does not wait for the 20 s timeout.
    stopped = time.monotonic()
    launcher.stop()
    assert time.monotonic() - stopped < 10


def test_failed_requeue_keeps_job_for_drain(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A push back that fails leaves the job in the working list; the stop's drain returns it."""
    fetcher = ReliableFetch(r, [("default", 0)], IDENTITY)
    (raw,) = fill(r, "default", 1)
    unit = fetcher.retrieve_work()
    assert unit is not None

    def broken_pipeline(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("connection lost")

    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR):
        patch.setattr(fetcher.redis, "pipeline", broken_pipeline)
        fetcher.bulk_requeue([unit])

    assert not unit.requeued
    assert r.lrange(WORKING, 0, -1) == [raw]
    assert "stays in pyqueue:working:" in caplog.text
    fetcher.drain()
    assert r.lrange("queue:default", 0, -1) == [raw]
    assert r.exists(WORKING) == 0
