"""The cron poller on an injected clock: due ticks, grace period, locks, waits and errors."""

from __future__ import annotations

import logging
import random
import re
import threading
import time

import pytest
import redis

from pyqueue.client import Client
from pyqueue.cron import CronJob, CronPoller
from tests.cron.helpers import (
    FakeClock,
    FixedRand,
    iso,
    make_poller,
    make_settings,
    make_store,
    queued,
    run_pollers,
    utc,
)

REPORT_TICK = "2024-05-06T15:00:00Z"


def save_report_job(r: redis.Redis, clock: FakeClock) -> None:
    """Create the daily 15:00 ReportJob the day before; the cluster then polls until 14:59:50."""
    clock.now = utc("2024-05-05T16:00:00Z")
    make_store(r, clock).save(CronJob(name="report", cron="0 15 * * *", klass="ReportJob"))
    clock.now = utc("2024-05-06T14:59:50Z")
    assert make_poller(r, clock).poll_once() == 0


def report_jobs(r: redis.Redis) -> list[str]:
    return [payload["class"] for payload in queued(r) if payload["class"] == "ReportJob"]


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_restart_inside_grace_enqueues(r: redis.Redis, clock: FakeClock, rand: float) -> None:
    """Stopped at 14:59:50, started at 15:00:40: the 15:00 run happens in the first poll."""
    save_report_job(r, clock)
    start = utc("2024-05-06T15:00:40Z")
    poller = make_poller(r, clock, rand=FixedRand(rand))

    enqueues = run_pollers([poller], clock, start, start + 15)

    assert len(enqueues) == 1
    assert enqueues[0][1] == 1
    assert report_jobs(r) == ["ReportJob"]
    assert r.zscore("cron_job:report:enqueued", REPORT_TICK) == 1715007600.0


def test_restart_after_grace_skips(r: redis.Redis, clock: FakeClock) -> None:
    """Started at 15:03:00 the 15:00 tick is 180 s old: skipped, never caught up."""
    save_report_job(r, clock)
    start = utc("2024-05-06T15:03:00Z")

    enqueues = run_pollers([make_poller(r, clock)], clock, start, start + 600)

    assert enqueues == []
    assert report_jobs(r) == []
    assert r.zscore("cron_job:report:enqueued", REPORT_TICK) is None


def test_longer_grace_catches_up(r: redis.Redis, clock: FakeClock) -> None:
    save_report_job(r, clock)
    start = utc("2024-05-06T15:03:00Z")
    poller = make_poller(r, clock, make_settings(cron_grace_period=600))
    first_poll = start + poller.initial_wait(start)

    enqueues = run_pollers([poller], clock, start, start + 600)

    assert enqueues == [(first_poll, 1)]
    assert report_jobs(r) == ["ReportJob"]
    assert r.zscore("cron_job:report:enqueued", REPORT_TICK) == 1715007600.0


@pytest.mark.parametrize("rands", [(0.5, 0.5), (0.1, 0.9)])
def test_two_processes_enqueue_once(
    r: redis.Redis, clock: FakeClock, rands: tuple[float, float]
) -> None:
    save_report_job(r, clock)
    start = utc("2024-05-06T15:00:40Z")
    pollers = [make_poller(r, clock, rand=FixedRand(value)) for value in rands]

    enqueues = run_pollers(pollers, clock, start, start + 120)

    assert sum(count for _, count in enqueues) == 1
    assert report_jobs(r) == ["ReportJob"]
    assert (
        r.zrange("cron_job:report:enqueued", 0, -1, withscores=True).count(
            (REPORT_TICK, 1715007600.0)
        )
        == 1
    )


