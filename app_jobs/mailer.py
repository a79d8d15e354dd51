"""Sending one email: SendGrid's Mail Send, or a console or file backend for development.

``SendGridMailer.send`` makes one request for one recipient and classifies
the response: accepted (200/202), worth retrying for this recipient alone
(429, 5xx, timeouts, connection errors) or failed for good (400, 413, other
4xx). A 401, 403 or 404 means the key, the account or the host is wrong for
every email, so it raises SendGridConfigError and the sender stops its run.
API keys and addresses never reach the logs; only delivery ids do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import logging
import secrets
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import python_http_client.exceptions as http_errors
import redis
import sendgrid

from app_jobs.settings import AppSettings
from pyqueue import ratelimit
from pyqueue.errors import ConfigError

log = logging.getLogger(__name__)
# python_http_client logs every request body and its Authorization header at
# DEBUG level, which would put API keys and addresses into the logs.
logging.getLogger("python_http_client").setLevel(logging.WARNING)

# Redis key set while SendGrid rejects the key or account; read by the health checks.
CONFIG_ERROR_KEY = "app_jobs:sendgrid:config_error"
CONFIG_STATUSES = (401, 403, 404)
ERROR_TEXT_LIMIT = 500

Outcome = Literal["sent", "retry", "failed"]


@dataclasses.dataclass(frozen=True)
class OutgoingEmail:
    """The content of one Mail Send request: one recipient and our ids for the webhook."""

    delivery_id: int
    attempt: int
    scheduled_email_id: int
    to_email: str
    to_name: str | None
    subject: str
    html: str
    text: str


@dataclasses.dataclass(frozen=True)
class SendResult:
    """The classified response. ``retry_at`` (epoch seconds) comes from X-RateLimit-Reset."""

    outcome: Outcome
    message_id: str | None = None
    error: str | None = None
    status_code: int | None = None
    retry_at: float | None = None


class SendGridConfigError(Exception):
    """Raised on a 401, 403 or 404 from SendGrid, because then no email can be sent."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"SendGrid responded with HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message


class Mailer(Protocol):
    def send(self, email: OutgoingEmail) -> SendResult: ...


def custom_args(email: OutgoingEmail) -> dict[str, str]:
    """Return our ids for the webhook events; SendGrid rejects non-string values."""
    return {
        "app_delivery_id": str(email.delivery_id),
        "app_attempt": str(email.attempt),
        "app_scheduled_email_id": str(email.scheduled_email_id),
    }


def message_body(email: OutgoingEmail, settings: AppSettings) -> dict[str, Any]:
    """Build the Mail Send JSON body for one recipient."""
    to: dict[str, str] = {"email": email.to_email}
    if email.to_name:
        to["name"] = email.to_name
    sender: dict[str, str] = {"email": settings.from_email}
    if settings.from_name:
        sender["name"] = settings.from_name
    # SendGrid rejects empty content values and wants text/plain before text/html.
    content = [
        {"type": mime, "value": value}
        for mime, value in (("text/plain", email.text), ("text/html", email.html))
        if value
    ] or [{"type": "text/plain", "value": email.subject or " "}]
    return {
        "personalizations": [{"to": [to], "custom_args": custom_args(email)}],
        "from": sender,
        "subject": email.subject,
        "content": content,
        "mail_settings": {"sandbox_mode": {"enable": settings.sandbox_mode}},
    }


class SendGridMailer:
    """Mail Send through the official ``sendgrid`` package.

    The package's client mutates shared header state on every call, so each
    ``send`` builds its own client. One mailer is therefore safe to share
    between worker threads.
    """

    def __init__(
        self, settings: AppSettings, limiter: ratelimit.WindowLimiter | None = None
    ) -> None:
        if not settings.sendgrid_api_key:
            raise ConfigError(
                "SENDGRID_API_KEY is empty; set it to a key with the Mail Send permission, "
                "or set APP_JOBS_EMAIL_BACKEND=console for local development"
            )
        self.settings = settings
        self.limiter = limiter if limiter is not None else sendgrid_limiter(settings)

    def send(self, email: OutgoingEmail) -> SendResult:
        not_sent = self._take_rate_limit_slot()
        if not_sent is not None:
            return not_sent
        client = sendgrid.SendGridAPIClient(
            api_key=self.settings.sendgrid_api_key, host=self.settings.sendgrid_host
        )
        # The package sets no timeout, and urllib would otherwise wait forever.
        client.client.timeout = self.settings.sendgrid_timeout
        try:
            response = client.send(message_body(email, self.settings))
        except http_errors.HTTPError as exc:
            return self._classify_error(exc)
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            # The request may have reached SendGrid, so a retry can duplicate the email;
            # without an idempotency key that is the price of not losing it.
            return SendResult("retry", error=f"Mail Send failed: {type(exc).__name__}: {exc}")
        status = int(response.status_code)
        if 200 <= status < 300:
            # Sandbox responses may lack X-Message-Id, and webhook events still carry our ids.
            return SendResult(
                "sent", message_id=response.headers.get("X-Message-Id"), status_code=status
            )
        return SendResult(
            "retry", error=f"SendGrid responded with HTTP {status}", status_code=status
        )

    def _classify_error(self, exc: http_errors.HTTPError) -> SendResult:
        status = int(exc.status_code)
        message = self._redact(error_message(exc.body, exc.reason))
        if status in CONFIG_STATUSES:
            raise SendGridConfigError(status, message) from None
        if status == 429 or status >= 500:
            reset = exc.headers.get("X-RateLimit-Reset") if exc.headers else None
            return SendResult(
                "retry",
                error=f"SendGrid responded with HTTP {status}: {message}",
                status_code=status,
                retry_at=_to_epoch(reset),
            )
        return SendResult(
            "failed", error=f"SendGrid responded with HTTP {status}: {message}", status_code=status
        )

    def _redact(self, text: str) -> str:
        return text.replace(self.settings.sendgrid_api_key, "[api key]")

    def _take_rate_limit_slot(self) -> SendResult | None:
        """Wait for a slot of APP_JOBS_SENDGRID_RATE_LIMIT; return a retry result if none frees.

        Without a slot nothing is sent. The caller queues the delivery again,
        and that counts as one failed request toward MAX_SEND_ERRORS.
        """
        if self.limiter is None:
            return None
        try:
            self.limiter.acquire()
        except ratelimit.OverLimit as exc:
            return SendResult(
                "retry",
                error=f"not sent: {exc} (APP_JOBS_SENDGRID_RATE_LIMIT)",
                retry_at=time.time() + exc.retry_after,
            )
        except redis.RedisError as exc:
            return SendResult(
                "retry", error=f"not sent: the SendGrid rate limiter could not reach Redis: {exc}"
            )
        return None


