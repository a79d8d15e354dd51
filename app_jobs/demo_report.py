"""The output of ``bin/demo``: the emails as they go out, the summary and the ``--once`` check."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import NoReturn

import click

from app_jobs import db, demo_data
from app_jobs.demo_run import Child, Run, check_children, hide_password, say
from pyqueue import config
from pyqueue.api import Stats
from pyqueue.connection import create_redis
from pyqueue.cron import CronStore

CONFIG_FILE = "config/pyqueue.yml"


class EmailEcho:
    """Prints each email the worker sent since the last call: console lines or new files."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.offset = 0
        self.seen: set[Path] = set()

    def print_new(self) -> None:
        if self.run.options.backend == "console":
            self._print_console_lines(self.run.child("worker"))
        elif self.run.options.backend == "file":
            self._print_new_files()

    def _print_console_lines(self, worker: Child) -> None:
        with worker.log_path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        # Only whole lines: the worker may be writing the next one right now.
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            if demo_data.CONSOLE_LINE.match(line):
                click.echo(f"  {line}")

    def _print_new_files(self) -> None:
        for path in sorted(self.run.email_dir.glob("*.json"), key=_delivery_number):
            if path not in self.seen:
                self.seen.add(path)
                click.echo(f"  [email] written to {path}")


def _delivery_number(path: Path) -> tuple[int, str]:
    # FileMailer names files delivery-<id>-attempt-<n>.json.
    parts = path.name.split("-")
    number = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return number, path.name


def summary_lines(run: Run) -> list[str]:
    """Return the summary: this run's emails and deliveries, the queues, the worker and cron."""
    with db.connect(run.servers.postgres.url) as conn:
        emails = _count(
            conn.execute(
                "SELECT status, count(*) FROM scheduled_emails WHERE event_id = %s GROUP BY status",
                (run.seed.event_id,),
            ).fetchall()
        )
        deliveries = Counter(d.status for d in demo_data.deliveries(conn, run.seed.event_id))
    stats = Stats(run.redis).snapshot()
    queues = ", ".join(f"{name} {stats.queues.get(name, 0)}" for name in demo_data.APP_QUEUES)
    return [
        f"scheduled emails: {_format(emails)}",
        f"deliveries:       {_format(deliveries)}",
        f"queues:           {queues}",
        f"sets:             scheduled {stats.scheduled_size}, retries {stats.retry_size}, "
        f"dead {stats.dead_size}",
        f"workers:          processes {stats.processes_size}, busy {stats.workers_size}, "
        f"processed {stats.processed}, failed {stats.failed} (written every 10 s)",
        f"cron:             {cron_line(run)}",
    ]


def _count(rows: list[tuple[object, ...]]) -> Counter[str]:
    return Counter({str(row[0]): int(str(row[1])) for row in rows})


def _format(counts: Counter[str]) -> str:
    return ", ".join(f"{status} {count}" for status, count in sorted(counts.items())) or "none"


def cron_line(run: Run) -> str:
    """Return each cron job with its next run, read as the worker stored them."""
    settings = config.load(CONFIG_FILE, {"redis_url": run.servers.redis.url})
    client = create_redis(settings.redis_url, pool_size=1)
    try:
        jobs = CronStore(client, settings).all()
    finally:
        client.close()
    parts = []
    for job in jobs:
        when = "-"
        if job.next_run is not None:
            when = dt.datetime.fromtimestamp(job.next_run, dt.UTC).strftime("%H:%M:%S UTC")
        parts.append(f"{job.name} next {when}")
    return ", ".join(parts) or "no cron jobs loaded"


def print_summary(run: Run, lines: list[str] | None = None) -> list[str]:
    """Print the summary (``lines`` when given, else read now); return its lines."""
    lines = summary_lines(run) if lines is None else lines
    now = dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC")
    click.echo(f"== summary at {now}, event {run.seed.event_id}")
    for line in lines:
        click.echo(f"   {line}")
    return lines


def print_commands(run: Run) -> None:
    """Print commands that inspect the running demo from another terminal."""
    redis_url = hide_password(run.servers.redis.url)
    click.echo("   inspect it from another terminal:")
    click.echo(f"     .venv/bin/pyqueue stats --redis-url {redis_url}")
    click.echo(f"     .venv/bin/pyqueue processes --redis-url {redis_url}")
    click.echo(f"     .venv/bin/pyqueue cron list --redis-url {redis_url}")
    click.echo(f"     .venv/bin/pyqueue web --redis-url {redis_url}   # dashboard on :9393")
    click.echo(f"     curl {run.web_url}/health")


def show_live(run: Run, echo: EmailEcho, last: list[str]) -> NoReturn:
    """Print the summary again whenever it changes, until Ctrl-C or until a child exits.

    ``last`` is the summary already on screen. Returns only by raising:
    KeyboardInterrupt on Ctrl-C, DemoError when a child exits.
    """
    print_commands(run)
    say(f"running; the summary is checked every {run.options.interval:g} s; Ctrl-C stops the demo")
    while True:
        time.sleep(run.options.interval)
        check_children(run)
        echo.print_new()
        lines = summary_lines(run)
        if lines != last:
            last = print_summary(run, lines)


def check_once(run: Run) -> int:
    """Check the finished run; print what passed or every problem; return the exit code."""
    seed = run.seed
    with db.connect(run.servers.postgres.url) as conn:
        statuses = demo_data.email_statuses(conn, seed.due_email_ids + seed.future_email_ids)
        found = demo_data.deliveries(conn, seed.event_id)
        applied = demo_data.applied_event_count(conn, [d.id for d in found])
    evidence = run.child("worker").log_path if run.options.backend == "console" else run.email_dir
    sends = demo_data.count_sends(run.options.backend, evidence, found)
    problems = demo_data.check_run(seed, statuses, found, sends, run.expected)
    if problems:
        for problem in problems:
            say(f"check failed: {problem}")
        return 1
    say(
        f"check passed: {len(seed.due_email_ids)} due emails sent once to each of "
        f"{seed.vendors} vendors ({len(found)} deliveries), {applied} webhook events applied, "
        f"{len(seed.future_email_ids)} future emails still scheduled"
    )
    return 0
