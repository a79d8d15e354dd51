"""Admin commands: what an operator checks and fixes from the shell.

``stats``, ``queues``, ``jobs``, ``processes``, ``workers`` and ``health`` live
here; the ``retries``, ``scheduled`` and ``dead`` groups are built in
pyqueue.cli.admin_sets and re-exported. Every command parses its flags, calls
pyqueue.api and prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import sys

import click

from pyqueue.api import (
    HealthLimits,
    HealthReport,
    ProcessSet,
    Queue,
    Stats,
    Workers,
    check_health,
)
from pyqueue.api.health import DEFAULT_MEMORY_THRESHOLD
from pyqueue.api.stats import MAX_HISTORY_DAYS
from pyqueue.cli import tables
from pyqueue.cli.admin_sets import (
    confirm,
    connect,
    dead,
    json_option,
    resolve_url,
    retries,
    scheduled,
    show_problems,
    yes_option,
)
from pyqueue.cli.common import EXIT_FAILURE, fail, handle_errors, redis_url_option

__all__ = [
    "dead",
    "health",
    "jobs",
    "processes",
    "queues",
    "retries",
    "scheduled",
    "stats",
    "workers",
]


@click.command()
@click.option(
    "--days",
    type=click.IntRange(1, MAX_HISTORY_DAYS),
    default=None,
    help="Also show the daily processed and failed counts of this many days (UTC).",
)
@json_option
@redis_url_option
@handle_errors
def stats(days: int | None, as_json: bool, redis_url: str | None) -> None:
    """Show the counters: processed, failed, enqueued, set sizes, processes and busy workers."""
    api = Stats(connect(redis_url))
    snapshot = api.snapshot()
    history = api.history(days) if days else None
    if as_json:
        document = tables.plain(snapshot)
        if history is not None:
            document["history"] = tables.plain(history)
        tables.echo(tables.to_json(document))
        return
    rows = [
        ("processed", str(snapshot.processed)),
        ("failed", str(snapshot.failed)),
        ("enqueued", str(snapshot.enqueued)),
        ("scheduled", str(snapshot.scheduled_size)),
        ("retries", str(snapshot.retry_size)),
        ("dead", str(snapshot.dead_size)),
        ("processes", str(snapshot.processes_size)),
        ("busy", str(snapshot.workers_size)),
        ("latency", tables.duration(snapshot.default_queue_latency) + " (queue default)"),
    ]
    tables.echo(tables.render(("stat", "value"), rows))
    if history is not None:
        tables.echo()
        days_rows = [(d, str(n), str(history.failed[d])) for d, n in history.processed.items()]
        tables.echo(tables.render(("date", "processed", "failed"), days_rows))
    show_problems(snapshot.problems + (history.problems if history else ()))


@click.command()
@json_option
@redis_url_option
@handle_errors
def queues(as_json: bool, redis_url: str | None) -> None:
    """List every queue with its size and latency (the age of its oldest job)."""
    listing = Queue.summaries(connect(redis_url))
    if as_json:
        tables.echo(tables.to_json(listing))
        return
    rows = [
        (q.name, str(q.size), tables.duration(q.latency), "; ".join(q.problems))
        for q in listing.queues
    ]
    tables.echo(tables.render(("queue", "size", "latency", "problems"), rows))
    show_problems(listing.problems)


@click.command()
@click.argument("queue")
@click.option("--limit", type=click.IntRange(1), default=25, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--oldest-first", is_flag=True, help="Start at the next job to run.")
@json_option
@redis_url_option
@handle_errors
def jobs(
    queue: str,
    limit: int,
    offset: int,
    oldest_first: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """List the jobs waiting in QUEUE, newest first (exit 1 if there is no such queue)."""
    conn = connect(redis_url)
    page = Queue(queue, conn).page(offset, limit, newest_first=not oldest_first)
    if page.total == 0 and not page.problems and not conn.sismember("queues", queue):
        fail(f"no queue named {queue!r}; `pyqueue queues` lists them", EXIT_FAILURE)
    if as_json:
        tables.echo(tables.to_json(page))
        return
    rows = [
        (
            tables.text_or_none(job.jid),
            tables.text_or_none(job.display_class),
            tables.arguments(job),
            tables.when(job.enqueued_at),
            "; ".join(job.problems),
        )
        for job in page.jobs
    ]
    tables.echo(tables.render(("jid", "class", "args", "enqueued", "problems"), rows))
    tables.echo(f"{len(page.jobs)} of {tables.count(page.total, 'job')} from position {offset}")
    show_problems(page.problems)


@click.group(invoke_without_command=True)
@json_option
@redis_url_option
@click.pass_context
def processes(ctx: click.Context, as_json: bool, redis_url: str | None) -> None:
    """List live processes (the default), or quiet or stop one by its identity."""
    ctx.obj = redis_url
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_processes, as_json=as_json, redis_url=redis_url)


@processes.command("list")
@json_option
@redis_url_option
@handle_errors
def list_processes(as_json: bool, redis_url: str | None) -> None:
    """List live processes: identity, tag, queues, busy threads, last beat and RSS."""
    records = ProcessSet(connect(redis_url)).all()
    if as_json:
        tables.echo(tables.to_json({"processes": records}))
        return
    rows = [
        (
            p.identity,
            p.tag or "",
            ",".join(p.queues),
            f"{p.busy}/{p.concurrency}",
            tables.when(p.beat),
            f"{(p.rss_kb or 0) // 1024} MB",
            "quiet" if p.quiet else "",
            "; ".join(p.problems),
        )
        for p in records
    ]
    headers = ("identity", "tag", "queues", "busy", "beat", "rss", "state", "problems")
    tables.echo(tables.render(headers, rows))


@processes.command()
@click.argument("identity")
@redis_url_option
@click.pass_context
@handle_errors
def quiet(ctx: click.Context, identity: str, redis_url: str | None) -> None:
    """Tell process IDENTITY to stop fetching jobs (it keeps running the ones it has)."""
    ProcessSet(connect(resolve_url(ctx, redis_url))).quiet(identity)
    tables.echo(f"sent TSTP to {identity}; it goes quiet at its next heartbeat")


@processes.command()
@click.argument("identity")
@yes_option
@redis_url_option
@click.pass_context
@handle_errors
def stop(ctx: click.Context, identity: str, yes: bool, redis_url: str | None) -> None:
    """Tell process IDENTITY to finish its running jobs and exit."""
    confirm(yes, f"Stop process {identity}?")
    ProcessSet(connect(resolve_url(ctx, redis_url))).stop(identity)
    tables.echo(f"sent TERM to {identity}; it stops at its next heartbeat")


@processes.command()
@redis_url_option
@click.pass_context
@handle_errors
def cleanup(ctx: click.Context, redis_url: str | None) -> None:
    """Remove processes whose heartbeat expired (at most once a minute cluster-wide)."""
    removed = ProcessSet(connect(resolve_url(ctx, redis_url))).cleanup()
    tables.echo(f"removed {tables.count(removed, 'expired process', 'expired processes')}")


@click.command()
@json_option
@redis_url_option
@handle_errors
def workers(as_json: bool, redis_url: str | None) -> None:
    """List the jobs running now, as of each process's last heartbeat."""
    records = Workers(connect(redis_url)).all()
    if as_json:
        tables.echo(tables.to_json({"workers": records}))
        return
    rows = [
        (
            w.process,
            w.tid,
            tables.text_or_none(w.queue),
            tables.text_or_none(w.job.jid),
            tables.text_or_none(w.job.display_class),
            tables.when(w.run_at),
            "; ".join(w.problems + w.job.problems),
        )
        for w in records
    ]
    headers = ("process", "tid", "queue", "jid", "class", "started", "problems")
    tables.echo(tables.render(headers, rows))


