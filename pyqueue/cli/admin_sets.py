"""The ``retries``, ``scheduled`` and ``dead`` command groups, and helpers of the admin commands.

The three groups share one builder: ``list`` (the default), ``show``,
``retry``, ``delete``, ``clear`` and ``retry-all``, plus ``kill`` and
``kill-all`` outside the dead set. An entry is named by its jid or, when a
jid is missing or shared, by the entry id that ``list`` prints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis
from click.core import ParameterSource

from pyqueue.api import (
    BulkResult,
    DeadSet,
    RetrySet,
    ScheduledSet,
    SortedEntry,
    SortedSet,
    find_entry,
)
from pyqueue.api.base import tolerate_invalid_utf8
from pyqueue.api.sorted_sets import KillableSet
from pyqueue.cli import tables
from pyqueue.cli.common import EXIT_FAILURE, fail, handle_errors, redis_url_option
from pyqueue.config import Settings
from pyqueue.config import load as load_settings
from pyqueue.connection import create_redis

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def connect(redis_url: str | None) -> redis.Redis:
    """Return a connection to ``redis_url`` (else REDIS_URL, else localhost).

    Replies that are not valid UTF-8 are decoded with surrogateescape, so such
    entries can be listed and deleted by their exact bytes.
    """
    return tolerate_invalid_utf8(create_redis(redis_url, pool_size=2))


def resolve_url(ctx: click.Context, redis_url: str | None) -> str | None:
    """Prefer a subcommand's own ``--redis-url``, then the group's, then REDIS_URL."""
    if ctx.get_parameter_source("redis_url") == ParameterSource.COMMANDLINE:
        return redis_url
    parent = ctx.obj if isinstance(ctx.obj, str) else None
    return parent or redis_url


def confirm(yes: bool, question: str) -> None:
    """Ask ``question`` unless ``--yes`` was given; a "no" aborts with exit code 1."""
    if not yes:
        click.confirm(question, abort=True)


def show_problems(problems: tuple[str, ...]) -> None:
    """Print data problems found while reading to stderr, one per line."""
    for problem in problems:
        tables.echo(f"warning: {problem}", err=True)


def build_group(name: str, set_class: type[SortedSet], summary: str) -> click.Group:
    """Build the command group of one sorted set."""

    @click.group(name=name, invoke_without_command=True, help=summary)
    @_list_options
    @redis_url_option
    @click.pass_context
    def group(ctx: click.Context, /, **options: Any) -> None:
        ctx.obj = options["redis_url"]
        if ctx.invoked_subcommand is None:
            ctx.invoke(list_entries, **options)

    def open_set(ctx: click.Context, redis_url: str | None) -> SortedSet:
        url = resolve_url(ctx, redis_url)
        return set_class(connect(url), _settings(url))

    @group.command("list")
    @_list_options
    @redis_url_option
    @click.pass_context
    @handle_errors
    def list_entries(ctx: click.Context, /, redis_url: str | None, **options: Any) -> None:
        """List entries, the latest score first."""
        _print_list(open_set(ctx, redis_url), **options)

    @group.command()
    @click.argument("reference", metavar="JID|ENTRY_ID")
    @json_option
    @redis_url_option
    @click.pass_context
    @handle_errors
    def show(ctx: click.Context, reference: str, as_json: bool, redis_url: str | None) -> None:
        """Show one entry with its error, backtrace, problems and raw payload."""
        entry = find_entry(open_set(ctx, redis_url), reference)
        tables.echo(tables.to_json(entry) if as_json else _entry_text(entry))

    _add_entry_actions(group, open_set, set_class)
    _add_set_actions(group, open_set, set_class)
    return group


def _add_entry_actions(
    group: click.Group, open_set: Callable[..., SortedSet], set_class: type[SortedSet]
) -> None:
    queue_now = set_class is ScheduledSet
    retry_help = (
        "Push the job to its queue now."
        if queue_now
        else "Push the job to its queue now; this does not use up one of its retries."
    )
    actions: list[tuple[str, str, bool]] = [
        ("retry", retry_help, False),
        ("delete", "Delete the entry.", True),
    ]
    if issubclass(set_class, KillableSet):
        actions.append(("kill", "Move the entry to the dead set.", True))
    for action, help_text, destructive in actions:
        method = "add_to_queue" if action == "retry" and queue_now else action
        group.add_command(_entry_command(action, method, help_text, destructive, open_set))


def _entry_command(
    name: str, method: str, help_text: str, destructive: bool, open_set: Callable[..., SortedSet]
) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.argument("reference", metavar="JID|ENTRY_ID")
    @yes_option
    @redis_url_option
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, reference: str, yes: bool, redis_url: str | None) -> None:
        sorted_set = open_set(ctx, redis_url)
        entry = find_entry(sorted_set, reference)
        if destructive:
            confirm(yes, f"{name.capitalize()} {entry.entry_id} from {sorted_set.key}?")
        if not getattr(sorted_set, method)(entry):
            fail(f"entry {entry.entry_id} was removed by another client meanwhile", EXIT_FAILURE)
        tables.echo(f"{_past(name)} {entry.entry_id}")

    return command


def _add_set_actions(
    group: click.Group, open_set: Callable[..., SortedSet], set_class: type[SortedSet]
) -> None:
    method = "add_all_to_queue" if set_class is ScheduledSet else "retry_all"
    actions = [("retry-all", method, "Push every entry to its queue now.")]
    if issubclass(set_class, KillableSet):
        actions.append(("kill-all", "kill_all", "Move every entry to the dead set."))
    for name, attribute, help_text in actions:
        group.add_command(_bulk_command(name, attribute, help_text, open_set))

    @group.command()
    @yes_option
    @redis_url_option
    @click.pass_context
    @handle_errors
    def clear(ctx: click.Context, yes: bool, redis_url: str | None) -> None:
        """Delete every entry."""
        sorted_set = open_set(ctx, redis_url)
        size = tables.count(sorted_set.size(), "entry", "entries")
        confirm(yes, f"Delete all {size} of {sorted_set.key}?")
        tables.echo(f"deleted {tables.count(sorted_set.clear(), 'entry', 'entries')}")


def _bulk_command(
    name: str, attribute: str, help_text: str, open_set: Callable[..., SortedSet]
) -> click.Command:
    @click.command(name=name, help=help_text)
    @yes_option
    @redis_url_option
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, yes: bool, redis_url: str | None) -> None:
        sorted_set = open_set(ctx, redis_url)
        verb = name.split("-")[0]
        size = tables.count(sorted_set.size(), "entry", "entries")
        confirm(yes, f"{verb.capitalize()} all {size} of {sorted_set.key}?")
        result: BulkResult = getattr(sorted_set, attribute)()
        tables.echo(f"{_past(verb)} {tables.count(result.done, 'entry', 'entries')}")
        for reason in result.skipped:
            tables.echo(f"skipped: {reason}", err=True)
        if result.skipped:
            raise SystemExit(EXIT_FAILURE)

    return command


def _list_options(func: F) -> F:
    options = [
        click.option("--limit", type=click.IntRange(1), default=25, show_default=True),
        click.option("--offset", type=click.IntRange(0), default=0, show_default=True),
        click.option("--oldest-first", is_flag=True, help="Start at the lowest score."),
        click.option(
            "--class", "class_name", metavar="NAME", help="Only jobs of this (display) class."
        ),
        json_option,
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def _print_list(
    sorted_set: SortedSet,
    limit: int,
    offset: int,
    oldest_first: bool,
    class_name: str | None,
    as_json: bool,
) -> None:
    problems: tuple[str, ...] = ()
    if class_name:
        found = sorted_set.filter_class(class_name)
        if not oldest_first:
            found.reverse()
        entries = tuple(found[offset : offset + limit])
        total = len(found)
    else:
        page = sorted_set.page(offset, limit, newest_first=not oldest_first)
        entries, total, problems = page.entries, page.total, page.problems
    if as_json:
        document = {"set": sorted_set.key, "total": total, "offset": offset}
        tables.echo(tables.to_json({**document, "entries": entries, "problems": problems}))
        return
    rows = [
        (
            e.entry_id,
            tables.when(e.score),
            tables.text_or_none(e.job.display_class),
            tables.arguments(e.job),
            tables.cut(e.job.error_message or "", 40),
            tables.flags(e.job.problems),
        )
        for e in entries
    ]
    headers = ("entry id", "when", "class", "args", "error", "problems")
    tables.echo(tables.render(headers, rows))
    tables.echo(f"{len(entries)} of {tables.count(total, 'entry', 'entries')} in {sorted_set.key}")
    show_problems(problems)


def _entry_text(entry: SortedEntry) -> str:
    job = entry.job
    lines = [
        ("entry id", entry.entry_id),
        ("set", entry.set_name),
        ("when", tables.when(entry.score)),
    ]
    lines += tables.job_details(job)
    width = max(len(label) for label, _ in lines)
    text = [f"{label.ljust(width)}  {value}" for label, value in lines]
    if job.error_backtrace:
        text += ["backtrace"] + [f"  {line}" for line in job.error_backtrace]
    if job.problems:
        text += ["problems"] + [f"  - {problem}" for problem in job.problems]
    text += ["raw", f"  {job.raw}"]
    return "\n".join(text)


def _past(verb: str) -> str:
    return {"retry": "retried", "delete": "deleted", "kill": "killed"}.get(verb, verb + "ed")


def _settings(url: str | None) -> Settings:
    """Read the settings that kill and retry need (dead set limits, timestamp mode).

    They come from PYQUEUE_CONFIG and PYQUEUE_* variables, as ``pyqueue run`` reads them.
    """
    return load_settings(flags={"redis_url": url})


retries = build_group("retries", RetrySet, "List failed jobs waiting for a retry, or act on them.")
scheduled = build_group(
    "scheduled", ScheduledSet, "List jobs scheduled to run later, or act on them."
)
dead = build_group("dead", DeadSet, "List dead jobs (retries used up), or act on them.")
