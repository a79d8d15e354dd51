"""Scheduled poller: atomic moves, the randomised interval, the early wake and process cleanup."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyqueue import Client, ClientChain
from pyqueue.config import Settings
from pyqueue.payload import Payload
from pyqueue.scheduled import Poller, cleanup_processes
from tests.fixtures.redis_server import free_port
from tests.retry.conftest import FakeClock, FixedRand


def scheduled_member(jid: str, queue: str = "default", **fields: Any) -> str:
    payload: dict[str, Any] = {
        "retry": True,
        "queue": queue,
        "args": [jid],
        "class": "PollJob",
        "jid": jid,
        "created_at": 1796414355.3536506,
    }
    payload.update(fields)
    return json.dumps(payload, separators=(",", ":"))


def queued(r: redis.Redis, queue: str = "default") -> list[dict[str, Any]]:
    """Return the queue's jobs in the order they will be fetched (oldest first)."""
    return [json.loads(raw) for raw in reversed(r.lrange(f"queue:{queue}", 0, -1))]


def make_poller(
    r: redis.Redis, clock: FakeClock, rand: FixedRand, settings: Settings | None = None
) -> Poller:
    return Poller(r, settings or Settings(), Client(redis=r), clock=clock, rand=rand)


def register_processes(r: redis.Redis, count: int) -> list[str]:
    identities = [f"host-{n}:{1000 + n}:{n:012x}" for n in range(count)]
    for identity in identities:
        r.sadd("processes", identity)
        r.hset(identity, mapping={"info": "{}", "busy": "0"})
        r.expire(identity, 60)
    return identities


