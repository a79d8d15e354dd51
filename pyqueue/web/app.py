"""The dashboard's WSGI application: routing, access checks, CSRF, read-only mode, errors.

``create_app`` builds one Dashboard. It serves under any mount point: the
host's SCRIPT_NAME plus an optional ``prefix`` that it strips from PATH_INFO,
so it works behind a dispatcher that sets SCRIPT_NAME and behind one that
passes the whole path.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import redis

from pyqueue import __version__
from pyqueue.api.base import tolerate_invalid_utf8
from pyqueue.config import Settings
from pyqueue.connection import create_redis
from pyqueue.outage import OutageLog
from pyqueue.web import actions, pages
from pyqueue.web.auth import Access, AuthCallable
from pyqueue.web.csrf import FIELD, CsrfGuard
from pyqueue.web.http import HTTPError, Request, Response, html, wsgi_text
from pyqueue.web.notices import NOTICE_PARAMS, notice_text
from pyqueue.web.render import environment

logger = logging.getLogger("pyqueue.web")

Handler = Callable[..., Response]
StartResponse = Callable[..., Any]

_SETS = r"(?P<kind>scheduled|retries|dead)"
_ROUTE_TABLE: list[tuple[str, str, Handler]] = [
    ("GET", r"^/$", pages.dashboard),
    ("GET", r"^/stats\.json$", pages.stats_json),
    ("GET", r"^/busy$", pages.busy),
    ("POST", r"^/busy$", actions.busy),
    ("GET", r"^/queues$", pages.queues),
    ("GET", r"^/queues/(?P<name>.+)$", pages.queue),
    ("POST", r"^/queues/(?P<name>.+)$", actions.queue),
    ("GET", rf"^/{_SETS}$", pages.sorted_set),
    ("POST", rf"^/{_SETS}$", actions.sorted_set),
    ("GET", rf"^/{_SETS}/(?P<entry_id>.+)$", pages.entry),
    ("GET", r"^/cron$", pages.cron),
    ("POST", r"^/cron$", actions.cron),
    ("GET", r"^/static/(?P<name>[A-Za-z0-9_-]+\.(?:css|js|svg))$", pages.static_file),
]
ROUTES = [(method, re.compile(pattern), handler) for method, pattern, handler in _ROUTE_TABLE]

# Scripts and styles come only from /static, so an injected tag would not run.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
]


@dataclasses.dataclass(frozen=True)
class Options:
    """Behaviour switches of the dashboard; ``poll_seconds`` is the live graph's first interval."""

    read_only: bool = False
    hide_args: bool = False
    page_size: int = 25
    poll_seconds: int = 5