@click.command()
@click.option("--max-enqueued", type=click.IntRange(0), help="Fail above this many waiting jobs.")
@click.option(
    "--max-failure-rate",
    type=click.FloatRange(0, 1),
    help="Fail when today's failed / processed (UTC day) is above this fraction.",
)
@click.option(
    "--max-latency",
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Fail when the oldest job of any queue has waited longer.",
)
@click.option(
    "--memory-threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=DEFAULT_MEMORY_THRESHOLD,
    show_default=True,
    help="Fail when Redis uses this fraction of maxmemory (skipped without maxmemory).",
)
@click.option(
    "--min-processes",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Fail with fewer live processes.",
)
@json_option
@redis_url_option
@handle_errors
def health(
    max_enqueued: int | None,
    max_failure_rate: float | None,
    max_latency: float | None,
    memory_threshold: float,
    min_processes: int,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """Check the cluster; exit 0 printing OK, or exit 1 listing every failing check."""
    limits = HealthLimits(
        max_enqueued=max_enqueued,
        max_failure_rate=max_failure_rate,
        max_latency=max_latency,
        memory_threshold=memory_threshold,
        min_processes=min_processes,
    )
    report = check_health(connect(redis_url), limits)
    tables.echo(tables.to_json(report) if as_json else _health_text(report))
    if not report.ok:
        sys.exit(EXIT_FAILURE)


def _health_text(report: HealthReport) -> str:
    failures = report.failures
    head = "OK" if report.ok else f"FAILED: {len(failures)} of {len(report.checks)} checks"
    lines = [head]
    for check in failures + tuple(c for c in report.checks if c.ok):
        lines.append(f"  {'fail' if not check.ok else 'ok'}  {check.name}: {check.message}")
    return "\n".join(lines)
