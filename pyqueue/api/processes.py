"""Worker processes and the jobs they run, as their heartbeats last wrote them.

Every process (pyqueue or Ruby) adds its identity to ``processes`` and
refreshes a hash of the same name every few seconds with a 60 s TTL; its
running jobs are in ``<identity>:work`` (``<identity>:workers`` for Sidekiq
6.4.1). An identity whose hash has expired belongs to a process that died
without cleaning up; list views skip it and ``cleanup`` removes it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import redis
from redis.exceptions import ResponseError

from pyqueue import keys
from pyqueue.api.base import (
    HASH,
    SET,
    NotFound,
    connection,
    is_wrong_type,
    key_type_error,
    read_int,
    text,
    wrong_type_message,
)
from pyqueue.api.records import JobRecord, json_type, parse_json, read_job
from pyqueue.payload import dumps
from pyqueue.scheduled import cleanup_processes

PROCESS_FIELDS = ("info", "busy", "beat", "quiet", "rss", "rtt_us", "concurrency")
QUIET = "TSTP"
STOP = "TERM"


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """One live process: ``info`` fields from its start plus the figures of its last beat.

    ``beat`` and ``started_at`` are epoch seconds; ``rss_kb`` is kilobytes.
    ``info`` is the decoded info JSON, or None when it is unreadable.
    """

    identity: str
    hostname: str | None
    pid: int | None
    tag: str | None
    labels: tuple[str, ...]
    queues: tuple[str, ...]
    concurrency: int
    busy: int
    beat: float | None
    quiet: bool
    rss_kb: int | None
    rtt_us: int | None
    started_at: float | None
    version: str | None
    embedded: bool
    info: dict[str, Any] | None
    problems: tuple[str, ...]

    @property
    def stopping(self) -> bool:
        """True once the process is quiet: it fetches no new jobs."""
        return self.quiet


@dataclasses.dataclass(frozen=True)
class WorkRecord:
    """One job running in a process thread; ``run_at`` is its start in epoch seconds."""

    process: str
    tid: str
    queue: str | None
    run_at: float | None
    job: JobRecord
    problems: tuple[str, ...]


class ProcessSet:
    """The registered processes (``Sidekiq::ProcessSet``)."""

    def __init__(self, redis: redis.Redis | None = None) -> None:
        self.redis = connection(redis)

    def identities(self) -> list[str]:
        """Return the sorted members of ``processes``; raise KeyTypeError if it is no set."""
        try:
            return sorted(str(m) for m in self.redis.sscan_iter(keys.PROCESSES, count=1000))
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise key_type_error(self.redis, keys.PROCESSES, SET) from None
            raise

    def size(self) -> int:
        """Return the number of registered identities, expired ones included (as Sidekiq)."""
        try:
            return int(self.redis.scard(keys.PROCESSES))
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise key_type_error(self.redis, keys.PROCESSES, SET) from None
            raise

    def all(self) -> list[ProcessRecord]:
        """Return the live processes sorted by identity; raises only KeyTypeError for the set.

        An identity whose hash has no ``info`` (expired) is skipped; a hash
        with unreadable ``info`` or of the wrong type is listed and flagged.
        NOTE: unlike the queue and set pages, this raises UnicodeDecodeError
        for a hash that is not valid UTF-8 unless the connection tolerates it.
        """
        identities = self.identities()
        pipe = self.redis.pipeline(transaction=False)
        for identity in identities:
            pipe.hmget(identity, PROCESS_FIELDS)
        replies = pipe.execute(raise_on_error=False)
        records = []
        for identity, reply in zip(identities, replies, strict=True):
            if is_wrong_type(reply):
                records.append(_wrong_type_process(identity, self.redis))
            elif reply[0] is not None:
                records.append(read_process(identity, [text(value) for value in reply]))
        return records

    def get(self, identity: str) -> ProcessRecord:
        """Return the live process ``identity``; raise NotFound unless it is registered."""
        for record in self.all():
            if record.identity == identity:
                return record
        raise NotFound(
            f"no live process {identity!r} in {keys.PROCESSES}; "
            "list them with `pyqueue processes` and copy the identity"
        )

    def quiet(self, identity: str) -> None:
        """Ask a process to stop fetching jobs (TSTP); raise NotFound if it is not live."""
        self._signal(identity, QUIET)

    def stop(self, identity: str) -> None:
        """Ask a process to finish its running jobs and exit (TERM); raise NotFound if not live."""
        self._signal(identity, STOP)

    def cleanup(self) -> int:
        """Remove identities whose hash has expired; return how many were removed.

        It first takes Sidekiq's ``process_cleanup`` lock (NX, 60 s), so at
        most one cleanup runs per minute across Ruby and pyqueue processes.
        While another holder has the lock, it returns 0.
        """
        return cleanup_processes(self.redis)

    def total_concurrency(self) -> int:
        return sum(record.concurrency for record in self.all())

    def total_rss(self) -> int:
        """Return the summed RSS of all live processes in kilobytes."""
        return sum(record.rss_kb or 0 for record in self.all())

    def _signal(self, identity: str, signal: str) -> None:
        self.get(identity)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(keys.signals(identity), signal)
        pipe.expire(keys.signals(identity), keys.PROCESS_TTL)
        pipe.execute()


class Workers:
    """The jobs running right now in every live process (``Sidekiq::Workers``).

    Accurate to the last heartbeat of each process (every 10 s in pyqueue
    and Sidekiq 7, every 5 s in Sidekiq 6).
    """

    def __init__(self, redis: redis.Redis | None = None) -> None:
        self.redis = connection(redis)

    def all(self) -> list[WorkRecord]:
        """Return every running job, oldest start first; only KeyTypeError for ``processes``."""
        identities = ProcessSet(self.redis).identities()
        pipe = self.redis.pipeline(transaction=False)
        for identity in identities:
            pipe.exists(identity)
            pipe.hgetall(keys.work(identity))
            pipe.hgetall(keys.legacy_workers(identity))
        replies = pipe.execute(raise_on_error=False)
        records: list[WorkRecord] = []
        for index, identity in enumerate(identities):
            alive, work, legacy = replies[3 * index : 3 * index + 3]
            if not alive:
                continue
            records.extend(self._read_hash(identity, work, legacy))
        return sorted(records, key=lambda record: record.run_at or 0.0)

    def size(self) -> int:
        return len(self.all())

    def find_work(self, jid: str) -> WorkRecord | None:
        """Return the running job with ``jid``, or None."""
        for record in self.all():
            if record.job.jid == jid:
                return record
        return None

    def _read_hash(self, identity: str, work: Any, legacy: Any) -> list[WorkRecord]:
        # Sidekiq 6.4.1 writes only :workers; newer versions and pyqueue write :work.
        chosen, key = (work, keys.work(identity))
        if not _is_filled(work) and _is_filled(legacy):
            chosen, key = (legacy, keys.legacy_workers(identity))
        if is_wrong_type(chosen):
            problem = wrong_type_message(self.redis, key, HASH)
            return [WorkRecord(identity, "", None, None, read_job(""), (problem,))]
        if not isinstance(chosen, dict):
            return []
        return [read_work(identity, str(tid), text(value) or "") for tid, value in chosen.items()]


def read_process(identity: str, values: list[str | None]) -> ProcessRecord:
    """Build a ProcessRecord from the HMGET values of PROCESS_FIELDS; oddities go to problems."""
    problems: list[str] = []
    fields = dict(zip(PROCESS_FIELDS, values, strict=True))
    info = _read_info(fields["info"], problems)
    concurrency = _optional_int(info.get("concurrency"), "info.concurrency", problems)
    # Sidekiq 8.1.2+ writes the concurrency hash field, and it wins over info.
    if fields["concurrency"] is not None:
        concurrency = read_int(fields["concurrency"], "concurrency", problems)
    return ProcessRecord(
        identity=identity,
        hostname=_optional_str(info.get("hostname")),
        pid=_optional_int(info.get("pid"), "info.pid", problems),
        tag=_optional_str(info.get("tag")),
        labels=_strings(info.get("labels")),
        queues=_strings(info.get("queues")),
        concurrency=concurrency or 0,
        busy=read_int(fields["busy"], "busy", problems),
        beat=_optional_float(fields["beat"], "beat", problems),
        quiet=fields["quiet"] == "true",
        rss_kb=_optional_int(fields["rss"], "rss", problems),
        rtt_us=_optional_int(fields["rtt_us"], "rtt_us", problems),
        started_at=_optional_float(info.get("started_at"), "info.started_at", problems),
        version=_optional_str(info.get("version")),
        embedded=info.get("embedded") is True,
        info=info or None,
        problems=tuple(problems),
    )


def read_work(identity: str, tid: str, value: str) -> WorkRecord:
    """Build a WorkRecord from one work-hash entry; oddities go to ``problems``.

    The entry is ``{"queue", "payload", "run_at"}`` where ``payload`` is the
    raw job JSON as a string (Sidekiq 7+ and pyqueue) or an object.
    """
    problems: list[str] = []
    entry, error = parse_json(value)
    if error is not None:
        problems.append(f"work entry is not valid JSON ({error})")
    if entry is not None and not isinstance(entry, dict):
        problems.append(f"work entry is a JSON {json_type(entry)}, not an object")
        entry = None
    entry = entry or {}
    payload = entry.get("payload")
    if isinstance(payload, dict):
        payload = dumps(payload)
    elif not isinstance(payload, str) and not problems:
        problems.append(f"work entry payload is {json_type(payload)}, not a job")
    job = read_job(payload if isinstance(payload, str) else "", in_queue=True)
    return WorkRecord(
        process=identity,
        tid=tid,
        queue=_optional_str(entry.get("queue")),
        run_at=_optional_float(entry.get("run_at"), "run_at", problems),
        job=job,
        problems=tuple(problems),
    )


def _read_info(raw: str | None, problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    info, error = parse_json(raw)
    if error is not None:
        problems.append(f"info is not valid JSON ({error}); Sidekiq's Busy page fails on it")
        return {}
    if not isinstance(info, dict):
        problems.append(f"info is a JSON {json_type(info)}, not an object")
        return {}
    return info


def _wrong_type_process(identity: str, conn: redis.Redis) -> ProcessRecord:
    empty = read_process(identity, [None] * len(PROCESS_FIELDS))
    return dataclasses.replace(empty, problems=(wrong_type_message(conn, identity, HASH),))


def _is_filled(reply: Any) -> bool:
    return isinstance(reply, dict) and bool(reply)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value)


def _optional_int(value: Any, name: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return read_int(value, name, problems)
    problems.append(f"{name} is {json_type(value)}, not an integer")
    return None


def _optional_float(value: Any, name: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = math.nan
        if math.isfinite(number):
            return number
    problems.append(f"{name} is {value!r}, not a number")
    return None
