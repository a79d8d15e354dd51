"""Sidekiq 6.4's own Web UI shows what ``pyqueue run`` writes: process, jobs, failures, counts."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
import redis

from pyqueue import foreign
from tests.fixtures.ruby import wait_for_records, web_get
from tests.interop.conftest import PyqueueFactory
from tests.interop.dataset import ACCEPTED_EDGE_ARGS
from tests.interop.polling import wait_until

pytestmark = pytest.mark.ruby

QUEUE = "webui"
PARKED = "webui_parked"  # no worker listens here, so its jobs stay listed
PAGES = ["/", "/busy", "/queues", f"/queues/{QUEUE}", f"/queues/{PARKED}", "/scheduled"]
PAGES += ["/retries", "/morgue", "/cron", "/stats"]


def stats(url: str) -> dict[str, Any]:
    status, body = web_get(url, "/stats")
    assert status == 200, body[:500]
    data = json.loads(body)["sidekiq"]
    assert isinstance(data, dict)
    return data


def entry_key(r: redis.Redis, key: str) -> str:
    """Return the Web UI's detail key ``<score>-<jid>`` of the only entry of a sorted set."""
    ((member, score),) = r.zrange(key, 0, -1, withscores=True)
    return f"{score!r}-{json.loads(member)['jid']}"


def test_web_ui_shows_pyqueue_data(
    sidekiq_web: str, pyqueue_run: PyqueueFactory, redis_url: str, r: redis.Redis
) -> None:
    worker = pyqueue_run([QUEUE], concurrency=3, timeout=1)
    record = foreign("RecordArgsJob", queue=QUEUE)
    record.perform_async("one")
    record.perform_async("two")
    foreign("AlwaysFailJob", queue=QUEUE, backtrace=10).perform_async(7)
    foreign("DieNowJob", queue=QUEUE, retry=0).perform_async("dead-on-arrival")
    sleeping = foreign("SleepJob", queue=QUEUE).perform_async(30.0)
    foreign("RecordArgsJob", queue=QUEUE).perform_in(3600, "later")
    foreign("RecordArgsJob", queue=PARKED).perform_async(*ACCEPTED_EDGE_ARGS)

    wait_for_records(r, 2)
    wait_until(
        lambda: r.zcard("retry") == 1 and r.zcard("dead") == 1, description="retry and dead entries"
    )
    counts = wait_until(
        lambda: (s := stats(sidekiq_web))["processed"] == 4 and s["busy"] == 1 and s,
        description="the dashboard counts",
    )
    assert counts["failed"] == 2
    assert counts["processes"] == 1
    assert counts["retries"] == 1
    assert counts["dead"] == 1
    assert counts["scheduled"] == 1

    status, busy = web_get(sidekiq_web, "/busy")
    assert status == 200
    hostname, pid, _nonce = worker.identity.split(":")
    assert f"{hostname}:{pid}" in busy
    assert "pyqueue-interop" in busy
    assert sleeping is not None and sleeping in busy
    assert "SleepJob" in busy

    status, retries = web_get(sidekiq_web, "/retries")
    assert status == 200
    assert "AlwaysFailJob" in retries
    assert "boom from AlwaysFailJob args=[7]" in html.unescape(retries)

    status, morgue = web_get(sidekiq_web, "/morgue")
    assert status == 200
    assert "DieNowJob" in morgue
    assert "die now" in morgue

    status, detail = web_get(sidekiq_web, f"/retries/{entry_key(r, 'retry')}")
    assert status == 200
    assert "InteropError" in detail
    assert "jobs.py" in detail, "the backtrace pyqueue stored is not shown"
    status, dead_detail = web_get(sidekiq_web, f"/morgue/{entry_key(r, 'dead')}")
    assert status == 200
    assert "die now" in dead_detail

    for page in PAGES:
        status, body = web_get(sidekiq_web, page)
        assert status == 200, f"{page} answered {status}: {body[:300]}"

    assert worker.stop() == 0
    wait_until(
        lambda: stats(sidekiq_web)["processes"] == 0, description="the process to leave /busy"
    )
