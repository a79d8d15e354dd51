"""Settings of a pyqueue process: defaults < config file < environment < CLI flags.

Every setting has one name in three spellings: ``snake_case`` in the YAML
file, ``--kebab-case`` as a flag and ``PYQUEUE_UPPER_CASE`` in the
environment (``REDIS_URL`` for the Redis URL). Queues are written as Sidekiq
writes them: a list of names, or of ``[name, weight]`` pairs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pyqueue.errors import ConfigError

ENV_PREFIX = "PYQUEUE_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated settings of one process. See docs/configuration.md."""

    redis_url: str = "redis://localhost:6379/0"
    concurrency: int = 5
    # (name, weight) pairs; every weight 0 means strict order.
    queues: tuple[tuple[str, int], ...] = (("default", 0),)
    timeout: float = 25.0
    tag: str = ""
    labels: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    environment: str = "development"
    log_level: str = "info"
    log_format: str = "text"
    heartbeat_interval: float = 10.0
    # Fixed average for the scheduled poller; None scales it by process count.
    poll_interval_average: float | None = None
    average_scheduled_poll_interval: float = 5.0
    max_retries: int = 25
    dead_max_jobs: int = 10_000
    dead_timeout_in_seconds: int = 15_552_000
    # Also write <identity>:workers, which Sidekiq 6.4.1's Web UI reads.
    legacy_workers_key: bool = True
    timestamp_mode: str = "float_seconds"
    # "reliable" keeps a running job in a per-process working list until it is
    # acknowledged; "basic" is Sidekiq's BRPOP, which loses it if the process dies.
    fetch: str = "reliable"
    # A job recovered from dead processes more than this many times goes to the dead set.
    max_recoveries: int = 3
    processes: int = 1
    redis_pool_size: int | None = None
    schedule_file: str | None = None
    cron_layout: str = "v1"
    cron_namespace: str = "default"
    cron_poll_interval: float = 30.0
    cron_timezone: str = "UTC"
    cron_grace_period: int = 60
    cron_history_size: int = 10
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Also serve the cluster metrics read from Redis on the worker's metrics port.
    metrics_cluster: bool = False

    @property
    def strict(self) -> bool:
        """True when no queue has a weight, so queues are fetched in fixed order."""
        return all(weight == 0 for _, weight in self.queues)

    @property
    def queue_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for name, _ in self.queues:
            seen.setdefault(name, None)
        return list(seen)

    @property
    def pool_size(self) -> int:
        """Connections in the Redis pool: one per thread plus the process's own actors."""
        return self.redis_pool_size or self.concurrency + 5


_CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("text", "json"),
    "timestamp_mode": ("float_seconds", "int_millis"),
    "fetch": ("reliable", "basic"),
    "cron_layout": ("v1", "v2"),
}

_POSITIVE = (
    "concurrency",
    "timeout",
    "heartbeat_interval",
    "average_scheduled_poll_interval",
    "processes",
    "dead_max_jobs",
    "dead_timeout_in_seconds",
    "cron_history_size",
)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


def env_name(field: str) -> str:
    """Return the environment variable of a setting (``REDIS_URL`` for redis_url)."""
    return "REDIS_URL" if field == "redis_url" else ENV_PREFIX + field.upper()


