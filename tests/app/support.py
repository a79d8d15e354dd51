"""Helpers for the sender, retry and scanner tests: a settable clock, a context, sample rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

from app_jobs import models
from app_jobs.db import connect, create_pool
from app_jobs.dispatch import SendContext
from app_jobs.mailer import SendGridMailer
from app_jobs.settings import AppSettings
from tests.fixtures.fake_sendgrid import API_KEY, FakeSendGrid

# In the future, so that jobs scheduled from this clock land in the schedule set.
START = dt.datetime(2031, 5, 6, 9, 0, tzinfo=dt.UTC)


class Clock:
    """A clock that moves only when the test sets or advances it."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


def app_settings(
    database_url: str, redis_url: str, fake: FakeSendGrid | None = None, **overrides: Any
) -> AppSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "sendgrid_api_key": API_KEY,
        "sendgrid_host": fake.url if fake else "http://127.0.0.1:9",
        "sendgrid_timeout": 2.0,
        "db_pool_size": 6,
    }
    values.update(overrides)
    return AppSettings(**values)


@contextmanager
def send_context(settings: AppSettings, clock: Clock, mailer: Any = None) -> Iterator[SendContext]:
    """A context with its own pool (closed afterwards) and the SendGrid mailer by default."""
    pool = create_pool(settings)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield SendContext(
            settings=settings,
            pool=pool,
            mailer=mailer or SendGridMailer(settings),
            redis=client,
            clock=clock,
        )
    finally:
        pool.close()
        client.close()


@dataclasses.dataclass
class Sample:
    """An event with vendors, as created by ``make_event``."""

    event_id: int
    emails: list[str]


def make_event(
    conn: psycopg.Connection[Any],
    vendors: int = 3,
    title: str = "Spring Makers Market",
    venue: str | None = "Harbour Hall",
) -> Sample:
    event_id = models.create_event(conn, title, START + dt.timedelta(days=30), venue)
    emails = []
    for number in range(1, vendors + 1):
        email = f"vendor{number}@example.org"
        models.add_recipient(conn, event_id, f"Vendor {number}", email, f"Company {number}")
        emails.append(email)
    return Sample(event_id, emails)


def schedule(
    conn: psycopg.Connection[Any],
    event_id: int,
    at: dt.datetime,
    subject: str = "Welcome to {{event_title}}",
    body: str = "<p>Hello {{vendor_name}}</p>",
) -> int:
    return models.schedule_email(conn, event_id, subject, body, at)


def rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(query.encode(), params).fetchall()


def delivery_rows(url: str) -> dict[str, dict[str, Any]]:
    """Map recipient address -> delivery columns."""
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM email_deliveries ORDER BY id")
        return {row["recipient_email"]: row for row in cur.fetchall()}


def email_status(url: str, email_id: int) -> tuple[str, str | None]:
    result = rows(url, "SELECT status, error FROM scheduled_emails WHERE id = %s", (email_id,))
    return result[0][0], result[0][1]
