"""The dashboard's actions (POST): retry, delete, kill, quiet, stop, clear and cron switches.

The app has already checked authentication, read-only mode and the CSRF
token. Every action responds with 303 See Other to the page it came from, with the outcome
as counts in the query string, so a reload does not repeat it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

from pyqueue.api import NotFound, ProcessSet, Queue
from pyqueue.api.records import JobRecord
from pyqueue.api.sorted_sets import WINDOW, SortedEntry, SortedSet, digest
from pyqueue.cron_job import CronJobNotFound
from pyqueue.cron_store import CronStore
from pyqueue.errors import PayloadError
from pyqueue.web import views
from pyqueue.web.http import HTTPError, Request, Response, redirect
from pyqueue.web.notices import NOTICE_PARAMS

if TYPE_CHECKING:
    from pyqueue.web.app import Dashboard

logger = logging.getLogger("pyqueue.web")


@dataclasses.dataclass
class Outcome:
    """Result of an action: ``count`` entries handled, ``skipped`` left (gone or unpushable)."""

    action: str
    count: int = 0
    skipped: int = 0

    def add(self, handled: bool) -> None:
        if handled:
            self.count += 1
        else:
            self.skipped += 1


def busy(app: Dashboard, request: Request) -> Response:
    action = choose(request, ("quiet", "stop"))
    processes = ProcessSet(app.redis)
    if request.field("scope") == "all":
        identities = [record.identity for record in processes.all()]
    else:
        identities = request.fields("identity")
    signal = processes.quiet if action == "quiet" else processes.stop
    outcome = Outcome(action)
    for identity in identities:
        try:
            signal(identity)
        except NotFound:
            logger.info("dashboard: %s skipped, process not live identity=%s", action, identity)
            outcome.add(False)
            continue
        outcome.add(True)
        logger.info("dashboard: %s process identity=%s", action, identity)
    return finish(request, outcome, "/busy")


def queue(app: Dashboard, request: Request, name: str) -> Response:
    action = choose(request, ("delete", "clear"))
    api = Queue(name, app.redis)
    outcome = Outcome(action)
    if action == "clear":
        outcome.count = api.clear()
        logger.info("dashboard: cleared queue=%s jobs=%d", name, outcome.count)
    else:
        for key in request.fields("key"):
            job = find_queued(api, key)
            outcome.add(job is not None and api.delete(job))
            if job is not None:
                logger.info("dashboard: deleted queue=%s jid=%s", name, job.jid)
    fallback = "/queues" if action == "clear" else "/queues/" + name
    return finish(request, outcome, fallback)


def find_queued(api: Queue, key: str) -> JobRecord | None:
    """Return the job named by a queue key, looking near its old index first.

    Jobs pushed or fetched since the page was rendered shift the indexes, so
    a window around the index is read, then the whole queue.
    """
    parsed = views.parse_queue_key(key)
    if parsed is None:
        return None
    index, name = parsed
    start = max(0, index - WINDOW)
    for job in api.page(start, 2 * WINDOW + 1).jobs:
        if digest(job.raw) == name:
            return job
    return next((job for job in api.jobs() if digest(job.raw) == name), None)


def sorted_set(app: Dashboard, request: Request, kind: str) -> Response:
    set_kind = views.SET_KINDS[kind]
    action = choose(request, set_kind.actions)
    api = set_kind.api(app.redis, app.settings)
    if request.field("scope") == "all":
        outcome = act_on_all(api, action)
        logger.info("dashboard: %s all set=%s done=%d", action, api.key, outcome.count)
    else:
        outcome = Outcome(action)
        for key in request.fields("key"):
            act_on_entry(api, action, key, outcome)
    return finish(request, outcome, f"/{kind}")


def act_on_entry(api: SortedSet, action: str, key: str, outcome: Outcome) -> None:
    found = api.lookup(key)
    if not found:
        outcome.add(False)
        return
    entry = found[0]
    try:
        outcome.add(entry_action(api, action)(entry))
    except PayloadError:
        # The entry stays; the page flags why, and delete still works on it. The
        # error is not logged because it may quote an argument.
        logger.info(
            "dashboard: %s skipped, payload not pushable set=%s jid=%s", action, api.key, entry.jid
        )
        outcome.add(False)
        return
    logger.info("dashboard: %s set=%s jid=%s", action, api.key, entry.jid)


def entry_action(api: SortedSet, action: str) -> Callable[[SortedEntry], bool]:
    """Return the API method that does ``action`` on one entry."""
    methods: dict[str, Callable[[SortedEntry], bool]] = {
        "retry": api.retry,
        "add_to_queue": api.add_to_queue,
        "delete": api.delete,
    }
    kill = getattr(api, "kill", None)
    if kill is not None:
        methods["kill"] = kill
    return methods[action]


def act_on_all(api: SortedSet, action: str) -> Outcome:
    if action == "delete":
        return Outcome(action, count=api.clear())
    bulk = {
        "retry": api.retry_all,
        "add_to_queue": api.add_all_to_queue,
        "kill": getattr(api, "kill_all", None),
    }[action]
    if bulk is None:
        raise HTTPError(400, f"{api.key} has no action {action!r}")
    result = bulk()
    return Outcome(action, count=result.done, skipped=len(result.skipped))


def cron(app: Dashboard, request: Request) -> Response:
    action = choose(request, ("enable", "disable", "enqueue", "delete"))
    store = CronStore(app.redis, app.settings)
    name = request.field("name")
    operations: dict[str, Callable[[str], object]] = {
        "enable": store.enable,
        "disable": store.disable,
        "enqueue": store.enqueue_now,
        "delete": store.destroy,
    }
    outcome = Outcome(action)
    try:
        operations[action](name)
    except CronJobNotFound:
        logger.info("dashboard: %s skipped, no cron job name=%s", action, name)
        outcome.add(False)
    else:
        outcome.add(True)
        logger.info("dashboard: %s cron job name=%s", action, name)
    return finish(request, outcome, "/cron")


def choose(request: Request, allowed: tuple[str, ...]) -> str:
    """Return the form's action; raise HTTPError 400 unless it is one of ``allowed``."""
    action = request.field("action")
    if action not in allowed:
        raise HTTPError(400, f"unknown action {action!r}; this page offers {', '.join(allowed)}")
    return action


def finish(request: Request, outcome: Outcome, fallback: str) -> Response:
    """Redirect to the page the form was on, with the outcome in the query string."""
    back = safe_back(request, request.field("back")) or request.url(fallback)
    parts = urlsplit(back)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in NOTICE_PARAMS]
    query += [("done", outcome.action), ("count", str(outcome.count))]
    if outcome.skipped:
        query.append(("skipped", str(outcome.skipped)))
    return redirect(f"{parts.path}?{urlencode(query)}")


def safe_back(request: Request, back: str) -> str | None:
    """Return ``back`` if it is a path inside the dashboard, so no form can redirect elsewhere."""
    if not back.startswith(request.base + "/") or back.startswith("//") or "\\" in back:
        return None
    parts = urlsplit(back)
    if parts.scheme or parts.netloc:
        return None
    return back
