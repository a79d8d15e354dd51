"""Settings of the email app, read from the environment once per process.

Every value has an environment variable (listed on each field). The worker,
the webhook receiver and the ``app-jobs`` command all read the same
``AppSettings``, so one environment configures the whole app.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

from pyqueue.errors import ConfigError
from pyqueue.launcher import current_settings

BACKENDS = ("sendgrid", "console", "file")
STUCK_POLICIES = ("review", "resend")


@dataclasses.dataclass(frozen=True)
class AppSettings:
    """The validated settings of the email app."""

    # DATABASE_URL: a libpq URL or key=value string.
    database_url: str = "postgresql://localhost/app_jobs"
    # REDIS_URL: the Redis that pyqueue uses.
    redis_url: str = "redis://localhost:6379/0"
    # SENDGRID_API_KEY: needed only when the backend is sendgrid.
    sendgrid_api_key: str = dataclasses.field(default="", repr=False)
    # APP_JOBS_SENDGRID_HOST: https://api.eu.sendgrid.com for EU subusers, a local fake in tests.
    sendgrid_host: str = "https://api.sendgrid.com"
    # APP_JOBS_SENDGRID_TIMEOUT: seconds for one Mail Send request.
    sendgrid_timeout: float = 10.0
    # APP_JOBS_SENDGRID_RATE_LIMIT: "N/S" allows at most N Mail Send requests in any S
    # seconds, counted in Redis across every worker (e.g. "600/60"). Empty: no limit.
    sendgrid_rate_limit: str = ""
    # APP_JOBS_EMAIL_BACKEND (or EMAIL_BACKEND): sendgrid, console or file.
    email_backend: str = "sendgrid"
    # APP_JOBS_EMAIL_FILE_DIR: where the file backend writes one JSON file per email.
    email_file_dir: str = "tmp/emails"
    # APP_JOBS_FROM_EMAIL / APP_JOBS_FROM_NAME: a sender identity verified in SendGrid.
    from_email: str = "events@example.com"
    from_name: str = "Event Team"
    # APP_JOBS_SANDBOX_MODE: SendGrid validates each request but delivers nothing.
    sandbox_mode: bool = False
    # APP_JOBS_WEBHOOK_PUBLIC_KEYS: comma-separated base64 DER keys (several during rotation).
    webhook_public_keys: tuple[str, ...] = ()
    # APP_JOBS_WEBHOOK_ALLOW_UNSIGNED: development only.
    webhook_allow_unsigned: bool = False
    # APP_JOBS_WEBHOOK_MAX_BYTES: SendGrid posts batches of up to about 768 KB.
    webhook_max_bytes: int = 5 * 1024 * 1024
    # APP_JOBS_WEBHOOK_MAX_AGE: SendGrid re-posts for 24 h, plus an hour of slack.
    webhook_max_age: int = 90_000
    # APP_JOBS_WEBHOOK_MAX_FUTURE: allowed clock skew for a signature timestamp, in seconds.
    webhook_max_future: int = 300
    # APP_JOBS_STUCK_SENDING_AFTER: seconds before the scanner settles a delivery left in
    # "sending" by a crashed process.
    stuck_sending_after: int = 3600
    # APP_JOBS_STUCK_SENDING_POLICY: "review" marks such a delivery failed and flags it,
    # so a crash can cost one email but never sends one twice. "resend" sends it again,
    # so a crash can send one email twice but never loses one. Review is the default
    # because a duplicate cannot be taken back, while a flagged row can still be re-sent.
    stuck_sending_policy: str = "review"
    # APP_JOBS_DB_POOL_SIZE: default is the worker's concurrency plus 2 (see pool_size).
    db_pool_size: int | None = None
    # PYQUEUE_CONCURRENCY: the thread count that pool_size assumes outside a running worker.
    worker_concurrency: int = 5
    # APP_JOBS_WEB_HOST and PORT (or APP_JOBS_WEB_PORT): where `app-jobs web` listens.
    web_host: str = "127.0.0.1"
    web_port: int = 8000

    @property
    def sendgrid_rate(self) -> tuple[int, float] | None:
        """Return APP_JOBS_SENDGRID_RATE_LIMIT as (requests, seconds), or None when unset."""
        return parse_rate_limit(self.sendgrid_rate_limit)

    @property
    def pool_size(self) -> int:
        """Connections in the PostgreSQL pool: APP_JOBS_DB_POOL_SIZE, else threads plus two.

        Inside a running pyqueue worker the thread count is its effective
        concurrency (``pyqueue run -c``, the config file or PYQUEUE_CONCURRENCY).
        Elsewhere it is PYQUEUE_CONCURRENCY, else 5. ``db.get_pool`` reads it
        once, when the process first uses the pool.
        """
        if self.db_pool_size:
            return self.db_pool_size
        worker = current_settings()
        threads = worker.concurrency if worker is not None else self.worker_concurrency
        return threads + 2


# Field -> environment variables, first one set wins.
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "database_url": ("DATABASE_URL",),
    "redis_url": ("REDIS_URL",),
    "sendgrid_api_key": ("SENDGRID_API_KEY",),
    "sendgrid_host": ("APP_JOBS_SENDGRID_HOST",),
    "sendgrid_timeout": ("APP_JOBS_SENDGRID_TIMEOUT",),
    "sendgrid_rate_limit": ("APP_JOBS_SENDGRID_RATE_LIMIT",),
    "email_backend": ("APP_JOBS_EMAIL_BACKEND", "EMAIL_BACKEND"),
    "email_file_dir": ("APP_JOBS_EMAIL_FILE_DIR",),
    "from_email": ("APP_JOBS_FROM_EMAIL",),
    "from_name": ("APP_JOBS_FROM_NAME",),
    "sandbox_mode": ("APP_JOBS_SANDBOX_MODE",),
    "webhook_public_keys": ("APP_JOBS_WEBHOOK_PUBLIC_KEYS",),
    "webhook_allow_unsigned": ("APP_JOBS_WEBHOOK_ALLOW_UNSIGNED",),
    "webhook_max_bytes": ("APP_JOBS_WEBHOOK_MAX_BYTES",),
    "webhook_max_age": ("APP_JOBS_WEBHOOK_MAX_AGE",),
    "webhook_max_future": ("APP_JOBS_WEBHOOK_MAX_FUTURE",),
    "stuck_sending_after": ("APP_JOBS_STUCK_SENDING_AFTER",),
    "stuck_sending_policy": ("APP_JOBS_STUCK_SENDING_POLICY",),
    "db_pool_size": ("APP_JOBS_DB_POOL_SIZE",),
    "worker_concurrency": ("PYQUEUE_CONCURRENCY",),
    "web_host": ("APP_JOBS_WEB_HOST",),
    "web_port": ("PORT", "APP_JOBS_WEB_PORT"),
}


def load_settings(environ: Mapping[str, str] | None = None) -> AppSettings:
    """Read and validate the settings; raise ConfigError naming the variable at fault."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(AppSettings):
        for variable in ENVIRONMENT[field.name]:
            raw = environ.get(variable)
            if raw is not None and raw.strip() != "":
                values[field.name] = _convert(field.name, variable, raw.strip())
                break
    settings = AppSettings(**values)
    _check(settings)
    return settings


