"""The dashboard mounted inside another WSGI app: by SCRIPT_NAME and by a path prefix."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis

from pyqueue.web import Dashboard
from tests.web import demo
from tests.web.client import Client
from tests.web.conftest import AppFactory


def host_app(dashboard: Dashboard, mount: str) -> Callable[..., Iterable[bytes]]:
    """A host that moves ``mount`` from PATH_INFO to SCRIPT_NAME, as dispatchers do."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == mount or path.startswith(mount + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + mount
            environ["PATH_INFO"] = path[len(mount) :]
            return dashboard(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"host page"]

    return app


def test_script_name_mount(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(host_app(make_app(), "/admin/jobs"))
    assert client.get("/").text == "host page"
    page = client.get("/admin/jobs/retries")
    assert page.status == 200
    assert 'href="/admin/jobs/queues"' in page.text
    assert 'href="/admin/jobs/static/app.css?v=' in page.text
    assert 'action="/admin/jobs/retries"' in page.text
    assert page.hidden_fields()["back"] == "/admin/jobs/retries"
    assert "Path=/admin/jobs;" in (page.header("Set-Cookie") or "")
    result = client.submit(page, "/admin/jobs/retries", {"action": "delete", "scope": "all"})
    assert result.header("Location") == "/admin/jobs/retries?done=delete&count=5"
    assert seeded.exists("retry") == 0


def test_script_name_root_without_slash(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(host_app(make_app(), "/admin"))
    moved = client.get("/admin")
    assert moved.status == 302
    assert moved.header("Location") == "/admin/"
    page = client.get("/admin/")
    assert page.status == 200
    assert "48,213" in page.text


def test_prefix_in_path(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(make_app(prefix="/jobs/"))
    assert client.get("/queues").status == 404
    assert client.get("/jobsx/queues").status == 404
    page = client.get("/jobs/queues")
    assert page.status == 200
    assert 'href="/jobs/queues/mail"' in page.text
    assert client.get("/jobs/stats.json").status == 200


def test_prefix_and_script_name(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(make_app(prefix="/jobs"), script_name="/app")
    page = client.get("/jobs/busy")
    assert page.status == 200
    assert 'href="/app/jobs/cron"' in page.text


def test_back_link_outside_prefix_ignored(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(make_app(prefix="/jobs"))
    page = client.get("/jobs/busy")
    fields = {**page.hidden_fields(), "action": "quiet", "identity": demo.IDENTITY}
    result = client.post("/jobs/busy", {**fields, "back": "/elsewhere/busy"})
    assert result.header("Location") == "/jobs/busy?done=quiet&count=1"


def test_queue_name_with_slash_and_space(make_app: AppFactory, r: redis.Redis) -> None:
    name = "mail/bulk low"
    r.sadd("queues", name)
    r.lpush(f"queue:{name}", demo.payload("slash1", "SendEmailJob", name, []))
    client = Client(make_app())
    listing = client.get("/queues")
    assert 'href="/queues/mail/bulk%20low"' in listing.text
    page = client.get("/queues/mail/bulk%20low")
    assert page.status == 200
    assert "slash1" in page.text
    result = client.submit(page, "/queues/mail/bulk%20low", {"action": "clear"})
    assert result.status == 303
    assert r.exists(f"queue:{name}") == 0
