"""Cron interop with Ruby Sidekiq 6.4 and sidekiq-cron 1.8 on one Redis.

Two pyqueue CronPoller threads and one Ruby process poll the same job on the
real clock. Every tick after the job was saved must be enqueued exactly once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pyqueue.client import Client
from pyqueue.connection import create_redis
from pyqueue.cron import CronJob, CronPoller, CronStore, load_schedule_file, parse_line
from pyqueue.cron_schedule import format_tick
from pyqueue.payload import loads
from tests.cron.helpers import make_settings, queued
from tests.cron.ruby_helpers import RubyCronSidekiq, ruby_cron
from tests.fixtures.ruby import require_ruby, web_get

pytestmark = pytest.mark.ruby

CRON_QUEUE = "cron_ticks"
# The Python pollers' first poll comes at most 15 s after they start.
PYTHON_FIRST_POLL = 15.5
# With INTEROP_POLL_INTERVAL set, Ruby's first cron poll comes at most 5 s after boot.
RUBY_FIRST_POLL = 5.5


@pytest.fixture
def ruby_cron_worker(redis_url: str, tmp_path: Path) -> Iterator[RubyCronSidekiq]:
    require_ruby()
    # The worker fetches from a queue of its own, so enqueued cron jobs stay countable.
    worker = RubyCronSidekiq(redis_url, ["ruby_only"], tmp_path / "ruby", cron_poll_interval=2)
    try:
        yield worker
    finally:
        worker.stop()


def start_pollers(redis_url: str, count: int) -> list[CronPoller]:
    settings = make_settings(cron_poll_interval=5)
    pollers = [
        CronPoller(create_redis(redis_url, pool_size=2), settings, Client(redis_url))
        for _ in range(count)
    ]
    for poller in pollers:
        poller.start()
    return pollers


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def pushed_by_ruby(raw: str) -> bool:
    """sidekiq-cron pushes the stored message, whose class comes before args;
    pyqueue's client writes args first."""
    return raw.index('"class"') < raw.index('"args"')


def save_job(r: redis.Redis, job: CronJob) -> int:
    """Save ``job`` well inside a second; return the tick its save marked as done.

    A tick counts from one second after it, so a save that straddled a whole
    second could mark either of two ticks.
    """
    sleep_until(math.floor(time.time()) + 1.2)
    saved_at = time.time()
    CronStore(r, make_settings()).save(job)
    assert time.time() - saved_at < 0.7, "saving the job took too long"
    saved_tick = parse_line(job.cron).last_tick(saved_at)
    assert saved_tick is not None
    return saved_tick


def check_once_per_tick(
    r: redis.Redis, name: str, line: str, saved_tick: int, stopped_at: float
) -> list[str]:
    """Assert one enqueue per tick between saving and stopping; return the raw payloads."""
    cron_line = parse_line(line)
    members = r.zrange(f"cron_job:{name}:enqueued", 0, -1, withscores=True)
    marker = format_tick(saved_tick)
    # Every member but the save marker is an enqueue lock spelled from its tick.
    # A lock spelled differently by either side would fail here.
    assert all(format_tick(score) == member for member, score in members if member != marker)
    ticks = sorted(int(score) for member, score in members if member != marker)
    raws = r.lrange(f"queue:{CRON_QUEUE}", 0, -1)
    assert isinstance(raws, list)
    # Every tick after the saved one is due. Each one that became visible (1 s
    # after it) at least 7 s before the stop was polled by someone, because
    # Ruby polls every 1 to 3 s.
    after_save = cron_line.next_runs(saved_tick, 100)
    expected = [tick for tick in after_save if tick + 8 <= stopped_at]
    assert expected, "the test ran too briefly to see a tick"
    enqueued = [(pushed_by_ruby(raw), loads(raw)["created_at"]) for raw in raws]
    assert ticks[: len(expected)] == expected, f"saved tick {saved_tick}, enqueued {enqueued}"
    assert all(tick <= stopped_at for tick in ticks)
    assert len(raws) == len(ticks)
    history = r.lrange(f"cron_job:{name}:jid_history", 0, -1)
    assert {loads(raw)["jid"] for raw in raws} == {loads(entry)["jid"] for entry in history}
    return raws


