"""A sidekiq-cron job as a record: the fields of its Redis hash, read leniently.

sidekiq-cron 1.8, 1.9+ and 2.x spell booleans, arguments and times
differently; decode_job reads all of them. CronStore (pyqueue.cron_store)
writes them back in the layout the settings name.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

from pyqueue.cron_schedule import parse_ruby_time
from pyqueue.errors import PyQueueError
from pyqueue.payload import loads

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
STATUSES = ("enabled", "disabled")
ACTIVE_JOB_WRAPPER = "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
# Hash fields that CronJob reads; any other field is kept in CronJob.extra.
KNOWN_FIELDS = frozenset(
    {
        "name",
        "klass",
        "class",
        "cron",
        "description",
        "args",
        "message",
        "status",
        "active_job",
        "symbolize_args",
        "date_as_argument",
        "queue_name_prefix",
        "queue_name_delimiter",
        "last_enqueue_time",
        "source",
        "namespace",
        "retry",
    }
)


class CronJobError(PyQueueError, ValueError):
    """Raised when a cron job definition is invalid; the message names the job and field."""


class CronJobNotFound(PyQueueError):
    """Raised when no cron job has the requested name."""


@dataclasses.dataclass(frozen=True)
class CronJob:
    """One sidekiq-cron job: the fields of its hash, plus its last and next run.

    ``retry`` None leaves ``retry`` out of the message, so the worker's default
    applies. ``message`` is the stored message template; ``queue``, ``klass``,
    ``args`` and ``retry`` override its fields when the job is saved.
    ``last_run`` is ``last_enqueue_time`` read as epoch seconds (None when
    empty or unreadable) and ``next_run`` the next tick after the read, both
    epoch seconds. ``extra`` contains the hash fields this version does not know.
    """

    name: str
    cron: str
    klass: str
    queue: str = "default"
    args: list[Any] = dataclasses.field(default_factory=list)
    description: str = ""
    status: str = "enabled"
    retry: bool | int | None = True
    date_as_argument: bool = False
    active_job: bool = False
    symbolize_args: bool = False
    queue_name_prefix: str = ""
    queue_name_delimiter: str = ""
    message: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_enqueue_time: str = ""
    source: str = ""
    last_run: float | None = None
    next_run: float | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"

    def payload_template(self) -> dict[str, Any]:
        """Return the message stored for Ruby: the job hash pushed on each tick.

        A new message lists its fields in sidekiq-cron's order (retry, queue,
        other options, class, args); an existing one keeps its order and its
        other fields.
        """
        message: dict[str, Any] = {}
        if self.retry is not None:
            message["retry"] = self.retry
        message["queue"] = self.queue
        message.update(self.message)
        if self.retry is not None:
            message["retry"] = self.retry
        message["queue"] = self.queue
        message["class"] = self.klass
        message["args"] = list(self.args)
        return message


def read_bool(value: Any) -> bool:
    """Read a boolean as sidekiq-cron does: true, t, yes, y or 1 in any case."""
    return value is True or str(value).strip().lower() in TRUE_WORDS


def read_args(raw: str | None) -> list[Any]:
    """Read the ``args`` field: a JSON array; an object or a scalar becomes a one-item list."""
    if raw is None or raw == "":
        return []
    try:
        value = loads(raw)
    except ValueError:
        # sidekiq-cron passes an unparsable string on as the only argument.
        return [raw]
    return value if isinstance(value, list) else [value]


def decode_job(raw: Mapping[Any, Any]) -> CronJob:
    """Build a CronJob from a hash as any sidekiq-cron version or pyqueue wrote it."""
    fields = {_text(key): _text(value) for key, value in raw.items()}
    message = _read_message(fields.get("message"))
    retry = message.get("retry")
    return CronJob(
        name=fields.get("name", ""),
        cron=fields.get("cron", ""),
        klass=fields.get("klass") or fields.get("class") or str(message.get("class") or ""),
        queue=str(message.get("queue") or "default"),
        args=read_args(fields.get("args")),
        description=fields.get("description", ""),
        status=fields.get("status") or "enabled",
        retry=retry if isinstance(retry, bool | int) else None,
        date_as_argument=read_bool(fields.get("date_as_argument")),
        active_job=read_bool(fields.get("active_job")),
        symbolize_args=read_bool(fields.get("symbolize_args")),
        queue_name_prefix=fields.get("queue_name_prefix", ""),
        queue_name_delimiter=fields.get("queue_name_delimiter", ""),
        message=message,
        last_enqueue_time=fields.get("last_enqueue_time", ""),
        source=fields.get("source", ""),
        last_run=parse_ruby_time(fields.get("last_enqueue_time")),
        extra={key: value for key, value in fields.items() if key not in KNOWN_FIELDS},
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_message(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def active_job_item(job: CronJob, args: list[Any]) -> dict[str, Any]:
    """Return the ActiveJob wrapper that sidekiq-cron pushes for a job Ruby runs via ActiveJob."""
    queue = job.queue
    if job.queue_name_prefix:
        queue = f"{job.queue_name_prefix}{job.queue_name_delimiter or '_'}{job.queue}"
    return {
        "class": ACTIVE_JOB_WRAPPER,
        "wrapped": job.klass,
        "queue": queue,
        "description": job.description,
        "args": [
            {
                "job_class": job.klass,
                "job_id": str(uuid.uuid4()),
                "queue_name": queue,
                "arguments": args,
            }
        ],
    }
