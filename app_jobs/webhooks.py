"""The SendGrid Event Webhook receiver: a plain WSGI app that `app-jobs web` serves.

``POST /api/v1/webhooks/sendgrid`` reads the raw body, verifies SendGrid's
signature, checks that the body is a JSON array of objects and pushes it to
Redis as EmailDeliveryProcessorJob jobs. It returns 200 only once the jobs are
in Redis. SendGrid posts the batch again later after any other status, for up
to 24 h. ``GET /health`` reports whether Redis and PostgreSQL are reachable.

Logs carry request ids and event counts, never bodies or addresses.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import redis

from app_jobs import db
from app_jobs.mailer import read_config_error
from app_jobs.settings import AppSettings
from app_jobs.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    SignatureVerifier,
)
from app_jobs.webhook_jobs import EmailDeliveryProcessorJob
from pyqueue.client import Client
from pyqueue.connection import create_redis
from pyqueue.outage import OutageLog

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/v1/webhooks/sendgrid"
HEALTH_PATH = "/health"

# Events per job. SendGrid posts batches of up to about 768 KB, which is an
# estimated 2,000 to 3,000 events, and smaller jobs keep transactions short.
CHUNK_EVENTS = 500
# SendGrid does not document its request timeout (third-party guides report
# about 10 s). A quick 503, which SendGrid retries, beats a post it abandons.
REDIS_SOCKET_TIMEOUT = 3.0
READ_BLOCK = 64 * 1024
POSTGRES_CONNECT_TIMEOUT = 3

Enqueue = Callable[[list[list[dict[str, Any]]]], None]
"""Pushes one job per chunk of events; raises when Redis cannot take them."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class HTTPError(Exception):
    """An error response: status code and a short reason that is safe to return."""

    def __init__(self, status: HTTPStatus, reason: str, headers: Sequence[tuple[str, str]] = ()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


class RedisEnqueue:
    """The default ``enqueue``: one pipelined push of every chunk to Redis."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, chunks: list[list[dict[str, Any]]]) -> None:
        self.client.push_bulk({"class": EmailDeliveryProcessorJob, "args": [[c] for c in chunks]})


class WebhookApp:
    """The WSGI callable returned by ``create_app``."""

    def __init__(
        self,
        settings: AppSettings,
        verifier: SignatureVerifier,
        enqueue: Enqueue,
        checks: Mapping[str, Callable[[], Any]],
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self.enqueue = enqueue
        self.checks = checks
        self.redis_outage = OutageLog(log, "Redis")
        self.check_outages = {name: OutageLog(log, f"health check {name}") for name in checks}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request_id = _request_id(environ)
        try:
            status, body = self._route(environ, request_id)
            headers: list[tuple[str, str]] = []
        except HTTPError as exc:
            status, body, headers = exc.status, {"error": exc.reason}, exc.headers
        body["request_id"] = request_id
        payload = json.dumps(body).encode()
        headers += [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("X-Request-Id", request_id),
        ]
        start_response(f"{status.value} {status.phrase}", headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [payload]

    def _route(
        self, environ: WSGIEnvironment, request_id: str
    ) -> tuple[HTTPStatus, dict[str, Any]]:
        path = str(environ.get("PATH_INFO") or "/")
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        if path.rstrip("/") == WEBHOOK_PATH:
            _allow(method, ("POST",))
            return self.receive(environ, request_id)
        if path.rstrip("/") == HEALTH_PATH:
            _allow(method, ("GET", "HEAD"))
            return self.health()
        raise HTTPError(HTTPStatus.NOT_FOUND, "not found")

    def receive(
        self, environ: WSGIEnvironment, request_id: str
    ) -> tuple[HTTPStatus, dict[str, Any]]:
        """Verify, parse and enqueue one post; raise HTTPError for every rejection."""
        try:
            body = read_body(environ, self.settings.webhook_max_bytes)
            self._verify(environ, body)
            events = parse_events(body)
        except HTTPError as exc:
            log.warning("webhook rejected request_id=%s status=%d: %s", request_id, exc.status, exc)
            raise
        chunks = [events[i : i + CHUNK_EVENTS] for i in range(0, len(events), CHUNK_EVENTS)]
        if chunks:
            self._enqueue(chunks, request_id)
        log.info(
            "webhook accepted request_id=%s events=%d jobs=%d", request_id, len(events), len(chunks)
        )
        return HTTPStatus.OK, {"status": "enqueued", "events": len(events), "jobs": len(chunks)}

    def _verify(self, environ: WSGIEnvironment, body: bytes) -> None:
        signature = environ.get(_environ_key(SIGNATURE_HEADER))
        timestamp = environ.get(_environ_key(TIMESTAMP_HEADER))
        unsigned = not signature and not timestamp
        if self.settings.webhook_allow_unsigned and (unsigned or not self.verifier.public_keys):
            return
        try:
            self.verifier.verify(signature, timestamp, body)
        except SignatureError as exc:
            raise HTTPError(HTTPStatus.FORBIDDEN, exc.reason) from exc

    def _enqueue(self, chunks: list[list[dict[str, Any]]], request_id: str) -> None:
        try:
            self.enqueue(chunks)
        except (redis.RedisError, OSError) as exc:
            self.redis_outage.failed(exc)
            log.warning("webhook not enqueued request_id=%s: Redis unavailable", request_id)
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "events could not be queued") from exc
        self.redis_outage.recovered()

    def health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        """Run every check; 503 when one of them raises.

        A check may return a string, which is reported in place of "ok"
        without failing the health response.
        """
        results: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                value = check()
            # Any exception means the dependency is unusable, whatever its type.
            except Exception as exc:
                self.check_outages[name].failed(exc)
                results[name] = "unavailable"
                continue
            self.check_outages[name].recovered()
            results[name] = value if isinstance(value, str) else "ok"
        healthy = "unavailable" not in results.values()
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return status, {"status": "ok" if healthy else "unavailable", "checks": results}


def create_app(
    settings: AppSettings,
    *,
    enqueue: Enqueue | None = None,
    checks: Mapping[str, Callable[[], Any]] | None = None,
    clock: Callable[[], float] = time.time,
) -> WebhookApp:
    """Build the receiver from ``settings``; raise ConfigError for an invalid public key.

    ``enqueue`` replaces the push to Redis, so that tests can pass a failing
    one. ``checks`` replaces the health checks: a mapping of name to a
    callable that raises when the dependency is down. ``clock`` returns the
    Unix time for the signature timestamp check.
    """
    verifier = SignatureVerifier(
        settings.webhook_public_keys,
        max_age=settings.webhook_max_age,
        max_future=settings.webhook_max_future,
        clock=clock,
    )
    if not verifier.public_keys and not settings.webhook_allow_unsigned:
        log.warning(
            "no APP_JOBS_WEBHOOK_PUBLIC_KEYS set: every SendGrid post is rejected with 403 "
            "until the Signed Event Webhook key is configured"
        )
    if settings.webhook_allow_unsigned:
        log.warning("APP_JOBS_WEBHOOK_ALLOW_UNSIGNED is on: unsigned posts are accepted")
    client: Client | None = None
    if enqueue is None or checks is None:
        client = Client(redis=create_redis(settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT))
    if enqueue is None:
        assert client is not None
        enqueue = RedisEnqueue(client)
    if checks is None:
        assert client is not None
        checks = default_checks(settings, client.redis)
    return WebhookApp(settings, verifier, enqueue, checks)


def default_checks(settings: AppSettings, client: redis.Redis) -> dict[str, Callable[[], Any]]:
    """Return the checks of ``GET /health``: Redis, PostgreSQL and the SendGrid key flag."""

    def check_redis() -> None:
        client.ping()

    def check_postgres() -> None:
        with db.connect(settings.database_url, connect_timeout=POSTGRES_CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT 1")

    def check_sendgrid() -> str:
        # Reported but never a 503: restarting the receiver cannot fix a wrong
        # API key, and while it restarts SendGrid's posts would fail. Only the
        # status code is shown because /health is public.
        error = read_config_error(client)
        return "ok" if error is None else f"config_error (HTTP {error.get('status')})"

    return {"redis": check_redis, "postgres": check_postgres, "sendgrid": check_sendgrid}


def read_body(environ: WSGIEnvironment, max_bytes: int) -> bytes:
    """Read the raw body, at most ``max_bytes``; raise HTTPError 400, 411 or 413."""
    stream = environ["wsgi.input"]
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not length_text:
        # Without Content-Length, PEP 3333 lets an app read to the end only when
        # the server sets wsgi.input_terminated to mark the end of the stream.
        if not environ.get("wsgi.input_terminated"):
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "Content-Length header required")
        body = _read_up_to(stream, max_bytes + 1)
    else:
        if not (length_text.isascii() and length_text.isdigit()):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "invalid Content-Length header")
        length = int(length_text)
        if length > max_bytes:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {max_bytes} bytes")
        body = _read_up_to(stream, length)
        if len(body) < length:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "body shorter than Content-Length")
    if len(body) > max_bytes:
        raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {max_bytes} bytes")
    return body


def _read_up_to(stream: Any, limit: int) -> bytes:
    parts: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = stream.read(min(READ_BLOCK, remaining))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """Decode the body; raise HTTPError 400 unless it is a JSON array of objects."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from exc
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise HTTPError(HTTPStatus.BAD_REQUEST, "body must be a JSON array of event objects")
    return value


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON and which a
    # job payload cannot carry.
    raise ValueError(f"{name} is not valid JSON")


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise HTTPError(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"method {method} not allowed",
            [("Allow", ", ".join(allowed))],
        )


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def _request_id(environ: WSGIEnvironment) -> str:
    """Return the proxy's X-Request-Id when it looks like an id, else a new one."""
    incoming = str(environ.get("HTTP_X_REQUEST_ID") or "")
    return incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
