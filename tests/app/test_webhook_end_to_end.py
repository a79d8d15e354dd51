"""Signed posts through the receiver, jobs through Redis, events applied in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app_jobs import db, settings
from app_jobs.settings import AppSettings
from app_jobs.webhook_jobs import EmailDeliveryProcessorJob
from app_jobs.webhooks import create_app
from tests.fixtures.sendgrid_events import (
    KeyPair,
    WSGIClient,
    create_delivery,
    event,
    fetch_all,
    fetch_one,
    run_queued_jobs,
    utc,
)

EMAIL = "user@example.com"
MESSAGE = "b26msg.filter0001.1.0"


@pytest.fixture
def app_env(database_url: str, redis_url: str) -> Iterator[None]:
    """Jobs read DATABASE_URL and REDIS_URL through the process-wide settings and pool."""
    settings.get_settings.cache_clear()
    db.close_pool()
    try:
        yield
    finally:
        db.close_pool()
        settings.get_settings.cache_clear()


@pytest.fixture
def client(app_env: None, redis_url: str, webhook_keys: KeyPair) -> WSGIClient:
    app_settings = AppSettings(redis_url=redis_url, webhook_public_keys=(webhook_keys.public_b64,))
    return WSGIClient(create_app(app_settings))


def sendgrid_event(name: str, timestamp: int, custom_args: bool, **fields: Any) -> dict[str, Any]:
    args = {"app_delivery_id": "1", "app_attempt": "1"} if custom_args else {}
    return event(name, timestamp, email=EMAIL, sg_message_id=MESSAGE, **args, **fields)


def b26_posts(custom_args: bool) -> list[list[dict[str, Any]]]:
    """The posts of the scenario, in arrival order; the last one arrives twice."""

    def make(name: str, timestamp: int, **fields: Any) -> dict[str, Any]:
        return sendgrid_event(name, timestamp, custom_args, **fields)

    group_unsubscribe = make("group_unsubscribe", 1714986200, asm_group_id=42)
    return [
        [make("open", 1714986105, sg_event_id="E3")],
        [
            make("processed", 1714986100, sg_event_id="E1"),
            make("delivered", 1714986102, sg_event_id="E2"),
        ],
        [
            make("click", 1714986110, sg_event_id="E4", url="https://example.com/"),
            make("delivered", 1714986102, sg_event_id="E2"),
        ],
        [make("open", 1714986105, sg_event_id="E3")],
        [group_unsubscribe],
        [dict(group_unsubscribe)],
    ]


@pytest.mark.parametrize("custom_args", [True, False], ids=["custom-args", "message-id"])
@pytest.mark.parametrize("run_each", [False, True], ids=["jobs-after", "jobs-between"])
def test_duplicate_out_of_order_events(
    database_url: str,
    redis_url: str,
    client: WSGIClient,
    webhook_keys: KeyPair,
    custom_args: bool,
    run_each: bool,
) -> None:
    """Duplicates, a missing event id and a late delivered leave one row each and go forward.

    The events are matched by the custom args the sender adds, or without
    them by the X-Message-Id prefix of sg_message_id and the address.
    """
    delivery = create_delivery(database_url, EMAIL, "b26msg")
    assert delivery.id == 1
    statuses = []
    jobs = 0

    for batch in b26_posts(custom_args):
        statuses.append(client.post_events(batch, webhook_keys.private_key).status)
        if run_each:
            jobs += run_queued_jobs(redis_url)
    jobs += run_queued_jobs(redis_url)

    assert statuses == [200] * 6
    assert jobs == 6
    stored = fetch_all(database_url, "SELECT event, sg_event_id, delivery_id FROM webhook_events")
    assert len(stored) == 5
    assert sorted(str(row["sg_event_id"]) for row in stored) == ["E1", "E2", "E3", "E4", "None"]
    assert {row["delivery_id"] for row in stored} == {delivery.id}
    row = fetch_one(database_url, "SELECT * FROM email_deliveries WHERE id = %s", [delivery.id])
    assert row["status"] == "clicked"
    assert row["delivered_at"] == utc("2024-05-06T09:01:42Z")
    assert row["opened_at"] == utc("2024-05-06T09:01:45Z")
    assert row["clicked_at"] == utc("2024-05-06T09:01:50Z")
    assert row["open_count"] == 1
    assert row["click_count"] == 1
    assert row["unsubscribed_at"] == utc("2024-05-06T09:03:20Z")
    suppressed = fetch_all(database_url, "SELECT email, kind, asm_group_id FROM suppressions")
    assert suppressed == [{"email": EMAIL, "kind": "group_unsubscribe", "asm_group_id": 42}]


def test_job_rerun_is_idempotent(
    database_url: str, redis_url: str, app_env: None, r: redis.Redis
) -> None:
    """A job that runs twice (a retry after a crash) changes nothing the second time."""
    delivery = create_delivery(database_url, EMAIL, "b26msg")
    batch = [
        sendgrid_event("delivered", 1714986102, True, sg_event_id="E2"),
        sendgrid_event("open", 1714986105, True, sg_event_id="E3"),
    ]

    EmailDeliveryProcessorJob().perform(batch)
    EmailDeliveryProcessorJob().perform(json.loads(json.dumps(batch)))

    row = fetch_one(database_url, "SELECT * FROM email_deliveries WHERE id = %s", [delivery.id])
    assert row["status"] == "opened"
    assert row["open_count"] == 1
    assert len(fetch_all(database_url, "SELECT id FROM webhook_events")) == 2


def test_job_rejects_non_list(app_env: None) -> None:
    with pytest.raises(TypeError, match="list of event objects"):
        EmailDeliveryProcessorJob().perform({"event": "open"})  # type: ignore[arg-type]


def test_soft_bounce_schedules_one_retry(
    database_url: str, redis_url: str, client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis
) -> None:
    """A soft bounce posted twice reaches the retry policy once: one retry, one hour later."""
    delivery = create_delivery(database_url, EMAIL, "b26msg")
    bounced_at = int(time.time()) - 60
    bounce = sendgrid_event(
        "bounce", bounced_at, True, sg_event_id="B1", type="blocked", reason="421 try later"
    )

    first = client.post_events([bounce], webhook_keys.private_key)
    second = client.post_events([bounce], webhook_keys.private_key)
    jobs = run_queued_jobs(redis_url)

    assert first.status == 200
    assert second.status == 200
    assert jobs == 2
    row = fetch_one(database_url, "SELECT * FROM email_deliveries WHERE id = %s", [delivery.id])
    assert row["status"] == "blocked"
    retry_at = dt.datetime.fromtimestamp(bounced_at + 3600, tz=dt.UTC)
    assert row["next_retry_at"] == retry_at
    scheduled = r.zrange("schedule", 0, -1, withscores=True)
    assert len(scheduled) == 1
    job = json.loads(scheduled[0][0])
    assert job["class"] == "EmailRetryJob"
    assert job["jid"] == row["retry_jid"]
    assert scheduled[0][1] == pytest.approx(retry_at.timestamp())


def test_concurrent_jobs_apply_each_event_once(database_url: str, app_env: None) -> None:
    """Four workers run overlapping batches at once, in opposite orders, without errors."""
    first = create_delivery(database_url, "first@example.com", "msg-a")
    second = create_delivery(database_url, "second@example.com", "msg-b")
    batch = []
    for delivery, address in ((first, "first@example.com"), (second, "second@example.com")):
        args = {"email": address, "app_delivery_id": str(delivery.id), "app_attempt": "1"}
        batch += [
            event("delivered", 1714986102, sg_event_id=f"D{delivery.id}", **args),
            *(
                event("open", 1714986105 + i, sg_event_id=f"O{delivery.id}-{i}", **args)
                for i in range(10)
            ),
            event("unsubscribe", 1714986300, sg_event_id=f"U{delivery.id}", **args),
        ]
    batches = [batch, batch[::-1], batch, batch[::-1]]
    barrier = threading.Barrier(len(batches))
    errors: list[BaseException] = []

    def work(events: list[dict[str, Any]]) -> None:
        barrier.wait(timeout=10)
        try:
            EmailDeliveryProcessorJob().perform(events)
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(events,)) for events in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(fetch_all(database_url, "SELECT id FROM webhook_events")) == len(batch)
    rows = fetch_all(database_url, "SELECT status, open_count FROM email_deliveries ORDER BY id")
    assert rows == [{"status": "opened", "open_count": 10}] * 2
    suppressed = fetch_all(database_url, "SELECT kind FROM suppressions")
    assert suppressed == [{"kind": "unsubscribe"}] * 2


ROOT = Path(__file__).resolve().parents[2]


def test_worker_process_applies_posts(
    database_url: str,
    redis_url: str,
    client: WSGIClient,
    webhook_keys: KeyPair,
    tmp_path: Path,
) -> None:
    """A real `pyqueue run` process loads the job by name and applies the posted events."""
    delivery = create_delivery(database_url, EMAIL, "b26msg")
    for batch in b26_posts(custom_args=True):
        assert client.post_events(batch, webhook_keys.private_key).status == 200
    log = tmp_path / "worker.log"
    command = [
        str(Path(sys.executable).with_name("pyqueue")),
        "run",
        "-r",
        "app_jobs.webhook_jobs",
        "-q",
        "email_webhooks",
        "-c",
        "2",
        "--redis-url",
        redis_url,
    ]
    with log.open("wb") as output:
        worker = subprocess.Popen(
            command, cwd=ROOT, env=dict(os.environ), stdout=output, stderr=subprocess.STDOUT
        )
    try:
        row = wait_for_status(database_url, delivery.id, "clicked", timeout=30)
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    output = log.read_text(errors="replace")
    assert row["open_count"] == 1, output
    assert exit_code == 0, output
    assert "events received=" in output
    assert EMAIL not in output


def wait_for_status(url: str, delivery_id: int, status: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = fetch_one(url, "SELECT * FROM email_deliveries WHERE id = %s", [delivery_id])
        stored = len(fetch_all(url, "SELECT id FROM webhook_events"))
        if row["status"] == status and stored == 5:
            return row
        if time.monotonic() > deadline:
            pytest.fail(f"delivery status is {row['status']!r} after {timeout} s, not {status!r}")
        time.sleep(0.1)
