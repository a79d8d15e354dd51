"""``bin/demo``: run the whole email automation on one machine and show what it does.

The demo finds or starts Redis and PostgreSQL (app_jobs.demo_servers),
migrates, seeds a sample event (app_jobs.demo_data), then starts two child
processes exactly as a deployment runs them: the webhook receiver
``app-jobs web`` and the worker ``pyqueue run -C config/pyqueue.yml``, which
also loads the cron schedule. It enqueues EmailSenderWorker once instead of
waiting for its 5-minute cron tick, posts signed sample webhook events for
the sent deliveries and prints a summary (app_jobs.demo_report). ``--once``
checks the result and exits, 0 when every check passed; without it the
summary refreshes until Ctrl-C. Either way the demo stops every process it
started, by pid.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
import redis

from app_jobs import db, demo_data
from app_jobs.demo_report import CONFIG_FILE, EmailEcho, check_once, print_summary, show_live
from app_jobs.demo_run import (
    Child,
    DemoError,
    Options,
    Run,
    console_script,
    health_ok,
    hide_password,
    say,
    start_child,
    stop_children,
    wait_until,
    worker_registered,
)
from app_jobs.demo_servers import ServerError, Servers, free_port, port_open, servers_for_demo
from app_jobs.webhooks import WEBHOOK_PATH
from pyqueue import keys
from pyqueue.client import Client
from pyqueue.connection import create_redis

DEFAULT_WEB_PORT = 8000
STEP_TIMEOUT = 60.0
EXIT_INTERRUPTED = 130


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--once", is_flag=True, help="Run the flow to the end, check the result and exit.")
@click.option(
    "--backend",
    type=click.Choice(["console", "file"]),
    default="console",
    show_default=True,
    help="Where emails go: printed into the worker log, or one JSON file each.",
)
@click.option(
    "--sendgrid", is_flag=True, help="Send through SendGrid with SENDGRID_API_KEY (sandbox)."
)
@click.option("--no-sandbox", is_flag=True, help="With --sendgrid: let SendGrid deliver.")
@click.option(
    "--embedded", is_flag=True, help="Start embedded servers even if 6379 or 5432 respond."
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Folder for logs, emails and the embedded servers' data.",
)
@click.option(
    "--port",
    "web_port",
    type=int,
    default=None,
    help=f"Port of the webhook receiver (default {DEFAULT_WEB_PORT}, else a free one).",
)
@click.option(
    "--timeout", type=float, default=STEP_TIMEOUT, show_default=True, help="Seconds per step."
)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between summaries."
)
def main(
    once: bool,
    backend: str,
    sendgrid: bool,
    no_sandbox: bool,
    embedded: bool,
    state_dir: Path,
    web_port: int | None,
    timeout: float,
    interval: float,
) -> None:
    """Run the email automation with sample data: worker, cron and webhook receiver."""
    if sendgrid and not os.environ.get("SENDGRID_API_KEY"):
        raise click.UsageError("--sendgrid needs SENDGRID_API_KEY in the environment")
    if no_sandbox and not sendgrid:
        raise click.UsageError("--no-sandbox applies only with --sendgrid")
    if not Path(CONFIG_FILE).is_file():
        raise click.UsageError(f"{CONFIG_FILE} not found; run the demo from the repository root")
    options = Options(
        once=once,
        backend="sendgrid" if sendgrid else backend,
        sandbox=not no_sandbox,
        embedded_only=embedded,
        state_dir=state_dir.resolve(),
        web_port=web_port if web_port is not None else pick_web_port(),
        timeout=timeout,
        interval=interval,
    )
    # INT is set explicitly because a shell that starts the demo in the background
    # makes children ignore it; TERM ends the demo as Ctrl-C does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = run_demo(options)
    except (DemoError, ServerError) as exc:
        click.echo(f"demo: error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        say("interrupted")
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def pick_web_port() -> int:
    return free_port() if port_open("127.0.0.1", DEFAULT_WEB_PORT) else DEFAULT_WEB_PORT


def run_demo(options: Options) -> int:
    """Run every step and return the exit code; stop what was started, also on Ctrl-C."""
    for folder in ("logs", "emails"):
        (options.state_dir / folder).mkdir(parents=True, exist_ok=True)
    with servers_for_demo(options.state_dir, options.embedded_only, os.environ) as servers:
        say(f"Redis:      {hide_password(servers.redis.url)} ({servers.redis.description})")
        say(f"PostgreSQL: {hide_password(servers.postgres.url)} ({servers.postgres.description})")
        run = prepare(options, servers)
        try:
            return start_and_show(run)
        finally:
            stop_children(run.children)
            run.redis.close()


def prepare(options: Options, servers: Servers) -> Run:
    """Migrate, check that the servers contain no one else's pending work, and seed."""
    applied = db.migrate(servers.postgres.url)
    say(f"migrated: {', '.join(applied)}" if applied else "database schema is up to date")
    client = create_redis(servers.redis.url, pool_size=4)
    try:
        check_redis_is_free(client)
        with db.connect(servers.postgres.url) as conn:
            check_database_is_free(conn)
            seed = demo_data.seed_demo(conn, dt.datetime.now(dt.UTC))
    except BaseException:
        client.close()
        raise
    say(
        f"seeded event {seed.event_id} {demo_data.EVENT_TITLE!r}: {seed.vendors} vendors, "
        f"{len(seed.due_email_ids)} emails due now, {len(seed.future_email_ids)} later"
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return Run(
        options=options,
        servers=servers,
        seed=seed,
        web_url=f"http://127.0.0.1:{options.web_port}",
        email_dir=options.state_dir / "emails" / f"{stamp}-event-{seed.event_id}",
        redis=client,
    )


def check_redis_is_free(client: redis.Redis) -> None:
    """Raise DemoError when the worker's queues already contain jobs the demo did not push."""
    waiting = {name: int(client.llen(keys.queue(name))) for name in demo_data.APP_QUEUES}
    busy = [f"{name} ({size} jobs)" for name, size in waiting.items() if size]
    if busy:
        raise DemoError(
            f"queues {', '.join(busy)} already contain jobs, which the demo's worker would run; "
            "point REDIS_URL at an empty Redis database, for example redis://HOST:6379/14"
        )


def check_database_is_free(conn: Any) -> None:
    """Raise DemoError when the database contains unsent emails that the demo did not seed."""
    pending = demo_data.foreign_pending(conn)
    if pending:
        raise DemoError(
            f"the database contains {pending} unsent emails or deliveries that the "
            "demo did not create, and the demo's backend would mark them sent without "
            "sending them; point DATABASE_URL at an empty database"
        )


def start_and_show(run: Run) -> int:
    """Start the receiver and the worker, run the flow once, then check it or show it live."""
    signer = demo_data.WebhookSigner()
    env = child_environment(run, signer.public_key_b64)
    web = start_web(run, env)
    worker = start_worker(run, env)
    say(f"webhook receiver: {run.web_url}{WEBHOOK_PATH} (log {web.log_path})")
    say(f"health check:     {run.web_url}/health")
    say(f"worker pid {worker.process.pid}: pyqueue run -C {CONFIG_FILE} (log {worker.log_path})")
    echo = EmailEcho(run)

    jid = Client(redis=run.redis).push(
        {"class": "EmailSenderWorker", "queue": "email_delivery", "args": []}
    )
    say(f"enqueued EmailSenderWorker (jid {jid}) now instead of waiting for its cron tick")
    with db.connect(run.servers.postgres.url, autocommit=True) as conn:
        wait_until(lambda: _due_emails_settled(conn, run), "the due emails to be sent", run)
        found = demo_data.deliveries(conn, run.seed.event_id)
    echo.print_new()

    sent = [delivery for delivery in found if delivery.status == "sent"]
    events, run.expected = demo_data.sample_events(sent, int(time.time()))
    status, reply = demo_data.post_events(run.web_url, signer, events)
    if status != 200:
        raise DemoError(f"the webhook receiver rejected the signed events: HTTP {status} {reply}")
    say(f"posted {len(events)} signed webhook events; the receiver queued {reply.get('jobs')} job")
    with db.connect(run.servers.postgres.url, autocommit=True) as conn:
        wait_until(
            lambda: demo_data.events_applied(conn, run.expected), "the events to be applied", run
        )
    summary = print_summary(run)
    if run.options.once:
        return check_once(run)
    return show_live(run, echo, summary)


def _due_emails_settled(conn: Any, run: Run) -> bool:
    statuses = demo_data.email_statuses(conn, run.seed.due_email_ids)
    return all(status in ("sent", "failed") for status in statuses.values())


def child_environment(run: Run, public_key: str) -> dict[str, str]:
    """Return the environment of both children: one environment configures the whole app."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=run.servers.redis.url,
        DATABASE_URL=run.servers.postgres.url,
        APP_JOBS_EMAIL_BACKEND=run.options.backend,
        APP_JOBS_EMAIL_FILE_DIR=str(run.email_dir),
        APP_JOBS_SANDBOX_MODE="true" if run.options.sandbox else "false",
        APP_JOBS_WEBHOOK_PUBLIC_KEYS=public_key,
        APP_JOBS_WEBHOOK_ALLOW_UNSIGNED="false",
        APP_JOBS_WEB_HOST="127.0.0.1",
        PORT=str(run.options.web_port),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_web(run: Run, env: dict[str, str]) -> Child:
    command = console_script("app-jobs", "app_jobs.cli")
    child = start_child(run, "web", [*command, "web", "--port", str(run.options.web_port)], env)
    wait_until(lambda: health_ok(run.web_url), "the webhook receiver to answer /health", run)
    return child


def start_worker(run: Run, env: dict[str, str]) -> Child:
    command = console_script("pyqueue", "pyqueue.cli")
    child = start_child(run, "worker", [*command, "run", "-C", CONFIG_FILE], env)
    pid = child.process.pid
    wait_until(lambda: worker_registered(run.redis, pid), "the worker's first heartbeat", run)
    return child


if __name__ == "__main__":
    main(prog_name="bin/demo")