def load(
    config_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the YAML file, the environment and flags; validate the result.

    ``flags`` holds only the flags given on the command line (None values are
    ignored). Raises ConfigError naming the setting on any invalid value.
    """
    environ = os.environ if environ is None else environ
    flags = flags or {}
    values: dict[str, Any] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        # The environment that picks the file's section follows the same precedence.
        environment = flags.get("environment") or environ.get(ENV_PREFIX + "ENVIRONMENT")
        values.update(read_file(path, environ, environment))
    values.update(_from_environment(environ))
    values.update({k: v for k, v in flags.items() if v is not None and v != ()})
    return build(values)


def read_file(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    """Read a YAML config file; a section named after the environment overrides the top level.

    The environment is ``environment`` if given, else the file's own
    ``environment`` setting, else PYQUEUE_ENVIRONMENT, else development.
    """
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} does not exist; check the -C path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(file)!r} must hold a mapping of settings")
    environ = os.environ if environ is None else environ
    environment = str(
        environment
        or data.get("environment")
        or environ.get(ENV_PREFIX + "ENVIRONMENT")
        or Settings.environment
    )
    section = data.pop(environment, None)
    for name in ("development", "staging", "production", "test"):
        if name != environment and isinstance(data.get(name), dict):
            data.pop(name)
    if isinstance(section, dict):
        data.update(section)
    return {str(k).lstrip(":"): v for k, v in data.items()}


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in field_names():
        raw = environ.get(env_name(field))
        if raw is not None and raw != "":
            values[field] = raw
    return values


def build(values: Mapping[str, Any]) -> Settings:
    """Validate raw values (strings from the environment, YAML types from a file)."""
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r}; known settings are listed in docs/configuration.md"
        )
    converted: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        if field.name in values:
            converted[field.name] = _convert(field.name, values[field.name])
    settings = Settings(**converted)
    _check(settings)
    return settings


def _convert(name: str, value: Any) -> Any:
    default = getattr(Settings, name, None)
    if name == "queues":
        return parse_queues(value)
    if name in ("labels", "require"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"setting {name} must be a list of strings, got {value!r}")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if isinstance(default, bool):
        return _to_bool(name, value)
    if name in ("poll_interval_average", "metrics_port", "redis_pool_size", "schedule_file"):
        if value in (None, "", "none", "null"):
            return None
        return str(value) if name == "schedule_file" else _to_number(name, value, int_ok=True)
    if isinstance(default, int):
        return int(_to_number(name, value, int_ok=True))
    if isinstance(default, float):
        return float(_to_number(name, value, int_ok=True))
    return str(value)


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"setting {name} must be true or false, got {value!r}")


def _to_number(name: str, value: Any, int_ok: bool) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name} must be a number, got {value!r}") from None
    return int(number) if int_ok and number.is_integer() else number


def parse_queues(value: Any) -> tuple[tuple[str, int], ...]:
    """Read queues as Sidekiq writes them.

    Accepted: ``["critical", "default"]``, ``[["critical", 3], ["default", 1]]``,
    ``["critical,3", "default,1"]`` (the ``-q`` flag form) or, from the
    environment, ``"critical,3 default,1"``.
    """
    items: list[Any]
    if isinstance(value, str):
        items = value.replace(";", " ").split()
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(
            f"setting queues must be a list of names or [name, weight] pairs, got {value!r}"
        )
    queues = [_parse_queue(item) for item in items]
    if not queues:
        raise ConfigError("setting queues is empty; list at least one queue, e.g. [default]")
    return tuple(queues)


def _parse_queue(item: Any) -> tuple[str, int]:
    parts: list[Any]
    if isinstance(item, str):
        head, _, tail = item.partition(",")
        parts = [head, tail] if tail else [head]
    elif isinstance(item, list | tuple):
        parts = list(item)
    else:
        raise ConfigError(f"queue entry {item!r} must be a name or a [name, weight] pair")
    if not parts or len(parts) > 2 or not str(parts[0]).strip():
        raise ConfigError(f"queue entry {item!r} must be a name or a [name, weight] pair")
    name = str(parts[0]).strip()
    weight: int
    try:
        weight = int(parts[1]) if len(parts) == 2 else 0
    except (TypeError, ValueError):
        raise ConfigError(
            f"queue {name!r} has weight {parts[1]!r}; a weight is a whole number"
        ) from None
    if weight < 0:
        raise ConfigError(f"queue {name!r} has weight {weight}; a weight must be 0 or more")
    return name, weight


def _check(settings: Settings) -> None:
    for name, choices in _CHOICES.items():
        value = getattr(settings, name)
        if value not in choices:
            raise ConfigError(f"setting {name} is {value!r}; choose one of {', '.join(choices)}")
    for name in _POSITIVE:
        if getattr(settings, name) <= 0:
            raise ConfigError(
                f"setting {name} must be greater than 0, got {getattr(settings, name)!r}"
            )
    if settings.max_recoveries < 0:
        raise ConfigError(
            f"setting max_recoveries must be 0 or more, got {settings.max_recoveries!r}"
        )
    if settings.metrics_port is not None and not 0 < settings.metrics_port < 65536:
        raise ConfigError(f"setting metrics_port must be a TCP port, got {settings.metrics_port!r}")
