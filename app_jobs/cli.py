"""The ``app-jobs`` command: migrate, seed, web and health.

The jobs themselves run in ``pyqueue run -C config/pyqueue.yml``; these
commands prepare the database, serve the webhook receiver and check the
app's dependencies. Every setting comes from the environment (see
app_jobs/settings.py). Exit codes: 0 success, 1 failure or failed check,
5 invalid setting.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
import psycopg
import redis

from app_jobs import db, models
from app_jobs.mailer import read_config_error
from app_jobs.settings import AppSettings, load_settings
from pyqueue.cli.common import EXIT_CONFIG, EXIT_FAILURE, fail
from pyqueue.connection import create_redis
from pyqueue.errors import ConfigError

SEED_EVENT_TITLE = "Spring Makers Market"
CHECK_TIMEOUT = 3


def _settings() -> AppSettings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
        raise  # unreachable: fail() exits


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Manage the email automation app that runs on pyqueue."""


@main.command()
def migrate() -> None:
    """Apply the database migrations not applied yet (safe to run again)."""
    settings = _settings()
    try:
        applied = db.migrate(settings.database_url)
    except psycopg.OperationalError as exc:
        fail(f"cannot reach PostgreSQL: {exc}; check DATABASE_URL", EXIT_FAILURE)
        return
    if applied:
        for version in applied:
            click.echo(f"applied {version}")
    else:
        click.echo("database is up to date")


@main.command()
def seed() -> None:
    """Create a sample event with vendors and scheduled emails (one due now)."""
    settings = _settings()
    try:
        with db.connect(settings.database_url) as conn:
            event_id = seed_sample(conn, dt.datetime.now(dt.UTC))
    except psycopg.OperationalError as exc:
        fail(f"cannot reach PostgreSQL: {exc}; check DATABASE_URL", EXIT_FAILURE)
        return
    if event_id is None:
        click.echo(f"sample event {SEED_EVENT_TITLE!r} already exists; nothing added")
    else:
        click.echo(f"created sample event {event_id} with 3 vendors and 3 scheduled emails")


SEED_VENDORS = (
    ("Ann Lee", "ann@example.org", "Lee & Daughters Ceramics"),
    ("Bo Park", "bo@example.org", "Park Preserves"),
    ("Cleo Diaz", "cleo@example.org", None),
)
SEED_WELCOME = (
    "<p>Hello {{vendor_first_name}},</p>"
    "<p>Thank you for joining <b>{{event_title}}</b> on {{event_date}} at {{event_venue}}."
    " Your stand for {{vendor_company}} is confirmed.</p>"
)


def seed_sample(conn: psycopg.Connection[Any], now: dt.datetime) -> int | None:
    """Insert the sample data unless it exists; return the new event id."""
    exists = conn.execute("SELECT 1 FROM events WHERE title = %s", (SEED_EVENT_TITLE,)).fetchone()
    if exists:
        return None

    starts_at = (now + dt.timedelta(days=30)).replace(hour=9, minute=0, second=0, microsecond=0)
    event_id = models.create_event(conn, SEED_EVENT_TITLE, starts_at, "Harbour Hall, Pier 4")
    for name, email, company in SEED_VENDORS:
        models.add_recipient(conn, event_id, name, email, company)

    emails = [
        (
            "welcome",
            "on_signup",
            now - dt.timedelta(minutes=1),
            "Welcome to {{event_title}}",
            SEED_WELCOME,
        ),
        (
            "one_week",
            "before_event",
            starts_at - dt.timedelta(days=7),
            "{{event_title}}: one week to go",
            "Hello {{vendor_name}},\n\nSetup opens at {{event_time}} on {{event_date}}.",
        ),
        (
            "one_day",
            "before_event",
            starts_at - dt.timedelta(days=1),
            "See you tomorrow at {{event_venue}}",
            "Hello {{vendor_name}},\n\nDoors open at {{event_time}}.",
        ),
    ]
    for name, trigger, scheduled_for, subject, body in emails:
        models.schedule_email(
            conn, event_id, subject, body, scheduled_for, name=name, trigger_type=trigger
        )
    return event_id


@main.command()
@click.option("--host", default=None, help="Address to listen on (APP_JOBS_WEB_HOST).")
@click.option("--port", type=int, default=None, help="TCP port (PORT or APP_JOBS_WEB_PORT).")
@click.option("--threads", type=int, default=8, show_default=True, help="Waitress threads.")
def web(host: str | None, port: int | None, threads: int) -> None:
    """Serve the SendGrid webhook receiver and /health with waitress."""
    import waitress

    from app_jobs.webhooks import create_app

    settings = _settings()
    try:
        app = create_app(settings)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
        return
    waitress.serve(
        app, host=host or settings.web_host, port=port or settings.web_port, threads=threads
    )


@main.command()
def health() -> None:
    """Check PostgreSQL, Redis and the SendGrid key; exit 1 if any check fails."""
    settings = _settings()
    results = {
        "postgres": check_postgres(settings),
        "redis": check_redis(settings),
    }
    results["sendgrid"] = check_sendgrid(settings) if results["redis"] == "ok" else "unknown"
    for name, result in results.items():
        click.echo(f"{name}: {result}")
    if any(result != "ok" for result in results.values()):
        raise SystemExit(EXIT_FAILURE)


def check_postgres(settings: AppSettings) -> str:
    try:
        with db.connect(settings.database_url, connect_timeout=CHECK_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def check_redis(settings: AppSettings) -> str:
    client = create_redis(settings.redis_url, pool_size=1, socket_timeout=CHECK_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
    return "ok"


def check_sendgrid(settings: AppSettings) -> str:
    client = create_redis(settings.redis_url, pool_size=1, socket_timeout=CHECK_TIMEOUT)
    try:
        error = read_config_error(client)
    finally:
        client.close()
    if error is None:
        return "ok"
    return (
        f"configuration error since {error.get('since')}: HTTP {error.get('status')} "
        f"{error.get('message')}"
    )
