"""Authentication, CSRF and read-only mode of the dashboard."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from pyqueue.web import create_app
from pyqueue.web.csrf import COOKIE, CsrfGuard
from tests.web import demo
from tests.web.client import Client
from tests.web.conftest import AppFactory

DELETE_ALL = {"action": "delete", "scope": "all"}


def test_post_without_token_rejected(client: Client, seeded: redis.Redis) -> None:
    client.get("/dead")  # sets the cookie, so only the form field is missing
    result = client.post("/dead", DELETE_ALL)
    assert result.status == 403
    assert "CSRF token is missing" in result.text
    assert seeded.zcard("dead") == 3


def test_post_without_cookie_rejected(make_app: AppFactory, seeded: redis.Redis) -> None:
    app = make_app()
    page = Client(app).get("/dead")
    stranger = Client(app)  # another browser: no cookie, a token copied from the page
    result = stranger.post("/dead", {**page.hidden_fields(), **DELETE_ALL})
    assert result.status == 403
    assert seeded.zcard("dead") == 3


def test_token_of_other_cookie_rejected(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/dead")
    client.cookies[COOKIE] = "A" * 43
    result = client.post("/dead", {**page.hidden_fields(), **DELETE_ALL})
    assert result.status == 403
    assert seeded.zcard("dead") == 3


def test_token_of_other_secret_rejected(make_app: AppFactory, seeded: redis.Redis) -> None:
    first = Client(make_app(secret="first secret, 16+ bytes"))
    second = make_app(secret="second secret, 16+ bytes")
    page = first.get("/dead")
    moved = Client(second)
    moved.cookies = dict(first.cookies)
    result = moved.post("/dead", {**page.hidden_fields(), **DELETE_ALL})
    assert result.status == 403
    assert seeded.zcard("dead") == 3


def test_shared_secret_accepts_token(make_app: AppFactory, seeded: redis.Redis) -> None:
    """Two processes with one secret accept each other's forms."""
    first = Client(make_app(secret="shared secret, 16+ bytes"))
    page = first.get("/dead")
    second = Client(make_app(secret="shared secret, 16+ bytes"))
    second.cookies = dict(first.cookies)
    result = second.post("/dead", {**page.hidden_fields(), **DELETE_ALL})
    assert result.status == 303
    assert seeded.zcard("dead") == 0


def test_csrf_cookie_attributes(client: Client) -> None:
    page = client.get("/")
    cookie = page.header("Set-Cookie") or ""
    assert re.match(rf"^{COOKIE}=[A-Za-z0-9_-]{{43}}; ", cookie)
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/;" in cookie + ";"
    assert "Secure" not in cookie
    again = client.get("/")
    assert again.header("Set-Cookie") is None  # the nonce is kept once set
    https = Client(client.app).get("/", **{"wsgi.url_scheme": "https"})
    assert "Secure" in (https.header("Set-Cookie") or "")


def test_csrf_secret_too_short() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        CsrfGuard(b"short")


def test_read_only(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(make_app(read_only=True))
    for path in (
        "/",
        "/busy",
        "/queues",
        "/queues/mail",
        "/retries",
        "/scheduled",
        "/dead",
        "/cron",
    ):
        page = client.get(path)
        assert page.status == 200, path
        assert 'method="post"' not in page.text, path
        assert 'name="action"' not in page.text, path
        assert 'type="checkbox"' not in page.text, path
    assert "read-only" in client.get("/").text
    # Even a well-formed POST with a valid token is rejected.
    writable = Client(make_app())
    page = writable.get("/dead")
    client.cookies = dict(writable.cookies)
    result = client.post("/dead", {**page.hidden_fields(), **DELETE_ALL})
    assert result.status == 403
    assert "read-only" in result.text
    assert seeded.zcard("dead") == 3


def test_basic_auth(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(make_app(username="ops", password="s3cret:with colon"))
    denied = client.get("/")
    assert denied.status == 401
    assert denied.header("WWW-Authenticate") == 'Basic realm="pyqueue", charset="UTF-8"'
    assert "48,213" not in denied.text
    client.login("ops", "wrong")
    assert client.get("/").status == 401
    client.login("other", "s3cret:with colon")
    assert client.get("/stats.json").status == 401
    client.login("ops", "s3cret:with colon")
    assert client.get("/").status == 200
    assert client.get("/static/app.css").status == 200


def test_basic_auth_garbage_header(make_app: AppFactory) -> None:
    client = Client(make_app(username="ops", password="pw"))
    for header in ("Basic", "Basic !!!", "Bearer abc", "Basic b3Bz"):
        client.authorization = header
        assert client.get("/").status == 401, header


def test_auth_callable(make_app: AppFactory, seeded: redis.Redis) -> None:
    seen: list[dict[str, Any]] = []

    def allow(environ: dict[str, Any]) -> bool:
        seen.append(environ)
        return environ.get("HTTP_X_USER") == "admin"

    client = Client(make_app(auth=allow))
    assert client.get("/").status == 403
    assert client.get("/", HTTP_X_USER="admin").status == 200
    assert seen[-1]["PATH_INFO"] == "/"


def test_auth_callable_and_basic_both_required(make_app: AppFactory) -> None:
    client = Client(make_app(auth=lambda environ: False, username="ops", password="pw"))
    client.login("ops", "pw")
    assert client.get("/").status == 403


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"username": "ops"}, "both a username and a password"),
        ({"password": "pw"}, "both a username and a password"),
        ({"username": "", "password": "pw"}, "non-empty"),
        ({"username": "a:b", "password": "pw"}, "contains ':'"),
        ({"prefix": "jobs"}, "must be a URL path"),
        ({"page_size": 0}, "page_size"),
        ({"poll_seconds": 0}, "poll_seconds"),
        ({"secret": "short"}, "at least 16"),
    ],
)
def test_create_app_rejects(redis_url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(redis_url, clock=lambda: demo.NOW, **options)
