"""sidekiq-cron's Redis records: job hashes, their index set, enqueue and history.

The cron poller, the schedule-file loader, the dashboard and the CLI all read
and write cron jobs through CronStore, so that a Ruby process running
sidekiq-cron (and its Web UI tab) reads the same jobs.

Layouts, chosen by the ``cron_layout`` setting (one store never writes both,
because each layout has its own enqueue markers and mixing them would enqueue
a tick twice):

- ``v1`` (sidekiq-cron 1.x): SET ``cron_jobs`` of hash keys, HASH
  ``cron_job:<name>``, booleans ``"true"``/``"false"``.
- ``v2`` (sidekiq-cron 2.x): SET ``cron_jobs:<ns>``, HASH
  ``cron_job:<ns>:<name>``, booleans ``"1"``/``"0"`` and the fields
  ``namespace``, ``retry`` and ``source``.

Every hash value is a string; None is written as ``""``, as Ruby's client does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

import redis

from pyqueue import keys
from pyqueue.client import Client
from pyqueue.config import Settings
from pyqueue.cron_job import (
    STATUSES,
    CronJob,
    CronJobError,
    CronJobNotFound,
    active_job_item,
    decode_job,
)
from pyqueue.cron_schedule import CronLineError, format_ruby_time, format_tick, parse_line
from pyqueue.payload import dumps, loads

logger = logging.getLogger(__name__)


class CronStore:
    """Store of cron jobs in the layout that ``settings.cron_layout`` names.

    ``client`` pushes the jobs (default: a Client on ``redis``); ``clock``
    returns epoch seconds and is injected by tests.
    """

    def __init__(
        self,
        redis: redis.Redis,
        settings: Settings,
        *,
        client: Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.namespace = settings.cron_namespace if settings.cron_layout == "v2" else None
        self.client = client or Client(redis=redis, timestamp_mode=settings.timestamp_mode)
        self.clock = clock

    @property
    def index_key(self) -> str:
        return keys.cron_index(self.namespace)

    def hash_key(self, name: str) -> str:
        return keys.cron_job(name, self.namespace)

    def enqueued_key(self, name: str) -> str:
        """Return the ZSET of ticks already enqueued, the lock shared with Ruby."""
        return self.hash_key(name) + ":enqueued"

    def history_key(self, name: str) -> str:
        return self.hash_key(name) + ":jid_history"

    def all(self) -> list[CronJob]:
        """Return every job in the index, sorted by name; members without a hash are skipped."""
        members = sorted(self.redis.smembers(self.index_key))
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(member)
        now = self.clock()
        return sorted(
            (self._with_next_run(decode_job(fields), now) for fields in pipe.execute() if fields),
            key=lambda job: job.name,
        )

    def get(self, name: str) -> CronJob | None:
        """Return the job called ``name``, or None when there is none."""
        fields = self.redis.hgetall(self.hash_key(name))
        return self._with_next_run(decode_job(fields), self.clock()) if fields else None

    def require(self, name: str) -> CronJob:
        """Return the job called ``name``; raise CronJobNotFound when there is none."""
        job = self.get(name)
        if job is None:
            raise CronJobNotFound(
                f"no cron job is named {name!r} in {self.index_key}; "
                "list the names with: pyqueue cron list"
            )
        return job

    def history(self, name: str) -> list[dict[str, Any]]:
        """Return the latest enqueues of a job, newest first: ``{"jid", "enqueued"}`` entries."""
        entries = []
        for raw in self.redis.lrange(self.history_key(name), 0, -1):
            try:
                entry = loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def validate(self, job: CronJob) -> None:
        """Raise CronJobError when sidekiq-cron would reject the job or pyqueue cannot run it."""
        if not job.name:
            raise CronJobError("a cron job needs a non-empty name")
        if not job.klass:
            raise CronJobError(f"cron job {job.name!r} needs a class, e.g. class: ReportJob")
        if job.status not in STATUSES:
            raise CronJobError(
                f"cron job {job.name!r} has status {job.status!r}; use enabled or disabled"
            )
        if self.namespace is not None and self.namespace in ("", "*"):
            raise CronJobError(
                f"cron_namespace {self.namespace!r} is invalid for layout v2; use e.g. default"
            )
        try:
            parse_line(job.cron, self.settings.cron_timezone)
        except CronLineError as exc:
            raise CronJobError(f"cron job {job.name!r}: {exc}") from None

    def save(self, job: CronJob, *, keep: Collection[str] = ()) -> None:
        """Create or replace a job, as sidekiq-cron's ``Job#save`` does.

        Fields named in ``keep`` (``status``, ``last_enqueue_time``) are
        written only when the hash lacks them, so that reloading a schedule
        file leaves a job disabled in a Web UI disabled. A job whose enqueue
        marker does not exist yet gets the current tick, so that it does not
        fire for a tick that passed before it was saved. Raises CronJobError
        for an invalid job.
        """
        self.validate(job)
        fields = self.encode(job)
        written_if_missing = {field: fields.pop(field) for field in keep if field in fields}
        key = self.hash_key(job.name)
        mapping: dict[Any, Any] = fields
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.index_key, key)
        pipe.hset(key, mapping=mapping)
        for field, value in written_if_missing.items():
            pipe.hsetnx(key, field, value)
        pipe.execute()
        self._mark_current_tick(job)
        logger.info("cron job saved name=%s class=%s queue=%s", job.name, job.klass, job.queue)

    def _mark_current_tick(self, job: CronJob) -> None:
        enqueued_key = self.enqueued_key(job.name)
        if self.redis.exists(enqueued_key):
            return
        now = self.clock()
        tick = parse_line(job.cron, self.settings.cron_timezone).last_tick(now)
        if tick is not None:
            # The score is the save time, as sidekiq-cron writes it; only the member is compared.
            self.redis.zadd(enqueued_key, {format_tick(tick): now})

    def encode(self, job: CronJob) -> dict[str, str]:
        """Return the hash fields of ``job``, in sidekiq-cron 1.8's order, for this layout."""
        flag = _flag_v2 if self.namespace is not None else _flag_v1
        fields = {
            "name": job.name,
            "klass": job.klass,
            "cron": job.cron,
            "description": job.description,
            "args": dumps(list(job.args)),
            "date_as_argument": flag(job.date_as_argument),
            "message": dumps(job.payload_template()),
            "status": job.status,
            "active_job": flag(job.active_job),
            "queue_name_prefix": job.queue_name_prefix,
            "queue_name_delimiter": job.queue_name_delimiter,
            "last_enqueue_time": job.last_enqueue_time,
            "symbolize_args": flag(job.symbolize_args),
        }
        if self.namespace is not None:
            fields["namespace"] = self.namespace
            fields["retry"] = "" if job.retry is None else dumps(job.retry)
            # sidekiq-cron 2.x removes "schedule" jobs missing from its own
            # schedule file at startup; "dynamic" keeps pyqueue's jobs alive.
            fields["source"] = job.source or "dynamic"
        return fields

    def destroy(self, name: str) -> None:
        """Delete a job, its enqueue markers and its history; raise CronJobNotFound if absent."""
        key = self.hash_key(name)
        if not self.redis.exists(key):
            self.require(name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(self.index_key, key)
        pipe.delete(self.enqueued_key(name), self.history_key(name), key)
        pipe.execute()
        logger.info("cron job deleted name=%s", name)

    def enable(self, name: str) -> None:
        """Set a job's status to enabled; raise CronJobNotFound if absent."""
        self._set_status(name, "enabled")

    def disable(self, name: str) -> None:
        """Set a job's status to disabled; raise CronJobNotFound if absent."""
        self._set_status(name, "disabled")

    def _set_status(self, name: str, status: str) -> None:
        self.require(name)
        # Writing only this field is enough for every sidekiq-cron version.
        self.redis.hset(self.hash_key(name), "status", status)
        logger.info("cron job %s name=%s", status, name)

    def enqueue_now(self, name: str) -> str:
        """Push a job once now, whatever its schedule and status; return the jid.

        Like the Web UI's "Enqueue now", this does not touch the enqueue markers.
        """
        jid = self.enqueue(self.require(name), self.clock())
        return jid or ""

    def enqueue(self, job: CronJob, now: float) -> str | None:
        """Push one run of ``job`` and record it; return the jid (None on a middleware veto).

        Records what sidekiq-cron records: ``last_enqueue_time`` and a
        ``jid_history`` entry, trimmed to ``cron_history_size`` entries.
        """
        args = [*job.args, now] if job.date_as_argument else list(job.args)
        if job.active_job:
            item = active_job_item(job, args)
        else:
            item = job.payload_template()
            item["args"] = args
            # A stored jid or timestamp would be reused by every run.
            for field in ("jid", "created_at", "enqueued_at"):
                item.pop(field, None)
        jid = self.client.push(item)
        stamp = format_ruby_time(now)
        # sidekiq-cron 2.x shows Ruby's Time#to_s in the history, 1.x its own format.
        history_time = stamp if self.namespace is None else _utc_text(now)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.hash_key(job.name), "last_enqueue_time", stamp)
        pipe.lpush(self.history_key(job.name), dumps({"jid": jid, "enqueued": history_time}))
        pipe.ltrim(self.history_key(job.name), 0, self.settings.cron_history_size - 1)
        pipe.execute()
        return jid

    def _with_next_run(self, job: CronJob, now: float) -> CronJob:
        try:
            line = parse_line(job.cron, self.settings.cron_timezone)
        except CronLineError:
            return job
        return dataclasses.replace(job, next_run=line.next_run(now))


def _flag_v1(value: bool) -> str:
    return "true" if value else "false"


def _flag_v2(value: bool) -> str:
    return "1" if value else "0"


def _utc_text(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