def sendgrid_limiter(settings: AppSettings) -> ratelimit.WindowLimiter | None:
    """Return the window limiter that APP_JOBS_SENDGRID_RATE_LIMIT sets, or None when unset.

    It waits up to one window for a slot, which always frees by then unless
    other workers take it first. It uses the process-wide pyqueue client's Redis.
    """
    rate = settings.sendgrid_rate
    if rate is None:
        return None
    limit, period = rate
    return ratelimit.window("sendgrid", limit, per=period, wait_timeout=period)


def error_message(body: bytes | str | None, reason: str | None = None) -> str:
    """Return SendGrid's error messages joined, from ``{"errors": [{"message", "field"}]}``."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body or ""
    try:
        data = json.loads(raw)
        errors = data.get("errors") if isinstance(data, dict) else None
    except ValueError:
        errors = None
    if isinstance(errors, list) and errors:
        parts = []
        for entry in errors:
            if not isinstance(entry, dict):
                continue
            field = f" (field {entry['field']})" if entry.get("field") else ""
            parts.append(f"{entry.get('message') or 'no message'}{field}")
        text = "; ".join(parts)
    else:
        text = raw.strip() or (reason or "no error message")
    return text[:ERROR_TEXT_LIMIT]


def _to_epoch(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class ConsoleMailer:
    """Development backend: prints a short summary of each email to stdout."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def send(self, email: OutgoingEmail) -> SendResult:
        # A local console only: the recipient is printed here but never logged.
        stream = self.stream or sys.stdout
        stream.write(
            f"[email] delivery={email.delivery_id} attempt={email.attempt} "
            f"to={email.to_email} subject={email.subject!r}\n"
        )
        stream.flush()
        return SendResult("sent", message_id=f"console-{secrets.token_hex(8)}")


class FileMailer:
    """Development backend: writes each Mail Send body as a JSON file in a folder."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self.directory = Path(settings.email_file_dir)

    def send(self, email: OutgoingEmail) -> SendResult:
        self.directory.mkdir(parents=True, exist_ok=True)
        message_id = f"file-{secrets.token_hex(8)}"
        path = self.directory / f"delivery-{email.delivery_id}-attempt-{email.attempt}.json"
        body = message_body(email, self.settings)
        path.write_text(json.dumps({"message_id": message_id, **body}, indent=2), "utf-8")
        return SendResult("sent", message_id=message_id)


def build_mailer(settings: AppSettings) -> Mailer:
    """Return the backend chosen by APP_JOBS_EMAIL_BACKEND."""
    if settings.email_backend == "console":
        return ConsoleMailer()
    if settings.email_backend == "file":
        return FileMailer(settings)
    return SendGridMailer(settings)


def record_config_error(client: redis.Redis, error: SendGridConfigError, now: dt.datetime) -> bool:
    """Store the error under CONFIG_ERROR_KEY; return True when the outage is new."""
    entry = {
        "status": error.status_code,
        "message": error.message,
        "since": now.isoformat(),
        "last_seen": now.isoformat(),
    }
    if client.set(CONFIG_ERROR_KEY, json.dumps(entry), nx=True):
        return True
    previous = read_config_error(client) or entry
    client.set(CONFIG_ERROR_KEY, json.dumps({**entry, "since": previous.get("since")}))
    return False


def clear_config_error(client: redis.Redis) -> bool:
    """Remove the stored error; return True when there was one (the outage ended)."""
    return bool(client.delete(CONFIG_ERROR_KEY))


def read_config_error(client: redis.Redis) -> dict[str, Any] | None:
    """Return the stored error (status, message, since, last_seen), or None when sending works."""
    raw = client.get(CONFIG_ERROR_KEY)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"status": None, "message": str(raw)}
    return value if isinstance(value, dict) else {"status": None, "message": str(value)}