def test_seconds_job_shared_with_ruby(
    r: redis.Redis, redis_url: str, ruby_cron_worker: RubyCronSidekiq
) -> None:
    """Every 10 s for about 36 s: both sides poll, then Ruby alone; never two per tick."""
    pollers = start_pollers(redis_url, 2)
    started = time.time()
    try:
        ruby_cron_worker.start()
        sleep_until(max(started + PYTHON_FIRST_POLL, time.time() + RUBY_FIRST_POLL))
        saved_tick = save_job(
            r, CronJob(name="every10", cron="*/10 * * * * *", klass="TickJob", queue=CRON_QUEUE)
        )
        saved_at = time.time()
        sleep_until(saved_at + 21)
    finally:
        for poller in pollers:
            poller.stop()
    python_stopped = time.time()
    sleep_until(python_stopped + 15)
    # Ruby's cron poller ends at TERM, before the process exits.
    stopped_at = time.time()
    ruby_cron_worker.stop()

    raws = check_once_per_tick(r, "every10", "*/10 * * * * *", saved_tick, stopped_at)

    ruby_alone = [raw for raw in raws if loads(raw)["created_at"] > python_stopped]
    assert ruby_alone, "Ruby enqueued nothing while it polled alone"
    assert all(pushed_by_ruby(raw) for raw in ruby_alone)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_minute_job_shared_with_ruby(
    r: redis.Redis, redis_url: str, ruby_cron_worker: RubyCronSidekiq
) -> None:
    """``* * * * *`` for 1.5 to 2.5 minutes with two pyqueue pollers and Ruby."""
    pollers = start_pollers(redis_url, 2)
    started = time.time()
    try:
        ruby_cron_worker.start()
        sleep_until(max(started + PYTHON_FIRST_POLL, time.time() + RUBY_FIRST_POLL))
        saved_tick = save_job(
            r, CronJob(name="minutely", cron="* * * * *", klass="TickJob", queue=CRON_QUEUE)
        )
        saved_at = time.time()
        # Past the second minute boundary after saving, with time for the last poll.
        sleep_until((saved_at // 60 + 2) * 60 + 10)
    finally:
        stopped_at = time.time()
        for poller in pollers:
            poller.stop()
        ruby_cron_worker.stop()

    raws = check_once_per_tick(r, "minutely", "* * * * *", saved_tick, stopped_at)

    assert len(raws) >= 2


SCHEDULE = """
report:
  cron: "0 15 * * *"
  class: ReportJob
  queue: reports
tick:
  cron: "* * * * *"
  class: TickJob
  queue: cron_ticks
  status: disabled
"""


def test_web_ui_lists_pyqueue_jobs(
    r: redis.Redis, redis_url: str, sidekiq_web: str, tmp_path: Path
) -> None:
    path = tmp_path / "schedule.yml"
    path.write_text(SCHEDULE, encoding="utf-8")
    load_schedule_file(r, make_settings(), path)
    CronStore(r, make_settings()).enqueue_now("report")

    status, body = web_get(sidekiq_web, "/cron")
    detail_status, detail = web_get(sidekiq_web, "/cron/report")

    assert status == 200
    assert "report" in body
    assert "0&nbsp;15&nbsp;*&nbsp;*&nbsp;*" in body
    assert "tick" in body
    assert ">disabled<" in body.replace(" ", "").replace("\n", "")
    assert ">enabled<" in body.replace(" ", "").replace("\n", "")
    assert detail_status == 200
    assert "ReportJob" in detail


def test_job_disabled_by_ruby_stops(r: redis.Redis, redis_url: str) -> None:
    """Ruby's Job#disable! rewrites the whole hash; pyqueue reads it and no longer enqueues."""
    require_ruby()
    settings = make_settings()
    store = CronStore(r, settings)
    store.save(CronJob(name="tick", cron="* * * * *", klass="TickJob", queue=CRON_QUEUE))
    store.enqueue_now("tick")
    poller = CronPoller(r, settings, Client(redis=r))
    next_minute = (time.time() // 60 + 1) * 60

    ruby_cron(redis_url, 'Sidekiq::Cron::Job.find("tick").disable!')
    while_disabled = poller.poll_once(next_minute + 2)
    store.enable("tick")
    after_enable = poller.poll_once(next_minute + 2)

    job = store.require("tick")
    assert r.hget("cron_job:tick", "status") == "enabled"
    assert job.klass == "TickJob"
    assert job.queue == CRON_QUEUE
    assert job.last_run is not None
    assert while_disabled == 0
    assert after_enable == 1
    assert len(queued(r, CRON_QUEUE)) == 2
