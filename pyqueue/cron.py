"""Recurring jobs compatible with sidekiq-cron: the schedule file and the public API.

The launcher calls ``load_schedule_file`` at start when ``schedule_file`` is
set, then runs a CronPoller in every process. The dashboard and the CLI use
CronStore. This module re-exports what callers need from the parts: cron
lines and zones (pyqueue.cron_schedule), the job record (pyqueue.cron_job),
the Redis store (pyqueue.cron_store) and the poller (pyqueue.cron_poller).

Schedule file: sidekiq-cron's YAML, either a mapping of names to entries or a
list of entries with a ``name`` key::

    daily_report:
      cron: "0 9 * * * America/New_York"
      class: ReportJob
      queue: reports
      args: [1, "two"]

Loading saves every entry and removes the jobs that an earlier load saved but
the file no longer lists. Their names are kept in ``pyqueue:cron:loaded``, so
jobs created by Ruby or at runtime are never removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
import yaml

from pyqueue import keys
from pyqueue.config import Settings
from pyqueue.cron_job import CronJob, CronJobError, CronJobNotFound, read_args, read_bool
from pyqueue.cron_poller import CronPoller
from pyqueue.cron_schedule import CronLine, CronLineError, parse_line
from pyqueue.cron_store import CronStore
from pyqueue.errors import ArgumentError, ConfigError, UnknownJobClass
from pyqueue.job import lookup
from pyqueue.payload import check_args

__all__ = [
    "CronJob",
    "CronJobError",
    "CronJobNotFound",
    "CronLine",
    "CronLineError",
    "CronPoller",
    "CronStore",
    "job_from_entry",
    "load_schedule",
    "load_schedule_file",
    "parse_line",
    "read_schedule_file",
]

logger = logging.getLogger(__name__)

# Entry keys that go into the pushed job as they are.
PAYLOAD_OPTIONS = ("backtrace", "dead", "retry_queue", "tags", "retry_for")
ENTRY_KEYS = frozenset(
    {
        "name",
        "cron",
        "class",
        "klass",
        "queue",
        "args",
        "description",
        "status",
        "retry",
        "date_as_argument",
        "active_job",
        "symbolize_args",
        "queue_name_prefix",
        "queue_name_delimiter",
        "last_enqueue_time",
        *PAYLOAD_OPTIONS,
    }
)
# Saved only when the file sets them; otherwise Redis keeps its values.
STATE_FIELDS = ("status", "last_enqueue_time")


def load_schedule_file(
    redis: redis.Redis,
    settings: Settings,
    path: str | Path,
    *,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Load a sidekiq-cron schedule file into Redis; return the names of the jobs loaded.

    Every entry is checked before anything is written, so an invalid file
    changes nothing. Raises ConfigError naming the file and the entry.
    ``clock`` (epoch seconds) dates the enqueue markers of new jobs.
    """
    jobs = read_schedule_file(path)
    return load_schedule(redis, settings, jobs, source=str(path), clock=clock)