class Dashboard:
    """The WSGI application; build it with ``create_app``."""

    def __init__(
        self,
        redis: redis.Redis,
        settings: Settings,
        *,
        access: Access,
        csrf: CsrfGuard,
        options: Options,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.access = access
        self.csrf = csrf
        self.options = options
        self.prefix = prefix
        self.clock = clock
        self.templates = environment()
        # Every browser's live graph polls during an outage; log its start and end only.
        self.outage = OutageLog(logger, "Redis")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        response = self.respond(environ)
        headers = list(response.headers)
        headers.append(("Content-Length", str(len(response.body))))
        start_response(response.status_line, headers)
        if str(environ.get("REQUEST_METHOD", "")).upper() == "HEAD":
            return [b""]
        return [response.body]

    def respond(self, environ: dict[str, Any]) -> Response:
        """Handle one request: locate, authenticate, check CSRF, dispatch, add headers."""
        located = self._locate(environ)
        if located is None:
            return Response(404, b"not found", [("Content-Type", "text/plain")])
        request = Request(environ, *located)
        if not request.path:
            # Mounted at /admin, a request for /admin goes on to /admin/ so the root page shows.
            return Response(302, b"", [("Location", request.base + "/")])
        denied = self.access.denied(environ)
        if denied is not None:
            return self._denied(denied)
        nonce, new_nonce = self.csrf.nonce(request)
        request.csrf_token = self.csrf.token(nonce)
        response = self._guarded(request)
        response.headers.extend(SECURITY_HEADERS)
        if new_nonce:
            response.headers.append(self.csrf.cookie_header(nonce, request))
        return response

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        """Render ``template`` with the context every page shares."""
        # Where a form returns to: this page without the last notice.
        query = [
            (k, v) for k, values in request.query.items() for v in values if k not in NOTICE_PARAMS
        ]
        back = request.url(request.path) + ("?" + urlencode(query) if query else "")
        page = self.templates.get_template(template).render(
            request=request,
            url=request.url,
            back=back,
            csrf_field=FIELD,
            csrf_token=request.csrf_token,
            options=self.options,
            now=self.clock(),
            notice=notice_text(request),
            version=__version__,
            **context,
        )
        response = html(page, status)
        response.headers.append(("Cache-Control", "no-store"))
        return response

    def _guarded(self, request: Request) -> Response:
        try:
            return self._dispatch(request)
        except HTTPError as exc:
            response = self._error_page(request, exc.status, exc.message)
            response.headers.extend(exc.headers)
            return response
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.outage.failed(exc)
            message = "Redis is unreachable; reload the page once Redis is back."
            return self._error_page(request, 503, message)
        except Exception:
            logger.exception("dashboard: failed method=%s path=%s", request.method, request.path)
            return self._error_page(request, 500, "The page failed; the server log has the cause.")

    def _dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        allowed = []
        for route_method, pattern, handler in ROUTES:
            match = pattern.match(request.path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            if method == "POST":
                self._check_post(request)
            response = handler(self, request, **match.groupdict())
            if handler is not pages.static_file:
                self.outage.recovered()  # this handler read Redis
            return response
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise HTTPError(405, f"{request.method} is not allowed here", [("Allow", allow)])
        raise HTTPError(404, f"page {request.path!r} not found; the menu above lists the pages")

    def _check_post(self, request: Request) -> None:
        if self.options.read_only:
            raise HTTPError(403, "the dashboard is read-only; actions are turned off")
        if not self.csrf.check(request):
            logger.warning(
                "dashboard: POST rejected, CSRF token missing or invalid path=%s remote=%s",
                request.path,
                request.environ.get("REMOTE_ADDR", "?"),
            )
            raise HTTPError(
                403,
                "the form's CSRF token is missing or does not match its cookie; "
                "reload the page and submit the form again",
            )

    def _error_page(self, request: Request, status: int, message: str) -> Response:
        try:
            return self.render(
                request, "error.html", status, code=status, message=message, nav="", problems=()
            )
        except jinja2.TemplateError:
            logger.exception("dashboard: error page failed status=%d", status)
            return Response(status, message.encode(), [("Content-Type", "text/plain")])

    def _locate(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        """Return (base, path) of a request, or None when the path is outside the prefix."""
        script_name = wsgi_text(environ.get("SCRIPT_NAME", "")).rstrip("/")
        path = wsgi_text(environ.get("PATH_INFO", ""))
        if self.prefix:
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix) :]
        base = quote(script_name + self.prefix, safe="/")
        return base, path or ""

    def _denied(self, status: int) -> Response:
        if status == 401:
            headers = [("Content-Type", "text/plain"), self.access.challenge()]
            return Response(401, b"authentication required", headers)
        return Response(403, b"forbidden", [("Content-Type", "text/plain")])


def create_app(
    redis_url: str | None = None,
    *,
    redis: redis.Redis | None = None,
    settings: Settings | None = None,
    prefix: str = "",
    auth: AuthCallable | None = None,
    username: str | None = None,
    password: str | None = None,
    read_only: bool = False,
    hide_args: bool = False,
    secret: str | bytes | None = None,
    page_size: int = 25,
    poll_seconds: int = 5,
    clock: Callable[[], float] = time.time,
) -> Dashboard:
    """Build the dashboard as a WSGI application.

    The connection is ``redis`` when given (it must decode responses), else a
    new pool to ``redis_url``, else to ``settings.redis_url``, REDIS_URL or
    localhost. ``settings`` supplies the dead-set limits, the timestamp mode
    and the cron layout. ``auth`` gets the WSGI environ and returns True to
    let a request in; ``username`` and ``password`` turn on basic auth (both
    may be used). ``secret`` signs the CSRF tokens; every process serving the
    same dashboard needs the same one, and the default is random per app.
    Raises ValueError for an invalid prefix, page size or credentials.
    """
    if redis is None:
        url = redis_url or (settings.redis_url if settings is not None else None)
        # A private pool, so it may decode bytes that are not UTF-8 and list such entries.
        redis = tolerate_invalid_utf8(create_redis(url, pool_size=10))
    if not 1 <= page_size <= 500:
        raise ValueError(f"page_size must be between 1 and 500, got {page_size}")
    if not 1 <= poll_seconds <= 60:
        raise ValueError(f"poll_seconds must be between 1 and 60, got {poll_seconds}")
    key = secret.encode() if isinstance(secret, str) else secret
    return Dashboard(
        redis,
        settings if settings is not None else Settings(),
        access=Access(auth, username, password),
        csrf=CsrfGuard(key if key is not None else secrets.token_bytes(32)),
        options=Options(read_only, hide_args, page_size, poll_seconds),
        prefix=normalize_prefix(prefix),
        clock=clock,
    )


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` as ``/a/b`` (or ``""``); raise ValueError for one that is not a path."""
    cleaned = prefix.strip().rstrip("/")
    if cleaned and (not cleaned.startswith("/") or "//" in cleaned or "?" in cleaned):
        raise ValueError(f"prefix {prefix!r} must be a URL path such as /admin/jobs")
    return cleaned
