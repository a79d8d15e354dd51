"""Schema migrations: applied once, recorded, and a second run changes nothing."""

from __future__ import annotations

import psycopg

from app_jobs.db import connect, migrate, migration_files


def test_migrate_twice_is_noop(database_url: str) -> None:
    assert migrate(database_url) == []
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert sorted(versions) == [version for version, _ in migration_files()]


def test_migrate_fresh_database(postgres_server) -> None:
    """A new database gets every table; running migrate again applies nothing."""
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS app_jobs_fresh")
        conn.execute("CREATE DATABASE app_jobs_fresh")
    url = postgres_server.cluster.url("app_jobs_fresh")
    try:
        first = migrate(url)
        second = migrate(url)
        with connect(url) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS app_jobs_fresh")
    assert first == [version for version, _ in migration_files()]
    assert second == []
    expected = {
        "events",
        "recipients",
        "email_templates",
        "email_template_items",
        "scheduled_emails",
        "email_deliveries",
        "email_delivery_attempts",
        "webhook_events",
        "suppressions",
        "schema_migrations",
    }
    assert expected <= tables


def test_sessions_use_utc(database_url: str) -> None:
    with connect(database_url) as conn:
        row = conn.execute("SHOW TimeZone").fetchone()
    assert row is not None
    assert row[0] == "UTC"