def load_schedule(
    redis: redis.Redis,
    settings: Settings,
    jobs: list[tuple[CronJob, frozenset[str]]],
    *,
    source: str = "schedule",
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Save ``jobs`` (each with the state fields its entry sets) and remove dropped ones."""
    store = CronStore(redis, settings, clock=clock)
    for job, _ in jobs:
        try:
            store.validate(job)
        except CronJobError as exc:
            raise ConfigError(f"schedule {source}: {exc}") from None
    for job, state_fields in jobs:
        store.save(job, keep=[field for field in STATE_FIELDS if field not in state_fields])
    names = [job.name for job, _ in jobs]
    removed = _remove_dropped(redis, store, names)
    logger.info(
        "cron schedule loaded source=%s jobs=%d removed=%d", source, len(names), len(removed)
    )
    return names


def _remove_dropped(redis: redis.Redis, store: CronStore, names: list[str]) -> list[str]:
    """Delete the jobs an earlier load saved that ``names`` no longer lists."""
    previous = {str(name) for name in redis.smembers(keys.CRON_LOADED)}
    removed = sorted(previous - set(names))
    for name in removed:
        if store.get(name) is not None:
            store.destroy(name)
    pipe = redis.pipeline(transaction=True)
    pipe.delete(keys.CRON_LOADED)
    if names:
        pipe.sadd(keys.CRON_LOADED, *names)
    pipe.execute()
    return removed


def read_schedule_file(path: str | Path) -> list[tuple[CronJob, frozenset[str]]]:
    """Read a schedule file; return each job with the state fields its entry sets.

    Raises ConfigError when the file is missing, is not YAML, or an entry is invalid.
    """
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"schedule file {str(file)!r} does not exist; check schedule_file or --schedule"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"schedule file {str(file)!r} is not valid YAML: {exc}") from None
    return [job_from_entry(name, entry, str(file)) for name, entry in _entries(data, str(file))]


def _entries(data: Any, source: str) -> list[tuple[str, Any]]:
    if data is None:
        return []
    if isinstance(data, Mapping):
        return [(str(name), entry) for name, entry in data.items()]
    if isinstance(data, list):
        entries = []
        for index, entry in enumerate(data):
            if not isinstance(entry, Mapping) or not entry.get("name"):
                raise ConfigError(
                    f"schedule {source}: entry {index} of the list needs a name, "
                    "e.g. - {name: daily_report, cron: '0 9 * * *', class: ReportJob}"
                )
            entries.append((str(entry["name"]), entry))
        return entries
    raise ConfigError(
        f"schedule {source} must be a mapping of job names to entries or a list of entries, "
        f"got {type(data).__name__}"
    )


def job_from_entry(
    name: str, entry: Any, source: str = "schedule"
) -> tuple[CronJob, frozenset[str]]:
    """Build a job from one schedule entry; return it with the state fields the entry sets.

    A class registered in pyqueue lends its options (queue, retry and the
    other payload options) to fields the entry leaves out, as sidekiq-cron
    does with a Ruby class. Raises ConfigError naming the entry.
    """
    where = f"schedule {source}, job {name!r}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: an entry must be a mapping with cron and class")
    unknown = sorted(str(key) for key in entry if key not in ENTRY_KEYS)
    if unknown:
        logger.warning("%s: ignoring unknown keys %s", where, ", ".join(unknown))
    klass = str(entry.get("class") or entry.get("klass") or "")
    if not entry.get("cron") or not klass:
        raise ConfigError(f"{where}: both cron and class are required")
    options = _class_options(klass)
    options.update(
        {key: entry[key] for key in (*PAYLOAD_OPTIONS, "queue", "retry") if key in entry}
    )
    retry = options.pop("retry", True)
    if not isinstance(retry, bool | int):
        raise ConfigError(f"{where}: retry must be true, false or a whole number, got {retry!r}")
    args = _entry_args(entry.get("args"), where)
    state_fields = frozenset(field for field in STATE_FIELDS if entry.get(field) not in (None, ""))
    job = CronJob(
        name=name,
        cron=str(entry["cron"]),
        klass=klass,
        queue=str(options.pop("queue", None) or "default"),
        args=args,
        description=str(entry.get("description") or ""),
        status=str(entry.get("status") or "enabled"),
        retry=retry,
        date_as_argument=read_bool(entry.get("date_as_argument")),
        active_job=read_bool(entry.get("active_job")),
        symbolize_args=read_bool(entry.get("symbolize_args")),
        queue_name_prefix=str(entry.get("queue_name_prefix") or ""),
        queue_name_delimiter=str(entry.get("queue_name_delimiter") or ""),
        message=options,
        last_enqueue_time=str(entry.get("last_enqueue_time") or ""),
    )
    return job, state_fields


def _class_options(klass: str) -> dict[str, Any]:
    try:
        return dict(lookup(klass).job_options())
    except UnknownJobClass:
        # A job that only another process (or Ruby) defines: the entry sets every option.
        return {}


def _entry_args(value: Any, where: str) -> list[Any]:
    """Read ``args`` as sidekiq-cron does: a list, or one value wrapped in a list."""
    if value is None:
        return []
    args = read_args(value) if isinstance(value, str) else value
    if not isinstance(args, list):
        args = [args]
    try:
        check_args(args)
    except ArgumentError as exc:
        raise ConfigError(f"{where}: args cannot be stored as JSON: {exc}") from None
    return args
