"""``bin/demo --once`` in a subprocess: the whole email flow on private servers.

The demo always gets the test fixtures' servers or the flag to start
embedded ones in a temporary folder, so it never probes or touches a
server on the default ports.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from app_jobs import models
from tests.fixtures.postgres import postgres_bin_dir, process_running
from tests.fixtures.redis_server import free_port
from tests.fixtures.sendgrid_events import fetch_all

ROOT = Path(__file__).resolve().parents[1]
DEMO_TIMEOUT = 120
VENDORS = 3
DUE_EMAILS = 2
# processed + delivered for every delivery, and an open for every other one.
EVENTS = 2 * VENDORS * DUE_EMAILS + VENDORS


def run_demo(state_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = ["bin/demo", "--once", "--state-dir", str(state_dir), "--port", str(free_port())]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )


def started_pids(output: str) -> set[int]:
    """Return the pids the demo reported for its children and its embedded Redis."""
    return {int(pid) for pid in re.findall(r"\bpid (\d+)", output)}


def demo_rows(url: str) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    emails = fetch_all(
        url,
        "SELECT s.id, s.name, s.status FROM scheduled_emails s"
        " JOIN events e ON e.id = s.event_id WHERE starts_with(e.title, '[demo] ') ORDER BY s.id",
    )
    deliveries = fetch_all(
        url,
        "SELECT d.id, d.attempt, d.status, d.send_errors FROM email_deliveries d"
        " JOIN scheduled_emails s ON s.id = d.scheduled_email_id"
        " JOIN events e ON e.id = s.event_id WHERE starts_with(e.title, '[demo] ') ORDER BY d.id",
    )
    return emails, deliveries


def test_demo_once_with_given_servers(
    redis_url: str, database_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """REDIS_URL and DATABASE_URL are used as given; each due email goes out once per vendor."""
    env = dict(os.environ, REDIS_URL=redis_url, DATABASE_URL=database_url)
    state = tmp_path / "state"

    result = run_demo(state, env, "--backend", "file")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "check passed" in result.stdout
    emails, deliveries = demo_rows(database_url)
    assert Counter(row["status"] for row in emails) == {"sent": DUE_EMAILS, "scheduled": 2}
    assert len(deliveries) == VENDORS * DUE_EMAILS
    assert {row["attempt"] for row in deliveries} == {1}
    assert {row["send_errors"] for row in deliveries} == {0}
    assert Counter(row["status"] for row in deliveries) == {"opened": 3, "delivered": 3}

    files = Counter(path.name for path in (state / "emails").glob("*/delivery-*.json"))
    assert sorted(files) == sorted(f"delivery-{row['id']}-attempt-1.json" for row in deliveries)
    assert set(files.values()) == {1}
    applied = fetch_all(database_url, "SELECT event, delivery_id FROM webhook_events")
    assert len(applied) == EVENTS
    assert {row["delivery_id"] for row in applied} == {row["id"] for row in deliveries}

    for queue in ("email_delivery", "email_webhooks", "default"):
        assert r.llen(f"queue:{queue}") == 0, queue
    assert r.scard("processes") == 0
    assert r.sismember("cron_jobs", "cron_job:email_sender_worker")
    pids = started_pids(result.stdout)
    assert len(pids) == 2
    for pid in pids:
        assert not process_running(pid), pid


@pytest.fixture
def embedded_state() -> Iterator[Path]:
    """A state folder that the postgres user can reach, and cleanup if the demo left a server."""
    # mkdtemp makes the folder private to root; the embedded cluster runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="app-jobs-demo-"))
    folder.chmod(0o755)
    try:
        yield folder / "state"
    finally:
        data = folder / "state" / "postgres" / "data"
        bin_dir = postgres_bin_dir()
        if (data / "postmaster.pid").exists() and bin_dir is not None:
            command = [str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"]
            if os.geteuid() == 0:
                command = ["runuser", "-u", "postgres", "--", *command]
            subprocess.run(command, capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_demo_once_with_embedded_servers(embedded_state: Path) -> None:
    """--embedded starts redis-server and PostgreSQL under the state folder and stops them."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("REDIS_URL", "DATABASE_URL")
    }

    result = run_demo(embedded_state, env, "--embedded")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "check passed" in result.stdout
    assert "embedded redis-server" in result.stdout
    assert "embedded PostgreSQL" in result.stdout
    console_lines = re.findall(r"^  \[email\] delivery=(\d+) attempt=1 ", result.stdout, re.M)
    assert len(console_lines) == VENDORS * DUE_EMAILS
    assert len(set(console_lines)) == VENDORS * DUE_EMAILS
    assert (embedded_state / "postgres" / "data" / "PG_VERSION").exists()
    assert not (embedded_state / "postgres" / "data" / "postmaster.pid").exists()
    pids = started_pids(result.stdout)
    assert len(pids) == 3
    for pid in pids:
        assert not process_running(pid), pid


def test_demo_rejects_database_with_other_emails(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """A due email of a real event is left alone: the demo exits 1 before starting anything."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        event_id = models.create_event(conn, "Harvest Fair")
        models.add_recipient(conn, event_id, "Dee Roe", "dee@example.org")
        due = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        email_id = models.schedule_email(conn, event_id, "Hi", "Hello", due)
    env = dict(os.environ, REDIS_URL=redis_url, DATABASE_URL=database_url)

    result = run_demo(tmp_path / "state", env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "did not create" in result.stderr
    rows = fetch_all(database_url, "SELECT status FROM scheduled_emails WHERE id = %s", [email_id])
    assert rows == [{"status": "scheduled"}]
    demo_events = fetch_all(
        database_url, "SELECT id FROM events WHERE starts_with(title, '[demo] ')"
    )
    assert demo_events == []


def test_demo_rejects_redis_with_waiting_jobs(
    redis_url: str, database_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """Jobs already waiting in the worker's queues belong to someone else: exit 1, left as is."""
    r.lpush("queue:default", '{"class":"OtherAppJob","args":[],"jid":"abc","queue":"default"}')
    env = dict(os.environ, REDIS_URL=redis_url, DATABASE_URL=database_url)

    result = run_demo(tmp_path / "state", env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "default (1 jobs)" in result.stderr
    assert r.llen("queue:default") == 1