@functools.cache
def get_settings() -> AppSettings:
    """Return the process-wide settings, read from os.environ on first use."""
    return load_settings()


def _convert(name: str, variable: str, raw: str) -> Any:
    default = AppSettings.__dataclass_fields__[name].default
    converters: dict[type, Callable[[str, str], Any]] = {
        bool: _to_bool,
        int: _to_int,
        float: _to_float,
    }
    if name == "webhook_public_keys":
        return tuple("".join(key.split()) for key in raw.split(",") if key.strip())
    if name == "db_pool_size":
        return _to_int(variable, raw)
    converter = converters.get(type(default))
    return converter(variable, raw) if converter else raw


def _to_bool(variable: str, raw: str) -> bool:
    text = raw.lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{variable} is {raw!r}; set it to true or false")


def _to_int(variable: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{variable} is {raw!r}; set it to a whole number") from None


def _to_float(variable: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{variable} is {raw!r}; set it to a number of seconds") from None


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """Read a rate limit written "N/S" (N requests per S seconds); "" means no limit.

    Raises ConfigError unless N is a whole number and S a number of seconds, both above 0.
    """
    if not text.strip():
        return None
    count, slash, seconds = text.strip().partition("/")
    try:
        limit, period = int(count), float(seconds)
    except ValueError:
        limit, period = 0, 0.0
    if not slash or limit <= 0 or not period > 0:
        raise ConfigError(
            f"APP_JOBS_SENDGRID_RATE_LIMIT is {text!r}; write it as requests/seconds, "
            "e.g. 600/60, or leave it empty for no limit"
        )
    return limit, period


def _check(settings: AppSettings) -> None:
    parse_rate_limit(settings.sendgrid_rate_limit)
    if settings.email_backend not in BACKENDS:
        raise ConfigError(
            f"APP_JOBS_EMAIL_BACKEND is {settings.email_backend!r}; "
            f"choose one of {', '.join(BACKENDS)}"
        )
    if settings.stuck_sending_policy not in STUCK_POLICIES:
        raise ConfigError(
            f"APP_JOBS_STUCK_SENDING_POLICY is {settings.stuck_sending_policy!r}; "
            f"choose one of {', '.join(STUCK_POLICIES)}"
        )
    positive = {
        "APP_JOBS_SENDGRID_TIMEOUT": settings.sendgrid_timeout,
        "APP_JOBS_WEBHOOK_MAX_BYTES": settings.webhook_max_bytes,
        "APP_JOBS_WEBHOOK_MAX_AGE": settings.webhook_max_age,
        "APP_JOBS_STUCK_SENDING_AFTER": settings.stuck_sending_after,
        "PYQUEUE_CONCURRENCY": settings.worker_concurrency,
        "APP_JOBS_DB_POOL_SIZE": settings.db_pool_size or 1,
    }
    for variable, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{variable} is {value!r}; it must be greater than 0")
    if settings.webhook_max_future < 0:
        raise ConfigError(
            f"APP_JOBS_WEBHOOK_MAX_FUTURE is {settings.webhook_max_future!r}; use 0 or more"
        )
    if not 0 < settings.web_port < 65536:
        raise ConfigError(f"PORT is {settings.web_port!r}; use a TCP port from 1 to 65535")
