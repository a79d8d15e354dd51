"""The dashboard's pages (GET): each reads through the data API and renders a template.

Bad data never fails a page, because the API returns problems instead of
raising. The few reads that can still raise on a key of the wrong type are
caught here and shown as problems at the top of the page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from pyqueue.api import ProcessSet, Queue, Stats, Workers
from pyqueue.api.base import HASH, NOT_UTF8, SET, KeyTypeError, is_wrong_type, wrong_type_message
from pyqueue.api.sorted_sets import SortedEntry, SortedSet
from pyqueue.cron_job import CronJob, decode_job
from pyqueue.cron_schedule import CronLineError, parse_line
from pyqueue.cron_store import CronStore
from pyqueue.web import views
from pyqueue.web.http import HTTPError, Request, Response, json_response

if TYPE_CHECKING:
    from pyqueue.web.app import Dashboard

HISTORY_DAYS = (7, 30, 90, 180)
MAX_PAGE = 1_000_000


@dataclasses.dataclass(frozen=True)
class CronRow:
    """One cron job as the page shows it; ``job`` is None when its hash is unreadable."""

    name: str
    job: CronJob | None
    next_run: float | None
    problems: tuple[str, ...]


def dashboard(app: Dashboard, request: Request) -> Response:
    stats = Stats(app.redis)
    now = app.clock()
    snapshot = stats.snapshot(now)
    days = request.int_arg("days", 30, 1, HISTORY_DAYS[-1])
    history = stats.history(days, dt.datetime.fromtimestamp(now, dt.UTC).date())
    return app.render(
        request,
        "dashboard.html",
        nav="dashboard",
        stats=snapshot,
        days=days,
        day_choices=HISTORY_DAYS,
        bars=views.history_bars(history.processed, history.failed),
        redis_info=redis_info(app),
        problems=snapshot.problems + history.problems,
    )


def stats_json(app: Dashboard, request: Request) -> Response:
    now = app.clock()
    snapshot = Stats(app.redis).snapshot(now)
    return json_response(views.stats_document(snapshot, now))


def busy(app: Dashboard, request: Request) -> Response:
    problems: list[str] = []
    processes = []
    work = []
    try:
        processes = ProcessSet(app.redis).all()
        work = Workers(app.redis).all()
    except KeyTypeError as exc:
        problems.append(str(exc))
    except UnicodeDecodeError:
        problems.append(NOT_UTF8)
    for record in processes:
        problems.extend(f"process {record.identity}: {p}" for p in record.problems)
    rows = [(record, views.args_text(record.job, app.options.hide_args)) for record in work]
    return app.render(
        request, "busy.html", nav="busy", processes=processes, work=rows, problems=problems
    )


def queues(app: Dashboard, request: Request) -> Response:
    listing = Queue.summaries(app.redis, app.clock())
    return app.render(
        request, "queues.html", nav="queues", queues=listing.queues, problems=listing.problems
    )


def queue(app: Dashboard, request: Request, name: str) -> Response:
    number = request.int_arg("page", 1, 1, MAX_PAGE)
    size = app.options.page_size
    page = Queue(name, app.redis).page((number - 1) * size, size)
    rows = [
        views.queue_row(page.offset + index, job, app.options.hide_args)
        for index, job in enumerate(page.jobs)
    ]
    return app.render(
        request,
        "queue.html",
        nav="queues",
        name=name,
        rows=rows,
        pager=views.Pager(number, size, page.total),
        problems=page.problems,
    )


def sorted_set(app: Dashboard, request: Request, kind: str) -> Response:
    set_kind = views.SET_KINDS[kind]
    api = set_kind.api(app.redis, app.settings)
    number = request.int_arg("page", 1, 1, MAX_PAGE)
    size = app.options.page_size
    query = request.arg("q").strip()
    problems: tuple[str, ...] = ()
    if query:
        entries, total, problems = filter_entries(api, query, (number - 1) * size, size)
    else:
        page = api.page((number - 1) * size, size)
        entries, total, problems = list(page.entries), page.total, page.problems
    rows = [
        views.set_row(e, app.options.hide_args, request.url(f"/{kind}/{e.entry_id}"))
        for e in entries
    ]
    return app.render(
        request,
        "sorted_set.html",
        nav=kind,
        kind=set_kind,
        rows=rows,
        query=query,
        pager=views.Pager(number, size, total),
        labels=views.ACTION_LABELS,
        problems=problems,
    )


def filter_entries(
    api: SortedSet, query: str, offset: int, count: int
) -> tuple[list[SortedEntry], int, tuple[str, ...]]:
    """Return one page of the entries whose class or jid contains ``query``, newest first.

    Arguments are not searched, so a filter cannot probe hidden arguments.
    """
    try:
        candidates = api.search(query)
    except KeyTypeError as exc:
        return [], 0, (str(exc),)
    found = [entry for entry in candidates if matches(entry, query)]
    found.sort(key=lambda entry: entry.score, reverse=True)
    return found[offset : offset + count], len(found), ()


def matches(entry: SortedEntry, query: str) -> bool:
    job = entry.job
    return any(query in (value or "") for value in (job.job_class, job.display_class, job.jid))


def entry(app: Dashboard, request: Request, kind: str, entry_id: str) -> Response:
    set_kind = views.SET_KINDS[kind]
    api = set_kind.api(app.redis, app.settings)
    try:
        found = api.lookup(entry_id)
    except KeyTypeError as exc:
        raise HTTPError(404, str(exc)) from None
    if not found:
        raise HTTPError(
            404,
            f"no entry {entry_id!r} in {set_kind.title.lower()}; "
            "it may have been retried, deleted or moved meanwhile",
        )
    jobs = [
        (
            views.set_row(e, app.options.hide_args, ""),
            views.job_fields(e.job, app.options.hide_args),
        )
        for e in found
    ]
    return app.render(
        request,
        "entry.html",
        nav=kind,
        kind=set_kind,
        jobs=jobs,
        labels=views.ACTION_LABELS,
        problems=(),
    )


def cron(app: Dashboard, request: Request) -> Response:
    rows, problems = read_cron(app)
    return app.render(request, "cron.html", nav="cron", rows=rows, problems=problems)


def read_cron(app: Dashboard) -> tuple[list[CronRow], list[str]]:
    """Read every cron job, listing a hash of the wrong type or a bad cron line as a problem."""
    store = CronStore(app.redis, app.settings)
    try:
        members = sorted(str(member) for member in app.redis.smembers(store.index_key))
    except ResponseError as exc:
        if not is_wrong_type(exc):
            raise
        return [], [wrong_type_message(app.redis, store.index_key, SET)]
    pipe = app.redis.pipeline(transaction=False)
    for member in members:
        pipe.hgetall(member)
    replies = pipe.execute(raise_on_error=False)
    now = app.clock()
    rows = []
    for member, reply in zip(members, replies, strict=True):
        if is_wrong_type(reply):
            problem = wrong_type_message(app.redis, member, HASH)
            rows.append(CronRow(cron_name(store, member), None, None, (problem,)))
        elif reply:
            rows.append(cron_row(app, decode_job(reply), member, store, now))
    return rows, []


def cron_row(app: Dashboard, job: CronJob, member: str, store: CronStore, now: float) -> CronRow:
    name = job.name or cron_name(store, member)
    try:
        line = parse_line(job.cron, app.settings.cron_timezone)
    except CronLineError as exc:
        return CronRow(name, job, None, (str(exc),))
    return CronRow(name, job, line.next_run(now), ())


def cron_name(store: CronStore, member: str) -> str:
    """Return the job name in a hash key such as ``cron_job:<name>``."""
    prefix = store.hash_key("")
    return member[len(prefix) :] if member.startswith(prefix) else member


def redis_info(app: Dashboard) -> dict[str, Any]:
    """Return a few INFO fields; empty when the server refuses INFO (some hosted Redis do)."""
    try:
        info = app.redis.info()
    except ResponseError:
        return {}
    fields = (
        "redis_version",
        "uptime_in_days",
        "connected_clients",
        "used_memory_human",
        "used_memory_peak_human",
    )
    return {field: info[field] for field in fields if field in info}


CONTENT_TYPES = {
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
}


def static_file(app: Dashboard, request: Request, name: str) -> Response:
    """Return a file from pyqueue/web/static; raise HTTPError 404 when there is none."""
    resource = importlib.resources.files("pyqueue.web").joinpath("static", name)
    if not resource.is_file():
        raise HTTPError(404, f"static file {name!r} not found")
    content_type = CONTENT_TYPES[name.rsplit(".", 1)[1]]
    headers = [("Content-Type", content_type), ("Cache-Control", "max-age=3600")]
    return Response(200, resource.read_bytes(), headers)
