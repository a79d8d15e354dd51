"""Parts shared by every CLI command: exit codes, common options and error mapping."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from pyqueue import log
from pyqueue.errors import ConfigError, PyQueueError

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_FAILURE = 1  # a check failed or the command could not do its work
EXIT_USAGE = 2  # click's own code for bad flags and arguments
EXIT_REDIS = 3  # Redis unreachable or too old
EXIT_IMPORT = 4  # a job module named by -r could not be imported
EXIT_CONFIG = 5  # an invalid setting

F = TypeVar("F", bound=Callable[..., Any])


def redis_url_option(func: F) -> F:
    """Add ``--redis-url`` (falls back to REDIS_URL, then redis://localhost:6379/0)."""
    option = click.option(
        "--redis-url",
        envvar="REDIS_URL",
        default=None,
        metavar="URL",
        help="Redis URL (REDIS_URL; default redis://localhost:6379/0).",
    )
    return option(func)


def log_options(func: F) -> F:
    """Add ``--log-level`` and ``--log-format`` (PYQUEUE_LOG_LEVEL, PYQUEUE_LOG_FORMAT)."""
    level = click.option(
        "--log-level",
        type=click.Choice(log.LEVELS),
        envvar="PYQUEUE_LOG_LEVEL",
        default="info",
        show_default=True,
        help="Lowest level logged (PYQUEUE_LOG_LEVEL).",
    )
    fmt = click.option(
        "--log-format",
        type=click.Choice(log.FORMATS),
        envvar="PYQUEUE_LOG_FORMAT",
        default="text",
        show_default=True,
        help="Log line format (PYQUEUE_LOG_FORMAT).",
    )
    return level(fmt(func))


def handle_errors(func: F) -> F:
    """Turn pyqueue and Redis errors into one stderr line and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), EXIT_CONFIG)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            reason = str(exc).rstrip(". ")
            fail(f"cannot reach Redis ({reason}); check --redis-url or REDIS_URL", EXIT_REDIS)
        except PyQueueError as exc:
            fail(str(exc), EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
