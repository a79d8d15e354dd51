"""PostgreSQL access: the process-wide connection pool and the schema migrations.

Jobs borrow a connection from the pool for one short transaction at a time
and never hold one across a network call to SendGrid. Sessions run in UTC so
that timestamps read back compare equal to the aware datetimes written.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from app_jobs.settings import AppSettings, get_settings

log = logging.getLogger(__name__)

# Every session of the app uses UTC.
SESSION_OPTIONS = "-c TimeZone=UTC"
# Any constant works; it only has to be the same for every `app-jobs migrate`.
MIGRATION_LOCK_ID = 0x6170706A6F6273

_pool: ConnectionPool[psycopg.Connection[Any]] | None = None
_pool_lock = threading.Lock()


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open one connection in UTC (for commands and tests; jobs use the pool)."""
    return psycopg.connect(url, options=SESSION_OPTIONS, **kwargs)


def create_pool(settings: AppSettings) -> ConnectionPool[psycopg.Connection[Any]]:
    """Open a pool of at most ``settings.pool_size`` connections.

    A thread that finds every connection busy waits up to 30 s for one.
    """
    return ConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=settings.pool_size,
        kwargs={"options": SESSION_OPTIONS},
        name="app_jobs",
        open=True,
    )


def get_pool() -> ConnectionPool[psycopg.Connection[Any]]:
    """Return the process-wide pool, opened from ``get_settings()`` on first use."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = create_pool(get_settings())
    return _pool


def close_pool() -> None:
    """Close the process-wide pool (the next ``get_pool`` opens a new one)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


def migration_files() -> list[tuple[str, str]]:
    """Return (version, SQL) for every migrations/NNNN_*.sql file, in file-name order."""
    folder = resources.files("app_jobs") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


def migrate(url: str) -> list[str]:
    """Apply the migrations not applied yet; return their versions (empty when up to date).

    Each file runs in its own transaction together with its row in
    ``schema_migrations``, so a failing file leaves no half-applied schema. An
    advisory lock makes two concurrent runs apply each file once.
    """
    applied: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                log.info("applied migration %s", version)
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied
