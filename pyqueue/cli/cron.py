"""``pyqueue cron``: list, enable, disable, run, load and delete sidekiq-cron jobs.

The layout, namespace and zone come from the settings (config file, then
PYQUEUE_* variables), so that the commands see the same keys as the workers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pyqueue import config
from pyqueue.cli.common import handle_errors, redis_url_option
from pyqueue.connection import create_redis
from pyqueue.cron import CronJob, CronStore, load_schedule_file

config_option = click.option(
    "-C",
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help="YAML config file (PYQUEUE_CONFIG); sets cron_layout, cron_namespace, cron_timezone.",
)


def _store(redis_url: str | None, config_file: str | None) -> CronStore:
    settings = config.load(config_file, {"redis_url": redis_url})
    return CronStore(create_redis(settings.redis_url, pool_size=2), settings)


def _store_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --redis-url and --config to a subcommand and map errors to exit codes."""
    return config_option(redis_url_option(handle_errors(func)))


@click.group()
def cron() -> None:
    """Recurring jobs, stored as sidekiq-cron stores them."""


@cron.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@_store_command
def list_jobs(as_json: bool, redis_url: str | None, config_file: str | None) -> None:
    """List every cron job with its status, schedule, last and next run (UTC)."""
    jobs = _store(redis_url, config_file).all()
    if as_json:
        click.echo(json.dumps([_record(job) for job in jobs], indent=2))
        return
    if not jobs:
        click.echo("no cron jobs")
        return
    rows = [("NAME", "STATUS", "CRON", "CLASS", "QUEUE", "LAST RUN", "NEXT RUN")]
    rows += [
        (
            job.name,
            job.status,
            job.cron,
            job.klass,
            job.queue,
            _when(job.last_run),
            _when(job.next_run),
        )
        for job in jobs
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _record(job: CronJob) -> dict[str, Any]:
    return {
        "name": job.name,
        "status": job.status,
        "cron": job.cron,
        "class": job.klass,
        "queue": job.queue,
        "args": job.args,
        "description": job.description,
        "last_enqueue_time": job.last_enqueue_time,
        "last_run": _iso(job.last_run),
        "next_run": _iso(job.next_run),
    }


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat().replace("+00:00", "Z")


@cron.command()
@click.argument("name")
@_store_command
def enable(name: str, redis_url: str | None, config_file: str | None) -> None:
    """Enable the cron job NAME."""
    _store(redis_url, config_file).enable(name)
    click.echo(f"enabled {name}")


@cron.command()
@click.argument("name")
@_store_command
def disable(name: str, redis_url: str | None, config_file: str | None) -> None:
    """Disable the cron job NAME; it stays listed and keeps its schedule."""
    _store(redis_url, config_file).disable(name)
    click.echo(f"disabled {name}")


@cron.command()
@click.argument("name")
@_store_command
def run(name: str, redis_url: str | None, config_file: str | None) -> None:
    """Enqueue the cron job NAME once now, whatever its schedule and status; print the jid."""
    click.echo(_store(redis_url, config_file).enqueue_now(name))


@cron.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_store_command
def load(file: Path, redis_url: str | None, config_file: str | None) -> None:
    """Load a sidekiq-cron schedule FILE (YAML); print the names loaded.

    Jobs that an earlier load saved and FILE no longer lists are deleted;
    jobs created any other way are left alone.
    """
    store = _store(redis_url, config_file)
    for name in load_schedule_file(store.redis, store.settings, file):
        click.echo(name)


@cron.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Delete without asking for confirmation.")
@_store_command
def delete(name: str, yes: bool, redis_url: str | None, config_file: str | None) -> None:
    """Delete the cron job NAME with its enqueue markers and history."""
    store = _store(redis_url, config_file)
    store.require(name)
    if not yes:
        click.confirm(f"Delete cron job {name!r}?", abort=True)
    store.destroy(name)
    click.echo(f"deleted {name}")