def test_poll_moves_due_jobs(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    r.zadd("retry", {scheduled_member("retry-due", error_class="X", retry_count=0): clock.now - 5})
    r.zadd("schedule", {scheduled_member("sched-due", queue="mail"): clock.now - 1})
    r.zadd("schedule", {scheduled_member("sched-later"): clock.now + 60})
    r.zadd("retry", {scheduled_member("retry-later"): clock.now + 60})

    assert make_poller(r, clock, rand).poll_once() == 2

    assert [job["jid"] for job in queued(r)] == ["retry-due"]
    assert [job["jid"] for job in queued(r, "mail")] == ["sched-due"]
    assert r.smembers("queues") == {"default", "mail"}
    assert r.zrange("schedule", 0, -1) == [scheduled_member("sched-later")]
    assert r.zrange("retry", 0, -1) == [scheduled_member("retry-later")]


def test_poll_retry_before_schedule(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    r.zadd("schedule", {scheduled_member("scheduled"): clock.now - 100})
    r.zadd("retry", {scheduled_member("retried"): clock.now - 1})
    make_poller(r, clock, rand).poll_once()
    assert [job["jid"] for job in queued(r)] == ["retried", "scheduled"]


def test_poll_earliest_first(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    for n, offset in enumerate((30, 10, 20)):
        r.zadd("schedule", {scheduled_member(f"job-{n}"): clock.now - offset})
    make_poller(r, clock, rand).poll_once()
    assert [job["jid"] for job in queued(r)] == ["job-0", "job-2", "job-1"]


def test_poll_sets_enqueued_at(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    member = scheduled_member("j1", enqueued_at=1.5, bid="batch-7", cattr={"user": 3})
    r.zadd("retry", {member: clock.now - 1})
    before = time.time()
    make_poller(r, clock, rand).poll_once()
    [job] = queued(r)
    assert before <= job["enqueued_at"] <= time.time()
    assert job["created_at"] == 1796414355.3536506
    assert job["bid"] == "batch-7"
    assert job["cattr"] == {"user": 3}
    assert job["args"] == ["j1"]


def test_poll_drops_at_field(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    """A member carrying "at" still goes to its queue, not back to the schedule set."""
    r.zadd("schedule", {scheduled_member("j1", at=clock.now + 3600): clock.now - 1})
    assert make_poller(r, clock, rand).poll_once() == 1
    [job] = queued(r)
    assert "at" not in job
    assert r.zcard("schedule") == 0


def test_poll_score_equal_now(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    r.zadd("schedule", {scheduled_member("j1"): clock.now})
    assert make_poller(r, clock, rand).poll_once() == 1


def test_poll_runs_client_middleware(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    def tag(payload: Payload, queue: str, call_next: Any) -> Payload | None:
        payload["tags"] = ["moved"]
        result: Payload | None = call_next(payload)
        return result

    client = Client(redis=r, middleware=ClientChain([tag]))
    r.zadd("schedule", {scheduled_member("j1"): clock.now - 1})
    Poller(r, Settings(), client, clock=clock, rand=rand).poll_once()
    assert queued(r)[0]["tags"] == ["moved"]


def test_poll_invalid_member_to_dead(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    r.zadd("schedule", {"{not json": clock.now - 2, '{"args":[]}': clock.now - 1})
    assert make_poller(r, clock, rand).poll_once() == 2
    assert set(r.zrange("dead", 0, -1)) == {"{not json", '{"args":[]}'}
    assert r.llen("queue:default") == 0


def test_poll_push_failure_restores(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    """A job whose push fails goes back to its set, due now, instead of being lost."""

    def broken(payload: Payload, queue: str, call_next: Any) -> Payload | None:
        raise ConnectionError("middleware lost its backend")

    client = Client(redis=r, middleware=ClientChain([broken]))
    member = scheduled_member("j1")
    r.zadd("schedule", {member: clock.now - 100})
    poller = Poller(r, Settings(), client, clock=clock, rand=rand)
    with pytest.raises(ConnectionError):
        poller.poll_once()
    assert r.zrange("schedule", 0, -1, withscores=True) == [(member, clock.now)]
    assert r.llen("queue:default") == 0


def test_poll_after_script_flush(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    """After SCRIPT FLUSH, EVALSHA gets NOSCRIPT and the script is loaded again."""
    poller = make_poller(r, clock, rand)
    r.zadd("schedule", {scheduled_member("first"): clock.now - 1})
    assert poller.poll_once() == 1
    r.script_flush()
    r.zadd("schedule", {scheduled_member("second"): clock.now - 1})
    assert poller.poll_once() == 1
    assert [job["jid"] for job in queued(r)] == ["first", "second"]


def test_two_pollers_push_once(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    """Two pollers racing over 200 due jobs push each job exactly once."""
    jids = [f"{n:024x}" for n in range(200)]
    r.zadd("schedule", {scheduled_member(jid): clock.now - 1 for jid in jids})
    pollers = [make_poller(r, clock, rand) for _ in range(2)]
    counts: list[int] = []
    start = threading.Barrier(2)

    def run(poller: Poller) -> None:
        start.wait()
        counts.append(poller.poll_once())

    threads = [threading.Thread(target=run, args=(poller,)) for poller in pollers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    pushed = [job["jid"] for job in queued(r)]
    assert sorted(pushed) == jids
    assert len(pushed) == len(set(pushed))
    assert sum(counts) == 200
    assert r.zcard("schedule") == 0


@pytest.mark.parametrize(
    ("processes", "rand_value", "expected"),
    [
        (1, 0.0, 2.5),
        (1, 0.5, 5.0),
        (1, 0.9999, 7.4995),
        (3, 0.0, 7.5),
        (3, 0.9999, 22.4985),
        (9, 0.0, 22.5),
        (10, 0.0, 0.0),
        (10, 0.5, 25.0),
        (12, 0.9999, 59.994),
    ],
)
def test_next_wait_scales_with_processes(
    r: redis.Redis, clock: FakeClock, processes: int, rand_value: float, expected: float
) -> None:
    """Below 10 processes the wait is uniform over [avg/2, 1.5 avg), from 10 on over [0, avg)."""
    register_processes(r, processes)
    poller = make_poller(r, clock, FixedRand(rand_value))
    assert poller.process_count() == processes
    assert poller.next_wait() == pytest.approx(expected)


def test_next_wait_empty_process_set(r: redis.Redis, clock: FakeClock) -> None:
    poller = make_poller(r, clock, FixedRand(0.0))
    assert poller.process_count() == 1
    assert poller.next_wait() == pytest.approx(2.5)


def test_next_wait_fixed_average(r: redis.Redis, clock: FakeClock) -> None:
    """A configured average is not scaled, but 10 or more processes still widen the range."""
    settings = Settings(poll_interval_average=4.0)
    register_processes(r, 3)
    assert make_poller(r, clock, FixedRand(0.0), settings).next_wait() == pytest.approx(2.0)
    register_processes(r, 12)
    assert make_poller(r, clock, FixedRand(0.0), settings).next_wait() == pytest.approx(0.0)
    assert make_poller(r, clock, FixedRand(0.5), settings).next_wait() == pytest.approx(2.0)


def test_initial_wait_default(r: redis.Redis, clock: FakeClock) -> None:
    assert make_poller(r, clock, FixedRand(0.0)).initial_wait() == pytest.approx(10.0)
    assert make_poller(r, clock, FixedRand(0.9999)).initial_wait() == pytest.approx(14.9995)


def test_initial_wait_fixed_average(r: redis.Redis, clock: FakeClock) -> None:
    settings = Settings(poll_interval_average=4.0)
    assert make_poller(r, clock, FixedRand(0.0), settings).initial_wait() == pytest.approx(0.0)
    assert make_poller(r, clock, FixedRand(0.5), settings).initial_wait() == pytest.approx(2.5)


def test_seconds_until_due(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    poller = make_poller(r, clock, rand)
    assert poller.seconds_until_due() is None
    r.zadd("schedule", {scheduled_member("later"): clock.now + 30})
    assert poller.seconds_until_due() == pytest.approx(30)
    r.zadd("retry", {scheduled_member("sooner"): clock.now + 5})
    assert poller.seconds_until_due() == pytest.approx(5)
    r.zadd("schedule", {scheduled_member("overdue"): clock.now - 2})
    assert poller.seconds_until_due() == pytest.approx(-2)


def test_cleanup_removes_expired(r: redis.Redis) -> None:
    alive = register_processes(r, 2)
    r.sadd("processes", "gone:1:aaaaaaaaaaaa", "gone:2:bbbbbbbbbbbb")
    r.hset("no-info:3:cccccccccccc", "busy", "0")
    r.sadd("processes", "no-info:3:cccccccccccc")

    assert cleanup_processes(r) == 3
    assert r.smembers("processes") == set(alive)
    assert r.ttl("process_cleanup") == pytest.approx(60, abs=2)


def test_cleanup_skipped_while_locked(r: redis.Redis) -> None:
    r.sadd("processes", "gone:1:aaaaaaaaaaaa")
    r.set("process_cleanup", "1", ex=60)
    assert cleanup_processes(r) == 0
    assert r.smembers("processes") == {"gone:1:aaaaaaaaaaaa"}


def test_cleanup_once_per_minute(r: redis.Redis) -> None:
    r.sadd("processes", "gone:1:aaaaaaaaaaaa")
    assert cleanup_processes(r) == 1
    r.sadd("processes", "gone:2:bbbbbbbbbbbb")
    assert cleanup_processes(r) == 0
    assert r.smembers("processes") == {"gone:2:bbbbbbbbbbbb"}


def test_cleanup_empty_set(r: redis.Redis) -> None:
    assert cleanup_processes(r) == 0


def test_poller_thread_cleans_at_start(r: redis.Redis) -> None:
    alive = register_processes(r, 1)
    r.sadd("processes", "gone:1:aaaaaaaaaaaa")
    poller = Poller(r, Settings(poll_interval_average=1.0), Client(redis=r), rand=FixedRand(0.0))
    poller.start()
    try:
        deadline = time.monotonic() + 5
        while r.scard("processes") > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        poller.stop()
    assert r.smembers("processes") == set(alive)


def test_poller_stop_during_wait(r: redis.Redis) -> None:
    """stop() ends the thread at once, even in the middle of the 10 s initial wait."""
    poller = Poller(r, Settings(), Client(redis=r))
    poller.start()
    poller.stop(timeout=5)
    assert poller._thread is not None
    assert not poller._thread.is_alive()


def test_stopped_poller_moves_nothing(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    poller = make_poller(r, clock, rand)
    poller.stop()
    r.zadd("schedule", {scheduled_member("j1"): clock.now - 1})
    assert poller.poll_once() == 0
    assert r.zcard("schedule") == 1


def test_outage_logged_once(
    clock: FakeClock, rand: FixedRand, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is unreachable every cycle fails, but only the first failure is logged."""
    unreachable = redis.Redis(
        port=free_port(),
        socket_connect_timeout=0.5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    poller = Poller(unreachable, Settings(), Client(redis=unreachable), clock=clock, rand=rand)
    with caplog.at_level(logging.ERROR, logger="pyqueue.scheduled"):
        assert poller._attempt(poller.poll_once) is False
        assert poller._attempt(poller.poll_once) is False
        assert poller._peek() is None
    failures = [rec for rec in caplog.records if "Redis is unavailable" in rec.getMessage()]
    assert len(failures) == 1
    assert poller.outage.down
    unreachable.close()


def test_outage_recovery_logged(
    r: redis.Redis, clock: FakeClock, rand: FixedRand, caplog: pytest.LogCaptureFixture
) -> None:
    poller = make_poller(r, clock, rand)
    poller.outage.failed(redis.ConnectionError("connection refused"))
    with caplog.at_level(logging.INFO, logger="pyqueue.scheduled"):
        assert poller._attempt(poller.poll_once) is True
    assert "Redis is available again" in caplog.text
    assert not poller.outage.down


def test_middleware_error_logged_each_cycle(
    r: redis.Redis, clock: FakeClock, rand: FixedRand, caplog: pytest.LogCaptureFixture
) -> None:
    """An error that is not Redis's is a bug: it is logged with its traceback every cycle."""

    def broken(payload: Payload, queue: str, call_next: Any) -> Payload | None:
        raise ValueError("middleware bug")

    client = Client(redis=r, middleware=ClientChain([broken]))
    poller = Poller(r, Settings(), client, clock=clock, rand=rand)
    r.zadd("schedule", {scheduled_member("j1"): clock.now - 1})
    with caplog.at_level(logging.ERROR, logger="pyqueue.scheduled"):
        assert poller._attempt(poller.poll_once) is False
        assert poller._attempt(poller.poll_once) is False
    failures = [rec for rec in caplog.records if "cycle failed" in rec.getMessage()]
    assert len(failures) == 2
    assert all(rec.exc_info is not None for rec in failures)
    assert r.zcard("schedule") == 1
    assert not poller.outage.down


def test_early_wake_many_processes(r: redis.Redis) -> None:
    """perform_in(1) jobs start about on time even though 12 processes stretch the interval.

    With 12 processes and the default 5 s average, a poller sleeps up to 60 s
    between cycles (and 10-15 s before the first). The earliest-score peek
    must still move each job within 2 s of its time.
    """
    register_processes(r, 12)
    client = Client(redis=r)
    pollers = [Poller(r, Settings(), Client(redis=r)) for _ in range(12)]
    assert pollers[0].next_wait() <= 60
    for poller in pollers:
        poller.start()
    lateness: list[float] = []
    try:
        for n in range(6):
            at = time.time() + 1
            client.push({"class": "MarkJob", "args": [n], "at": at})
            popped = r.brpop(["queue:default"], timeout=5)
            assert popped is not None, f"job {n} was not moved within 5 s"
            lateness.append(time.time() - at)
    finally:
        for poller in pollers:
            poller.stop()
    assert len(lateness) == 6
    assert max(lateness) < 2.0, f"lateness per job: {lateness}"
    assert r.zcard("schedule") == 0
    assert r.llen("queue:default") == 0
