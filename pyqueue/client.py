"""Pushing jobs: immediate, scheduled and bulk, as ``Sidekiq::Client`` does.

An immediate push is one pipelined round trip, ``SADD queues <q>`` then
``LPUSH queue:<q> <json>``. A push with ``at`` is a ``ZADD schedule`` whose
member has neither ``at`` nor ``enqueued_at``: the scheduled poller re-pushes
the member through this client, and an ``at`` left inside would send it
straight back to ``schedule``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from pyqueue import keys
from pyqueue.connection import create_redis, send_commands
from pyqueue.errors import ArgumentError
from pyqueue.middleware import ClientChain
from pyqueue.payload import Payload, check_args, dumps, new_jid, timestamp

BULK_BATCH_SIZE = 1000
RETRY_FOR_LIMIT = 1_000_000_000

# Option fields copied from a job class into each payload, in Sidekiq's order.
OPTION_FIELDS = ("retry", "queue", "backtrace", "retry_queue", "dead", "tags", "retry_for")

PushHook = Callable[[list[Payload]], None]
# Set by pyqueue.testing: while a fake or inline mode is on, normalized
# payloads go to the hook instead of Redis.
_push_hook: PushHook | None = None


class Client:
    """Writes jobs to Redis in Sidekiq 7's format.

    ``Client(url)`` connects lazily from a Redis URL (default ``REDIS_URL``);
    ``Client(redis=conn)`` reuses a connection. ``middleware`` is the client
    chain that may edit or veto each payload.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        redis: redis.Redis | None = None,
        middleware: ClientChain | None = None,
        timestamp_mode: str = "float_seconds",
    ) -> None:
        self._url = url
        self._redis = redis
        self._owns_redis = redis is None
        self._lock = threading.Lock()
        self.middleware = middleware if middleware is not None else ClientChain()
        self.timestamp_mode = timestamp_mode

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = create_redis(self._url)
        return self._redis

    def close(self) -> None:
        """Close the connections this client opened (a passed-in connection stays open)."""
        with self._lock:
            if self._redis is not None and self._owns_redis:
                self._redis.close()
                self._redis.connection_pool.disconnect()
                self._redis = None

    def push(self, item: dict[str, Any]) -> str | None:
        """Push one job; return its jid, or None when middleware vetoed it.

        ``item`` is a Sidekiq job hash: ``class`` (a name or a Job class),
        ``args`` (a list), and optionally ``queue``, ``retry``, ``jid``, ``at``
        (epoch seconds) and any other field, which is kept as is.
        """
        normalized = normalize(item, self.timestamp_mode)
        at = normalized.pop("at", None)
        payload = self._run_middleware(normalized)
        if payload is None:
            return None
        if at is None:
            self._push_now([payload])
        else:
            self._push_scheduled([(float(at), payload)])
        return str(payload["jid"])

    def push_bulk(self, item: dict[str, Any]) -> list[str | None]:
        """Push one job per entry of ``item["args"]`` (a list of argument lists).

        ``at`` may be one time or a list as long as ``args``. Jobs are written
        in pipelined batches of ``batch_size`` (default 1,000). The result has
        one entry per input job: its jid, or None where middleware vetoed it.
        """
        # "args" stays in the template, so that it keeps its place in the key
        # order of each job, as in Sidekiq's push_bulk.
        template = dict(item)
        all_args = template.get("args")
        if not isinstance(all_args, list) or not all(isinstance(a, list) for a in all_args):
            raise ArgumentError("push_bulk needs args as a list of argument lists, e.g. [[1], [2]]")
        at_values = _bulk_times(template.pop("at", None), len(all_args))
        if "jid" in template and len(all_args) > 1:
            raise ArgumentError("push_bulk cannot take an explicit jid for more than one job")
        batch_size = int(template.pop("batch_size", BULK_BATCH_SIZE))

        created_at = timestamp(self.timestamp_mode)
        jids: list[str | None] = []
        for start in range(0, len(all_args), batch_size):
            batch = all_args[start : start + batch_size]
            times = at_values[start : start + batch_size] if at_values else None
            jids.extend(self._push_batch(template, batch, times, created_at))
        return jids

    def _push_batch(
        self,
        template: dict[str, Any],
        batch: list[Any],
        times: list[float] | None,
        created_at: float | int,
    ) -> list[str | None]:
        now_items: list[Payload] = []
        scheduled: list[tuple[float, Payload]] = []
        jids: list[str | None] = []
        # Validated once per batch; each job then differs only in args and jid,
        # which keep their places in the key order.
        base = normalize(dict(template, args=[]), self.timestamp_mode)
        if "created_at" not in template:
            base["created_at"] = created_at
        fixed_jid = "jid" in template
        if times is None and not fixed_jid and not self.middleware.entries and _push_hook is None:
            return list(self._push_from_template(base, batch))
        for index, args in enumerate(batch):
            check_args(args)
            job = dict(base, args=args)
            if not fixed_jid:
                job["jid"] = new_jid()
            payload = self._run_middleware(job)
            if payload is None:
                jids.append(None)
                continue
            jids.append(str(payload["jid"]))
            if times is None:
                now_items.append(payload)
            else:
                scheduled.append((times[index], payload))
        if now_items:
            self._push_now(now_items)
        if scheduled:
            self._push_scheduled(scheduled)
        return jids

    def _push_from_template(self, base: Payload, batch: list[Any]) -> list[str]:
        """Push jobs that differ from ``base`` only in args and jid; return their jids.

        Encoding each job hash cost most of push_bulk's time. With no
        middleware to change a job, every job encodes as the same text
        around its args and its jid, so the text is encoded once and each
        job's args are encoded alone. The result is byte for byte what
        encoding each job would give.
        """
        for args in batch:
            check_args(args)
        marker = new_jid()
        template = dict(base, args=f"args-{marker}", jid=f"jid-{marker}")
        template["enqueued_at"] = timestamp(self.timestamp_mode)
        head, args_marker, middle, _, tail = re.split(
            f'("args-{marker}"|"jid-{marker}")', dumps(template)
        )
        jids = [new_jid() for _ in batch]
        jobs = zip(batch, jids, strict=True)
        if args_marker == f'"args-{marker}"':
            encoded = [f'{head}{dumps(args)}{middle}"{jid}"{tail}' for args, jid in jobs]
        else:
            # Options put jid before args in this job hash.
            encoded = [f'{head}"{jid}"{middle}{dumps(args)}{tail}' for args, jid in jobs]
        queue = str(base["queue"])
        send_commands(
            self.redis, [["SADD", keys.QUEUES, queue], ["LPUSH", keys.queue(queue), *encoded]]
        )
        return jids

    def _run_middleware(self, payload: Payload) -> Payload | None:
        return self.middleware.invoke(payload, str(payload["queue"]))

    def _push_now(self, payloads: list[Payload]) -> None:
        enqueued_at = timestamp(self.timestamp_mode)
        for payload in payloads:
            payload["enqueued_at"] = enqueued_at
        if _push_hook is not None:
            _push_hook(payloads)
            return
        # Sidekiq 7 sends a batch to the first job's queue; grouping by queue is
        # what Sidekiq 8 does and keeps a mixed batch correct.
        by_queue: dict[str, list[str]] = {}
        for payload in payloads:
            by_queue.setdefault(str(payload["queue"]), []).append(dumps(payload))
        commands: list[list[str]] = [["SADD", keys.QUEUES, *by_queue]]
        for queue, encoded in by_queue.items():
            commands.append(["LPUSH", keys.queue(queue), *encoded])
        send_commands(self.redis, commands)

    def _push_scheduled(self, entries: list[tuple[float, Payload]]) -> None:
        for _, payload in entries:
            payload.pop("enqueued_at", None)
        if _push_hook is not None:
            _push_hook([dict(payload, at=at) for at, payload in entries])
            return
        mapping: dict[str, float] = {dumps(payload): at for at, payload in entries}
        # redis-py sends scores with repr(), which spells them as Ruby's Float#to_s.
        self.redis.zadd(keys.SCHEDULE, mapping)


