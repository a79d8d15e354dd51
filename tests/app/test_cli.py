"""The app-jobs command: migrate, seed, health and web."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
import redis
from click.testing import CliRunner

from app_jobs.cli import main
from app_jobs.db import connect
from app_jobs.mailer import CONFIG_ERROR_KEY
from app_jobs.sender import run_sender
from tests.app.support import Clock, app_settings, rows, send_context
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.redis_server import free_port


@pytest.fixture
def env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS app_jobs_cli")
        conn.execute("CREATE DATABASE app_jobs_cli")
    try:
        yield postgres_server.cluster.url("app_jobs_cli")
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS app_jobs_cli WITH (FORCE)")


def test_migrate_twice(fresh_database: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["migrate"], env={"DATABASE_URL": fresh_database})
    second = runner.invoke(main, ["migrate"], env={"DATABASE_URL": fresh_database})
    assert first.exit_code == 0, first.output
    assert "applied 0001_schema" in first.output
    assert second.exit_code == 0, second.output
    assert second.output == "database is up to date\n"


def test_migrate_unreachable_database() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2"
    result = CliRunner().invoke(main, ["migrate"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert "cannot reach PostgreSQL" in result.output
    assert "check DATABASE_URL" in result.output


def test_invalid_setting_exit_code() -> None:
    result = CliRunner().invoke(main, ["migrate"], env={"APP_JOBS_EMAIL_BACKEND": "pigeon"})
    assert result.exit_code == 5
    assert "APP_JOBS_EMAIL_BACKEND is 'pigeon'" in result.output


def test_seed_then_send_with_console(
    env: dict[str, str], database_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["seed"])
    second = runner.invoke(main, ["seed"])
    assert first.exit_code == 0, first.output
    assert "3 vendors and 3 scheduled emails" in first.output
    assert "already exists" in second.output
    assert rows(database_url, "SELECT count(*) FROM events") == [(1,)]

    settings = app_settings(database_url, redis_url, email_backend="console")
    from app_jobs.mailer import ConsoleMailer

    with send_context(settings, Clock(dt.datetime.now(dt.UTC)), ConsoleMailer()) as context:
        report = run_sender(context)
    assert report.emails_claimed == 1
    assert report.sent == 3
    printed = capsys.readouterr().out
    assert printed.count("[email] delivery=") == 3
    assert "subject='Welcome to Spring Makers Market'" in printed
    statuses = rows(database_url, "SELECT status FROM scheduled_emails ORDER BY id")
    assert statuses == [("sent",), ("scheduled",), ("scheduled",)]


def test_health_ok(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 0, result.output
    assert result.output == "postgres: ok\nredis: ok\nsendgrid: ok\n"


def test_health_shows_sendgrid_error(env: dict[str, str], r: redis.Redis) -> None:
    r.set(
        CONFIG_ERROR_KEY,
        json.dumps({"status": 401, "message": "bad key", "since": "2031-05-06T09:00:00+00:00"}),
    )
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 1
    assert (
        "sendgrid: configuration error since 2031-05-06T09:00:00+00:00: HTTP 401 bad key"
        in result.output
    )


def test_health_postgres_down(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 1
    assert "postgres: unreachable (OperationalError)" in result.output
    assert "redis: ok" in result.output


def test_health_redis_down(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 1
    assert "redis: unreachable (ConnectionError)" in result.output
    assert "sendgrid: unknown" in result.output


def test_web_serves_health(env: dict[str, str]) -> None:
    """`app-jobs web` serves the receiver with waitress on PORT."""
    port = free_port()
    process_env = dict(os.environ, **env, PORT=str(port), APP_JOBS_WEBHOOK_ALLOW_UNSIGNED="true")
    command = [sys.executable, "-c", "from app_jobs.cli import main; main()", "web"]
    process = subprocess.Popen(
        command, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        body = wait_for_health(f"http://127.0.0.1:{port}/health", process)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert body["status"] == "ok"


def wait_for_health(url: str, process: subprocess.Popen[bytes]) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, "app-jobs web exited early"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within 15 s")


def test_seed_sample_data(database_url: str) -> None:
    from app_jobs.cli import seed_sample

    now = dt.datetime(2031, 5, 6, 9, 0, tzinfo=dt.UTC)
    with connect(database_url) as conn:
        event_id = seed_sample(conn, now)
        again = seed_sample(conn, now)
    assert event_id is not None
    assert again is None
    due = rows(
        database_url,
        "SELECT name FROM scheduled_emails WHERE scheduled_for <= %s ORDER BY id",
        (now,),
    )
    assert due == [("welcome",)]
    assert rows(database_url, "SELECT count(*) FROM recipients") == [(3,)]
