"""Schema migrations: applied once, recorded, and a second run changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from app_jobs.db import connect, migrate, migration_files
from tests.fixtures.postgres import (
    PostgresCluster,
    PostgresServer,
    process_running,
    stop_orphaned_clusters,
)


def test_migrate_twice_is_noop(database_url: str) -> None:
    assert migrate(database_url) == []
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert sorted(versions) == [version for version, _ in migration_files()]


def test_migrate_fresh_database(postgres_server: PostgresServer) -> None:
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


def test_orphaned_cluster_stopped(postgres_server: PostgresServer) -> None:
    """A cluster left by a killed test session is stopped by the next session."""
    cluster = postgres_server.cluster
    if not isinstance(cluster, PostgresCluster):
        pytest.fail("this check needs Debian's PostgreSQL binaries and root")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.fixtures.postgres import PostgresCluster\n"
        "cluster = PostgresCluster(Path(sys.argv[1]))\n"
        "cluster.start()\n"
        "print(cluster.directory, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(cluster.bin_dir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    folder = Path(process.stdout.readline().strip())
    process.kill()
    process.wait()
    process.stdout.close()
    orphan = PostgresCluster(cluster.bin_dir, folder)
    pid = orphan.postmaster_pid()
    assert pid is not None

    stop_orphaned_clusters(cluster.bin_dir)

    assert not folder.exists()
    assert not process_running(pid)
    assert postgres_server.cluster.postmaster_pid() is not None
