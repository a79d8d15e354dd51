"""PrefetchFetch: batches while a queue has work, a shared buffer, and its return at stop."""

from __future__ import annotations

import time

import redis

from pyqueue import config
from pyqueue.client import Client
from pyqueue.fetch import BasicFetch
from pyqueue.launcher import Launcher
from pyqueue.prefetch import MAX_BATCH, PrefetchFetch, batch_size_for
from tests.perf.jobs import COUNT_KEY


def push(r: redis.Redis, queue: str, *jobs: str) -> None:
    """LPUSH as a client does, so the first job given is the first fetched."""
    r.lpush(f"queue:{queue}", *jobs)


def test_batch_fills_buffer_in_queue_order(r: redis.Redis) -> None:
    push(r, "default", *[f"job-{index}" for index in range(8)])
    fetch = PrefetchFetch(r, [("default", 0)], batch_size=4)

    first = fetch.retrieve_work()
    second = fetch.retrieve_work()
    buffered = fetch.buffered()
    rest = [fetch.retrieve_work() for _ in range(6)]

    assert first is not None and first.raw == "job-0"
    assert second is not None and second.raw == "job-1"
    assert buffered == 3
    assert [unit.raw for unit in rest if unit is not None] == [f"job-{i}" for i in range(2, 8)]
    assert all(unit is not None and unit.queue == "default" for unit in rest)
    assert r.llen("queue:default") == 0


def test_first_fetch_blocks_for_one_job(r: redis.Redis) -> None:
    push(r, "default", "job-0", "job-1", "job-2")
    fetch = PrefetchFetch(r, [("default", 0)], batch_size=4)

    unit = fetch.retrieve_work()

    assert unit is not None and unit.raw == "job-0"
    assert fetch.buffered() == 0
    assert r.llen("queue:default") == 2


def test_batch_prefers_first_queue_in_strict_order(r: redis.Redis) -> None:
    push(r, "low", "low-0", "low-1", "low-2")
    fetch = PrefetchFetch(r, [("high", 0), ("low", 0)], batch_size=10)
    fetch.retrieve_work()
    push(r, "high", "high-0", "high-1")

    unit = fetch.retrieve_work()
    after = fetch.retrieve_work()

    assert unit is not None and (unit.queue, unit.raw) == ("high", "high-0")
    assert after is not None and (after.queue, after.raw) == ("high", "high-1")
    assert r.llen("queue:low") == 2


def test_empty_batch_falls_back_to_blocking_fetch(r: redis.Redis) -> None:
    push(r, "default", "job-0")
    fetch = PrefetchFetch(r, [("default", 0)], batch_size=4)
    fetch.retrieve_work()
    push(r, "default", "job-1")
    fetch.retrieve_work()

    # The queue is empty now: the batch finds nothing, BRPOP waits its 2 s.
    unit = fetch.retrieve_work()

    assert unit is None
    assert fetch._queue_busy is False


def test_drain_pushes_buffer_back_in_order(r: redis.Redis) -> None:
    push(r, "default", *[f"job-{index}" for index in range(6)])
    fetch = PrefetchFetch(r, [("default", 0)], batch_size=4)
    fetch.retrieve_work()
    fetch.retrieve_work()

    fetch.drain()
    again = BasicFetch(r, [("default", 0)])
    order = [again.retrieve_work() for _ in range(4)]

    assert fetch.buffered() == 0
    assert [unit.raw for unit in order if unit is not None] == [
        "job-2",
        "job-3",
        "job-4",
        "job-5",
    ]


def test_batch_after_drain_goes_back_at_once(r: redis.Redis) -> None:
    push(r, "default", *[f"job-{index}" for index in range(5)])
    fetch = PrefetchFetch(r, [("default", 0)], batch_size=4)
    fetch.retrieve_work()
    fetch.drain()

    unit = fetch.retrieve_work()

    assert unit is not None and unit.raw == "job-1"
    assert fetch.buffered() == 0
    assert r.lrange("queue:default", 0, -1) == ["job-4", "job-3", "job-2"]


def test_batch_size_follows_concurrency() -> None:
    assert batch_size_for(1) == 1
    assert batch_size_for(5) == 5
    assert batch_size_for(50) == MAX_BATCH


def test_worker_stop_returns_buffered_jobs(r: redis.Redis, redis_url: str) -> None:
    """A graceful stop with jobs in the buffer loses none and runs none twice."""
    settings = config.build(
        {
            "redis_url": redis_url,
            "fetch": "basic",
            "concurrency": 4,
            "heartbeat_interval": 0.2,
            "timeout": 2,
            "cron_poll_interval": 0,
            "poll_interval_average": 60,
        }
    )
    Client(redis_url).push_bulk({"class": "PerfSuite::Count", "args": [[] for _ in range(300)]})
    launcher = Launcher(settings)
    fetcher = launcher.manager.context.fetcher
    assert isinstance(fetcher, PrefetchFetch)
    drained: list[int] = []
    original_drain = fetcher.drain

    def counting_drain() -> None:
        drained.append(fetcher.buffered())
        original_drain()

    fetcher.drain = counting_drain  # type: ignore[method-assign]

    launcher.start()
    deadline = time.monotonic() + 10
    while int(r.get(COUNT_KEY) or 0) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    launcher.stop()

    ran = int(r.get(COUNT_KEY) or 0)
    waiting = r.llen("queue:default")
    assert len(drained) == 1
    assert 40 <= ran < 300
    assert ran + waiting == 300
    assert r.get("stat:processed") == str(ran)


def test_batch_error_falls_back_to_blocking_fetch(r: redis.Redis) -> None:
    push(r, "default", "job-0", "job-1")
    fetch = PrefetchFetch(r, [("default", 0)], batch_size=4)
    fetch.retrieve_work()

    def failing_script(**kwargs: object) -> None:
        raise redis.ConnectionError("connection reset")

    fetch._script = failing_script  # type: ignore[assignment]
    unit = fetch.retrieve_work()

    assert unit is not None and unit.raw == "job-1"
    assert fetch.buffered() == 0