def test_concurrent_polls_enqueue_once(r: redis.Redis, clock: FakeClock) -> None:
    """Two pollers polling the same tick at the same moment, in threads, 20 ticks in a row."""
    clock.now = utc("2024-05-06T10:00:30Z")
    make_store(r, clock).save(CronJob(name="tick", cron="* * * * *", klass="TickJob"))
    pollers = [make_poller(r, clock), CronPoller(r, make_settings(), Client(redis=r))]
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def poll(poller: CronPoller, now: float) -> None:
        barrier.wait()
        counts.append(poller.poll_once(now))

    for minute in range(1, 21):
        now = utc("2024-05-06T10:00:00Z") + 60 * minute + 1
        threads = [threading.Thread(target=poll, args=(poller, now)) for poller in pollers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

    assert sum(counts) == 20
    assert len(queued(r)) == 20


DIGEST_FIELDS = {
    "name": "digest",
    "cron": "0 9 * * *",
    "klass": "DigestJob",
    "status": "enabled",
    "args": "[]",
    "message": '{"queue":"default","class":"DigestJob","args":[]}',
    "active_job": "false",
}


def prepopulate_digest(r: redis.Redis, name: str, status: str, last_enqueue_time: str) -> None:
    """Write the job as Ruby sidekiq-cron 1.x would, with yesterday's 09:00 enqueued."""
    r.sadd("cron_jobs", f"cron_job:{name}")
    fields = dict(DIGEST_FIELDS, name=name, status=status, last_enqueue_time=last_enqueue_time)
    r.hset(f"cron_job:{name}", mapping=fields)
    r.zadd(f"cron_job:{name}:enqueued", {"2024-05-05T09:00:00Z": 1714899600.0})


@pytest.mark.parametrize(
    ("last_enqueue_time", "warns"),
    [
        ("2024-05-05 09:00:00 +0000", False),
        ("2024-05-05T09:00:00Z", False),
        ("2024-05-05 09:00:00 UTC", False),
        ("2024-05-05 09:00:00.123456 +0000", False),
        ("", True),
        ("garbage", True),
    ],
)
def test_ruby_written_hash_enqueues_once(
    r: redis.Redis,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    last_enqueue_time: str,
    warns: bool,
) -> None:
    prepopulate_digest(r, "digest", "enabled", last_enqueue_time)
    prepopulate_digest(r, "digest_paused", "disabled", last_enqueue_time)
    start = utc("2024-05-06T08:59:30Z")
    caplog.set_level(logging.WARNING, logger="pyqueue.cron_poller")

    enqueues = run_pollers([make_poller(r, clock)], clock, start, utc("2024-05-06T09:01:00Z"))

    assert sum(count for _, count in enqueues) == 1
    assert [payload["class"] for payload in queued(r)] == ["DigestJob"]
    assert r.zscore("cron_job:digest:enqueued", "2024-05-06T09:00:00Z") == 1714986000.0
    written = r.hget("cron_job:digest", "last_enqueue_time")
    assert written is not None
    assert re.fullmatch(r"2024-05-06 09:00:0\d \+0000", written)
    assert r.zscore("cron_job:digest_paused:enqueued", "2024-05-06T09:00:00Z") is None
    assert r.hget("cron_job:digest_paused", "last_enqueue_time") == last_enqueue_time
    jobs = make_store(r, clock).all()
    assert [(job.name, job.status) for job in jobs] == [
        ("digest", "enabled"),
        ("digest_paused", "disabled"),
    ]
    warnings = [record for record in caplog.records if "digest" in record.getMessage()]
    assert len(warnings) == (1 if warns else 0)


def test_unreadable_time_warns_once(
    r: redis.Redis, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Every poll reaches the time check (other processes took the ticks), one warning in all."""
    prepopulate_digest(r, "digest", "enabled", "garbage")
    r.hset("cron_job:digest", "cron", "* * * * *")
    poller = make_poller(r, clock)
    caplog.set_level(logging.WARNING, logger="pyqueue.cron_poller")

    for minute in range(5):
        tick = utc("2024-05-06T10:00:00Z") + 60 * minute
        r.zadd("cron_job:digest:enqueued", {iso(tick): tick})
        assert poller.poll_once(tick + 1) == 0

    assert len(caplog.records) == 1
    assert "garbage" in caplog.records[0].getMessage()


@pytest.mark.parametrize("processes", [1, 12])
def test_every_minute_polled(r: redis.Redis, clock: FakeClock, processes: int) -> None:
    """Any number of processes with random waits: one enqueue per minute, no minute missed."""
    for index in range(processes):
        r.sadd("processes", f"host:{index}:0123456789ab")
    start = utc("2024-05-06T10:00:30Z")
    clock.now = start
    make_store(r, clock).save(CronJob(name="tick", cron="* * * * *", klass="TickJob"))
    pollers = [
        make_poller(r, clock, rand=random.Random(index).random) for index in range(processes)
    ]

    enqueues = run_pollers(pollers, clock, start, start + 20 * 60)

    moments = [moment for moment, _ in enqueues]
    ticks = [utc("2024-05-06T10:00:00Z") + 60 * minute for minute in range(1, 21)]
    assert len(queued(r)) == 20
    assert [count for _, count in enqueues] == [1] * 20
    assert max(later - earlier for earlier, later in zip(moments, moments[1:], strict=False)) <= 70
    assert all(tick + 1 < moment < tick + 2 for tick, moment in zip(ticks, moments, strict=True))
    for tick in ticks:
        assert r.zscore("cron_job:tick:enqueued", iso(tick)) == tick


def test_grace_boundary(r: redis.Redis, clock: FakeClock) -> None:
    """A tick is due while int(now) - tick <= 60 s."""
    clock.now = utc("2024-05-06T09:59:30Z")
    make_store(r, clock).save(CronJob(name="hourly", cron="0 * * * *", klass="HourlyJob"))
    poller = make_poller(r, clock)

    assert poller.poll_once(utc("2024-05-06T11:01:01Z")) == 0
    assert poller.poll_once(utc("2024-05-06T11:01:00Z") + 0.9) == 1


def test_disabled_job_skipped(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(CronJob(name="tick", cron="* * * * *", klass="TickJob", status="disabled"))

    assert make_poller(r, clock).poll_once(clock.now + 61) == 0
    assert queued(r) == []


def test_last_enqueue_after_tick_skips(r: redis.Redis, clock: FakeClock) -> None:
    """A job enqueued at or after the tick is not enqueued again, and takes no lock."""
    store = make_store(r, clock)
    store.save(CronJob(name="tick", cron="* * * * *", klass="TickJob"))
    r.hset("cron_job:tick", "last_enqueue_time", "2024-05-06 12:01:00 +0000")

    assert make_poller(r, clock).poll_once(utc("2024-05-06T12:01:30Z")) == 0
    assert r.zscore("cron_job:tick:enqueued", "2024-05-06T12:01:00Z") is None


def test_old_markers_trimmed(r: redis.Redis, clock: FakeClock) -> None:
    store = make_store(r, clock)
    store.save(CronJob(name="tick", cron="* * * * *", klass="TickJob"))
    now = utc("2024-05-06T12:01:30Z")
    r.zadd(
        "cron_job:tick:enqueued",
        {"old": now - 86_401, "edge": now - 86_400, "recent": now - 3_600},
    )

    assert make_poller(r, clock).poll_once(now) == 1

    members = r.zrange("cron_job:tick:enqueued", 0, -1)
    assert "old" not in members
    assert {"edge", "recent", "2024-05-06T12:01:00Z"} <= set(members)


def test_failing_job_does_not_stop_others(
    r: redis.Redis, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(r, clock)
    store.save(CronJob(name="good", cron="* * * * *", klass="GoodJob"))
    store.save(CronJob(name="bad", cron="* * * * *", klass="BadJob"))
    # retry_for must be at least 1 s, so the push raises.
    r.hset("cron_job:bad", "message", '{"retry_for":0,"class":"BadJob","args":[]}')

    enqueued = make_poller(r, clock).poll_once(clock.now + 61)

    assert enqueued == 1
    assert [payload["class"] for payload in queued(r)] == ["GoodJob"]
    assert any("name=bad" in record.getMessage() for record in caplog.records)


def test_unparsable_line_logged_once(
    r: redis.Redis, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(r, clock)
    store.save(CronJob(name="good", cron="* * * * *", klass="GoodJob"))
    store.save(CronJob(name="odd", cron="* * * * *", klass="OddJob"))
    r.hset("cron_job:odd", "cron", "every 5 minutes")
    poller = make_poller(r, clock)
    caplog.set_level(logging.WARNING, logger="pyqueue.cron_poller")

    counts = [poller.poll_once(clock.now + 60 * minute + 1) for minute in range(1, 4)]

    assert counts == [1, 1, 1]
    assert [payload["class"] for payload in queued(r)] == ["GoodJob"] * 3
    odd = [record.getMessage() for record in caplog.records if "name=odd" in record.getMessage()]
    assert len(odd) == 1
    assert "every 5 minutes" in odd[0]


def test_date_as_argument_on_tick(r: redis.Redis, clock: FakeClock) -> None:
    make_store(r, clock).save(
        CronJob(name="dated", cron="* * * * *", klass="DatedJob", args=[1], date_as_argument=True)
    )
    now = utc("2024-05-06T12:01:00Z") + 0.25

    make_poller(r, clock).poll_once(now)

    [payload] = queued(r)
    assert payload["args"] == [1, now]


def test_v2_layout_poll(r: redis.Redis, clock: FakeClock) -> None:
    settings = make_settings(cron_layout="v2", cron_namespace="reports")
    make_store(r, clock, settings).save(CronJob(name="tick", cron="* * * * *", klass="TickJob"))

    assert make_poller(r, clock, settings).poll_once(utc("2024-05-06T12:01:02Z")) == 1
    assert r.zscore("cron_job:reports:tick:enqueued", "2024-05-06T12:01:00Z") == utc(
        "2024-05-06T12:01:00Z"
    )
    assert r.exists("cron_job:tick:enqueued", "cron_jobs") == 0


def test_next_wait_never_passes_minute(r: redis.Redis, clock: FakeClock) -> None:
    generator = random.Random(7)
    poller = make_poller(r, clock, rand=generator.random)
    for _ in range(500):
        now = utc("2024-05-06T10:00:00Z") + generator.uniform(0, 3600)
        wake = now + poller.next_wait(now)
        boundary = (now // 60 + 1) * 60
        assert wake <= boundary + 1.5


def test_next_wait_random_part(r: redis.Redis, clock: FakeClock) -> None:
    """Away from a boundary the wait is sidekiq-cron's: [avg/2, 1.5 avg), or [0, avg) from 10."""
    poller = make_poller(r, clock, rand=FixedRand(0.5))
    now = utc("2024-05-06T10:00:01Z")

    few = poller.next_wait(now)
    for index in range(10):
        r.sadd("processes", f"host:{index}:0123456789ab")
    many = poller.next_wait(now)

    assert few == 30.0
    assert many == 15.0


def test_next_wait_follows_seconds_line(r: redis.Redis, clock: FakeClock) -> None:
    clock.now = utc("2024-05-06T10:00:00Z")
    make_store(r, clock).save(CronJob(name="fast", cron="*/10 * * * * *", klass="FastJob"))
    poller = make_poller(r, clock, rand=FixedRand(0.0))

    poller.poll_once(utc("2024-05-06T10:00:01Z"))

    assert poller.next_wait(utc("2024-05-06T10:00:01Z")) == pytest.approx(10.2)


def test_next_wait_catches_fresh_tick(r: redis.Redis, clock: FakeClock) -> None:
    """A poll less than a second after a tick cannot see it, so the next poll comes soon."""
    clock.now = utc("2024-05-06T10:00:15Z")
    make_store(r, clock).save(CronJob(name="fast", cron="*/10 * * * * *", klass="FastJob"))
    poller = make_poller(r, clock, rand=FixedRand(0.0))
    now = utc("2024-05-06T10:00:20Z") + 0.45

    assert poller.poll_once(now) == 0
    wait = poller.next_wait(now)
    assert wait == pytest.approx(0.75)
    assert poller.poll_once(now + wait) == 1
    assert r.zscore("cron_job:fast:enqueued", "2024-05-06T10:00:20Z") is not None


def test_next_wait_minute_just_passed(r: redis.Redis, clock: FakeClock) -> None:
    poller = make_poller(r, clock, rand=FixedRand(0.0))

    assert poller.next_wait(utc("2024-05-06T10:01:00Z") + 0.5) == pytest.approx(0.7)


def test_initial_wait(r: redis.Redis, clock: FakeClock) -> None:
    poller = make_poller(r, clock, rand=FixedRand(0.5))

    assert poller.initial_wait(utc("2024-05-06T10:00:00Z")) == 12.5
    assert poller.initial_wait(utc("2024-05-06T10:00:55Z")) == 4.0
    assert poller.initial_wait(utc("2024-05-06T10:00:59.5Z")) == 0.0


def test_thread_polls_and_stops(r: redis.Redis) -> None:
    """Started 1.5 s before a minute ends, the thread polls within that minute, then stops."""
    clock = FakeClock(utc("2024-05-06T10:00:59.5Z"))
    make_store(r, clock).save(CronJob(name="tick", cron="* * * * *", klass="TickJob"))
    clock.now = utc("2024-05-06T10:01:58.5Z")
    poller = make_poller(r, clock, rand=FixedRand(0.0))

    poller.start()
    deadline = time.monotonic() + 5
    while not queued(r) and time.monotonic() < deadline:
        time.sleep(0.05)
    poller.stop()

    assert [payload["class"] for payload in queued(r)] == ["TickJob"]
    assert not any(thread.name == "pyqueue-cron" for thread in threading.enumerate())


def test_zero_interval_starts_nothing(r: redis.Redis, clock: FakeClock) -> None:
    poller = make_poller(r, clock, make_settings(cron_poll_interval=0))

    poller.start()
    poller.stop()

    assert not any(thread.name == "pyqueue-cron" for thread in threading.enumerate())
