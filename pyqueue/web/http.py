"""The dashboard's small WSGI layer: a request parsed from the environ and a response.

The dashboard needs query strings, url-encoded forms, cookies and the URL it
is mounted at, so it parses those itself rather than pulling in a framework.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

# Forms carry a few dozen entry keys at most; anything far larger is not ours.
MAX_FORM_BYTES = 1024 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


class HTTPError(Exception):
    """Raised by a handler to respond with an error page: ``status`` and a message for people."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def wsgi_text(value: str) -> str:
    """Decode a WSGI environ string (bytes carried as latin-1) as UTF-8."""
    return value.encode("latin-1").decode("utf-8", "replace")


class Request:
    """One request to the dashboard.

    ``base`` is the URL path of the dashboard's root without a trailing slash
    (SCRIPT_NAME plus the app's prefix) and ``path`` the rest, starting with "/".
    """

    def __init__(self, environ: dict[str, Any], base: str, path: str) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.base = base
        self.path = path
        self.query = parse_qs(wsgi_text(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        self._form: dict[str, list[str]] | None = None
        # Set by the app before dispatch: the token that this request's forms carry.
        self.csrf_token = ""
        self._cookies: SimpleCookie | None = None

    def arg(self, name: str, default: str = "") -> str:
        """Return the first query parameter ``name``, or ``default``."""
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        """Return parameter ``name`` as an int clamped to low..high; junk gives ``default``."""
        try:
            value = int(self.arg(name, str(default)))
        except ValueError:
            return default
        return min(max(value, low), high)

    @property
    def form(self) -> dict[str, list[str]]:
        """Return the url-encoded POST body; raise HTTPError 413 or 415 for other bodies."""
        if self._form is None:
            self._form = self._read_form()
        return self._form

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    def fields(self, name: str) -> list[str]:
        return list(self.form.get(name, []))

    def cookie(self, name: str) -> str | None:
        if self._cookies is None:
            self._cookies = SimpleCookie()
            try:
                self._cookies.load(str(self.environ.get("HTTP_COOKIE", "")))
            except CookieError:
                # A malformed Cookie header from another app on the host is not our error.
                self._cookies = SimpleCookie()
        morsel = self._cookies.get(name)
        return morsel.value if morsel is not None else None

    @property
    def secure(self) -> bool:
        return self.environ.get("wsgi.url_scheme") == "https"

    def url(self, path: str, **params: str | int) -> str:
        """Return the URL path of dashboard ``path`` (not yet quoted), with query parameters."""
        url = self.base + quote(path, safe="/")
        if params:
            query = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in params.items())
            url += "?" + query
        return url

    def _read_form(self) -> dict[str, list[str]]:
        if self.method != "POST":
            return {}
        content_type = str(self.environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        if content_type != FORM_TYPE:
            raise HTTPError(415, f"a form must be sent as {FORM_TYPE}, not {content_type!r}")
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_FORM_BYTES:
            raise HTTPError(413, f"the form has {length} bytes; at most {MAX_FORM_BYTES} are read")
        body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


@dataclasses.dataclass
class Response:
    """A complete response; ``body`` is sent as it is."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def status_line(self) -> str:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{self.status} {phrase}"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def html(text: str, status: int = 200) -> Response:
    # A payload read with surrogateescape may carry lone surrogates; they are shown as \\udcXX.
    body = text.encode("utf-8", "backslashreplace")
    return Response(status, body, [("Content-Type", "text/html; charset=utf-8")])


def json_response(document: Any, status: int = 200) -> Response:
    body = json.dumps(document, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return Response(status, body, [("Content-Type", "application/json")])


def redirect(location: str) -> Response:
    """Return a 303 See Other, so the browser follows with a GET after a POST."""
    return Response(303, b"", [("Location", location)])