def normalize(item: dict[str, Any], timestamp_mode: str = "float_seconds") -> Payload:
    """Validate a job hash and fill in Sidekiq's defaults; return a new dict.

    Raises ArgumentError (a TypeError) for a missing class, args that are not
    a list of JSON values, an empty queue name or an invalid ``retry_for``.
    """
    job_class = item.get("class")
    class_name = getattr(job_class, "job_name", job_class)
    if not isinstance(class_name, str) or not class_name:
        raise ArgumentError(
            f"job class must be a non-empty string or a Job subclass, got {job_class!r}"
        )
    args = item.get("args")
    check_args(args)

    payload: Payload = {"retry": True, "queue": "default"}
    options = getattr(job_class, "job_options", None)
    if callable(options):
        payload.update(options())
    # Ruby merges the job hash into the defaults, so the item's own key order
    # follows "retry" and "queue". A re-pushed job therefore keeps its shape.
    for field, value in item.items():
        payload[field] = class_name if field == "class" else value

    _check_queue(payload.get("queue"))
    payload.setdefault("jid", new_jid())
    payload.setdefault("created_at", timestamp(timestamp_mode))
    if payload.get("retry_for") is not None:
        payload["retry_for"] = _check_retry_for(payload["retry_for"])
    return payload


def _check_queue(queue: Any) -> None:
    if not isinstance(queue, str) or not queue:
        raise ArgumentError(f"queue must be a non-empty string, got {queue!r}")


def _check_retry_for(value: Any) -> int:
    seconds = int(value.total_seconds()) if hasattr(value, "total_seconds") else int(value)
    if not 0 < seconds <= RETRY_FOR_LIMIT:
        raise ArgumentError(
            f"retry_for must be a duration in seconds between 1 and 1e9, got {value!r}"
        )
    return seconds


def _bulk_times(at: Any, count: int) -> list[float] | None:
    if at is None:
        return None
    if isinstance(at, Sequence) and not isinstance(at, str):
        if len(at) != count:
            raise ArgumentError(
                f"push_bulk got {len(at)} values for at but {count} jobs; "
                "pass one time or one per job"
            )
        return [float(value) for value in at]
    return [float(at)] * count


def scheduled_time(when: float, now: float | None = None) -> float:
    """Turn a ``perform_in`` / ``perform_at`` value into epoch seconds.

    As in Sidekiq, a value below 1e9 is a delay from now and a larger one is
    already an epoch time.
    """
    current = time.time() if now is None else now
    return current + when if when < 1_000_000_000 else when


_default_client: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """Return the process-wide client used by ``Job.perform_async`` and friends."""
    global _default_client
    if _default_client is None:
        with _default_lock:
            if _default_client is None:
                _default_client = Client()
    return _default_client


def configure_client(client: Client | None) -> None:
    """Replace the process-wide client (None makes the next use build one from REDIS_URL)."""
    global _default_client
    with _default_lock:
        _default_client = client
