"""The email app under a real `pyqueue run` worker, configured by config/pyqueue.yml."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from app_jobs.db import connect
from pyqueue.client import Client
from tests.app.support import delivery_rows, email_status, make_event, schedule
from tests.fixtures.fake_sendgrid import API_KEY, FakeSendGrid

ROOT = Path(__file__).resolve().parents[2]


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def test_worker_sends_due_email(
    database_url: str, redis_url: str, r: redis.Redis, fake_sendgrid: FakeSendGrid
) -> None:
    """The worker loads the jobs and the schedule, runs the sender, and stops on TERM."""
    with connect(database_url) as conn:
        sample = make_event(conn, vendors=2)
        email_id = schedule(
            conn, sample.event_id, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        )
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        SENDGRID_API_KEY=API_KEY,
        APP_JOBS_SENDGRID_HOST=fake_sendgrid.url,
        PYQUEUE_CONCURRENCY="2",
    )
    command = [sys.executable, "-c", "from pyqueue.cli import main; main()", "run"]
    command += ["-C", "config/pyqueue.yml", "-t", "2"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        Client(redis_url).push(
            {"class": "EmailSenderWorker", "args": [], "queue": "email_delivery"}
        )
        wait_until(lambda: email_status(database_url, email_id)[0] == "sent")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, output.decode(errors="replace")
    assert sorted(request.recipient for request in fake_sendgrid.requests) == sample.emails
    assert {row["status"] for row in delivery_rows(database_url).values()} == {"sent"}
    assert r.sismember("cron_jobs", "cron_job:email_sender_worker")
    assert r.sismember("cron_jobs", "cron_job:email_retry_scanner_job")
    assert b"@example.org" not in output
    assert API_KEY.encode() not in output
