"""A WSGI test client for the dashboard: builds environs, keeps cookies, parses forms."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
from collections.abc import Callable, Iterable
from html import unescape
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode, urlsplit

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.S)
_INPUT = re.compile(r"<input\b[^>]*>")
_ATTR = re.compile(r'([a-zA-Z-]+)="([^"]*)"')


@dataclasses.dataclass
class Result:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def hidden_fields(self) -> dict[str, str]:
        """Return the CSRF token and back link of the first POST form on the page."""
        for form in _FORM.findall(self.text):
            fields = {}
            for tag in _INPUT.findall(form):
                attrs = dict(_ATTR.findall(tag))
                if attrs.get("type") == "hidden" and attrs["name"] in ("csrf_token", "back"):
                    fields[attrs["name"]] = unescape(attrs.get("value", ""))
            if "csrf_token" in fields:
                return fields
        raise AssertionError("the page has no form with a CSRF token")

    def checkbox_values(self) -> list[str]:
        """Return the values of the row checkboxes (entry keys) in page order."""
        values = []
        for tag in _INPUT.findall(self.text):
            attrs = dict(_ATTR.findall(tag))
            if attrs.get("type") == "checkbox" and attrs.get("name") == "key":
                values.append(unescape(attrs["value"]))
        return values


class Client:
    """Calls a WSGI app directly; cookies set by responses are sent back."""

    def __init__(self, app: WsgiApp, script_name: str = "") -> None:
        self.app = app
        self.script_name = script_name
        self.cookies: dict[str, str] = {}
        self.authorization: str | None = None

    def login(self, username: str, password: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.authorization = f"Basic {token}"

    def get(self, path: str, **environ: Any) -> Result:
        return self.request("GET", path, **environ)

    def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]], **environ: Any
    ) -> Result:
        body = urlencode(data, doseq=True).encode()
        return self.request(
            "POST",
            path,
            body=body,
            CONTENT_TYPE="application/x-www-form-urlencoded",
            **environ,
        )

    def submit(self, page: Result, path: str, fields: dict[str, Any]) -> Result:
        """POST ``fields`` plus the page's CSRF token and back link, as a browser would."""
        return self.post(path, {**page.hidden_fields(), **fields})

    def request(self, method: str, path: str, body: bytes = b"", **extra: Any) -> Result:
        parts = urlsplit(path)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": self.script_name,
            # Servers put the unquoted path in PATH_INFO, its bytes carried as latin-1.
            "PATH_INFO": unquote_to_bytes(parts.path).decode("latin-1"),
            "QUERY_STRING": parts.query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "CONTENT_LENGTH": str(len(body)),
        }
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.authorization:
            environ["HTTP_AUTHORIZATION"] = self.authorization
        environ.update(extra)
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            captured["status"] = int(status.split()[0])
            captured["headers"] = headers

        chunks = self.app(environ, start_response)
        result = Result(captured["status"], captured["headers"], b"".join(chunks))
        for header in result.headers_named("Set-Cookie"):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                self.cookies[name] = morsel.value
        return result
