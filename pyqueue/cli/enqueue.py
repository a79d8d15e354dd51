"""``pyqueue enqueue``: push one job from the shell and print its jid."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from pyqueue.cli.common import EXIT_USAGE, fail, handle_errors, redis_url_option
from pyqueue.client import Client


@click.command()
@click.argument("job_class", metavar="CLASS")
@click.argument("args_json", metavar="[ARGS_JSON]", required=False, default="[]")
@click.option("-q", "--queue", default=None, help="Queue to push to (default: default).")
@click.option(
    "--in",
    "delay",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Run after this many seconds.",
)
@click.option(
    "--at",
    "at",
    default=None,
    metavar="TIME",
    help="Run at this time: epoch seconds or ISO 8601 (UTC unless a zone is given).",
)
@click.option(
    "--retry",
    default=None,
    metavar="N|true|false",
    help="Retries allowed: a count, true (25) or false (none, no dead set).",
)
@redis_url_option
@handle_errors
def enqueue(
    job_class: str,
    args_json: str,
    queue: str | None,
    delay: float | None,
    at: str | None,
    retry: str | None,
    redis_url: str | None,
) -> None:
    """Push a job of CLASS with ARGS_JSON (a JSON array, default []) and print its jid.

    CLASS is the name in the payload's "class" field, so it may be a job that
    only a Ruby worker defines.

        pyqueue enqueue EmailSenderWorker '[100]' --queue email_delivery --in 60
    """
    if delay is not None and at is not None:
        fail("--in and --at both set a run time; give only one", EXIT_USAGE)
    item: dict[str, Any] = {"class": job_class, "args": _parse_args(args_json)}
    if queue:
        item["queue"] = queue
    if retry is not None:
        item["retry"] = _parse_retry(retry)
    run_at = _run_at(delay, at)
    if run_at is not None and run_at > time.time():
        item["at"] = run_at
    jid = Client(redis_url).push(item)
    click.echo(jid or "")


def _parse_args(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(
            f"ARGS_JSON {text!r} is not valid JSON ({exc}); pass an array such as '[1, \"two\"]'",
            EXIT_USAGE,
        )
    if not isinstance(value, list):
        fail(f"ARGS_JSON {text!r} must be a JSON array, e.g. '[{text}]'", EXIT_USAGE)
    return list(value)


def _parse_retry(text: str) -> bool | int:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered.isdigit():
        return int(lowered)
    fail(f"--retry {text!r} must be a whole number, true or false", EXIT_USAGE)
    return False


def _run_at(delay: float | None, at: str | None) -> float | None:
    if delay is not None:
        return time.time() + delay
    if at is None:
        return None
    try:
        return float(at)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        fail(
            f"--at {at!r} is neither epoch seconds nor an ISO 8601 time "
            "such as 2026-12-04T09:00:00Z",
            EXIT_USAGE,
        )
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
